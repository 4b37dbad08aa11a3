"""Who may create, narrow and withdraw a Consent: `check_consent_write` (rules 5, 6, 7)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from consent import (
    AccessRequest,
    Action,
    Actor,
    Basis,
    ChildLog,
    ConsentPolicy,
    check_consent_write,
    decide,
)
from tests.consent.builders import (
    CHILD,
    CHILD_CITIZEN,
    DPO,
    FATHER_CITIZEN,
    HEALTH,
    HIDDEN,
    KG_SYSTEM,
    MOTHER,
    MOTHER_CITIZEN,
    NOW,
    NURSE,
    SIGNED_FORM,
    STEP_CITIZEN,
    STEP_FNR,
    STRANGER,
    TEACHER,
    Json,
    born,
    by_fnr,
    consent,
    guardian,
    log,
    org,
    patient,
    ref,
)

POLICY = ConsentPolicy()
ALL_GUARDIANS = ConsentPolicy(guardians_required="all")
STORED = consent("stored")
KG_LOG = log(STORED)
YOUTH_16 = patient(birth_date=born(16, days=-60))
SELF = [ref(f"Patient/{CHILD}")]
BOTH = [ref("RelatedPerson/demo-mother"), ref("RelatedPerson/demo-father")]


def changed(resource: Json, **changes: Any) -> Json:
    """Return a copy of a Consent with top-level elements replaced."""
    new = copy.deepcopy(resource)
    new.update(changes)
    return new


@dataclass(frozen=True)
class Write:
    """One Consent write and the expected answer."""

    id: str
    actor: Actor
    log: ChildLog
    consent: Json
    expect: bool
    basis: Basis
    policy: ConsentPolicy = POLICY
    says: str = ""


WRITES = [
    # professionals record on the family's behalf
    Write(
        "service-without-signed-form",
        TEACHER,
        log(),
        consent("new", form=False),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        says="sourceAttachment",
    ),
    Write(
        "service-with-form-and-guardian",
        TEACHER,
        log(),
        consent("new"),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
    ),
    Write(
        "system-with-form-and-guardian",
        KG_SYSTEM,
        log(),
        consent("new"),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
    ),
    Write(
        "service-form-url-is-enough",
        TEACHER,
        log(),
        changed(
            consent("new"),
            sourceAttachment={"url": "https://arkiv.example/123", "contentType": "application/pdf"},
        ),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
    ),
    Write(
        "service-empty-form-refused",
        TEACHER,
        log(),
        changed(consent("new"), sourceAttachment={"title": "tom"}),
        False,
        Basis.CONSENT_WRITE_REFUSED,
    ),
    Write(
        "service-performer-practitioner",
        TEACHER,
        log(),
        consent("new", performers=[ref("Practitioner/demo-teacher")]),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        says="performer",
    ),
    Write(
        "service-performer-andre",
        TEACHER,
        log(related=(MOTHER, guardian("step", fnr=STEP_FNR, code="andre"))),
        consent("new", performers=[ref("RelatedPerson/step")]),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        says="andre",
    ),
    Write(
        "service-youth-16-performer",
        NURSE,
        log(child=YOUTH_16),
        consent("new", performers=SELF),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
    ),
    Write(
        "service-all-policy-one-signed",
        TEACHER,
        log(),
        consent("new"),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        policy=ALL_GUARDIANS,
        says="joint responsibility",
    ),
    Write(
        "service-all-policy-both-signed",
        TEACHER,
        log(),
        consent("new", performers=BOTH),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
        policy=ALL_GUARDIANS,
    ),
    Write(
        "service-all-policy-draft-one-signed",
        TEACHER,
        log(),
        consent("new", status="draft"),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
        policy=ALL_GUARDIANS,
    ),
    Write(
        "service-withdraws-on-paper",
        TEACHER,
        KG_LOG,
        changed(STORED, status="inactive"),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
    ),
    Write(
        "service-broadens-with-old-form",
        TEACHER,
        KG_LOG,
        consent("stored", actors=[org(HEALTH)]),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        says="newly signed form",
    ),
    Write(
        "service-broadens-with-new-form",
        TEACHER,
        KG_LOG,
        changed(
            consent("stored", actors=[org(HEALTH)]),
            sourceAttachment=SIGNED_FORM | {"data": "JVBERi0xLjUK"},
        ),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
    ),
    Write(
        "reactivation-refused",
        TEACHER,
        log(consent("stored", status="inactive")),
        consent("stored"),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        says="reactivated",
    ),
    Write(
        "withdrawn-may-be-marked-error",
        TEACHER,
        log(consent("stored", status="inactive")),
        consent("stored", status="entered-in-error"),
        True,
        Basis.RECORDED_WITH_SIGNED_FORM,
    ),
    Write(
        "other-child-consent",
        TEACHER,
        log(),
        consent("new", child="other-child"),
        False,
        Basis.NOT_IN_LOG,
    ),
    # the family
    Write(
        "guardian-creates-own",
        MOTHER_CITIZEN,
        log(),
        consent("new", form=False),
        True,
        Basis.FAMILY_GUARDIAN,
    ),
    Write(
        "guardian-by-fnr-performer",
        FATHER_CITIZEN,
        log(),
        consent("new", form=False, performers=[by_fnr("22918731958")]),
        True,
        Basis.FAMILY_GUARDIAN,
    ),
    Write(
        "guardian-signs-for-other",
        MOTHER_CITIZEN,
        log(),
        consent("new", form=False, performers=[ref("RelatedPerson/demo-father")]),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        says="writer as performer",
    ),
    Write(
        "guardian-withdraws-others-consent",
        FATHER_CITIZEN,
        KG_LOG,
        changed(STORED, status="inactive"),
        True,
        Basis.FAMILY_GUARDIAN,
        says="withdraws",
    ),
    Write(
        "guardian-narrows-others-consent",
        FATHER_CITIZEN,
        KG_LOG,
        consent("stored", classes=["Task"]),
        False,
        Basis.CONSENT_WRITE_REFUSED,
    ),
    Write(
        "guardian-narrows-own-consent",
        MOTHER_CITIZEN,
        KG_LOG,
        consent("stored", classes=["Task"]),
        True,
        Basis.FAMILY_GUARDIAN,
    ),
    Write(
        "guardian-all-policy-draft-then-activate",
        FATHER_CITIZEN,
        log(consent("stored", status="draft", performers=BOTH)),
        consent("stored", performers=BOTH),
        True,
        Basis.FAMILY_GUARDIAN,
        policy=ALL_GUARDIANS,
    ),
    Write(
        "guardian-all-policy-alone-refused",
        MOTHER_CITIZEN,
        log(),
        consent("new"),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        policy=ALL_GUARDIANS,
    ),
    Write(
        "guardian-andre-refused",
        STEP_CITIZEN,
        log(related=(MOTHER, guardian("step", fnr=STEP_FNR, code="andre"))),
        consent("new", performers=[ref("RelatedPerson/step")]),
        False,
        Basis.NOT_FAMILY,
    ),
    Write(
        "guardian-hidden-consent-refused",
        MOTHER_CITIZEN,
        log(),
        consent("new", labels=[HIDDEN]),
        False,
        Basis.HIDDEN_FROM_GUARDIANS,
    ),
    Write("stranger-refused", STRANGER, log(), consent("new"), False, Basis.NOT_FAMILY),
    Write(
        "youth-16-consents-alone",
        CHILD_CITIZEN,
        log(child=YOUTH_16),
        consent("new", performers=SELF, form=False),
        True,
        Basis.FAMILY_YOUTH,
    ),
    Write(
        "youth-16-withdraws-parents-consent",
        CHILD_CITIZEN,
        log(STORED, child=YOUTH_16),
        changed(STORED, status="inactive"),
        True,
        Basis.FAMILY_YOUTH,
    ),
    Write(
        "youth-13-cannot-consent",
        CHILD_CITIZEN,
        log(child=patient(birth_date=born(13))),
        consent("new", performers=SELF, form=False),
        False,
        Basis.FAMILY_YOUTH,
        says="from age 16",
    ),
    Write(
        "youth-16-child-welfare-needs-18",
        CHILD_CITIZEN,
        log(child=YOUTH_16),
        consent("new", performers=SELF, domain="child-welfare"),
        False,
        Basis.FAMILY_YOUTH,
        policy=ConsentPolicy(consent_age={"default": 16, "child-welfare": 18}),
    ),
    Write(
        "guardian-cannot-withdraw-youths-own",
        MOTHER_CITIZEN,
        log(consent("own", performers=SELF, domain="health"), child=YOUTH_16),
        changed(consent("own", performers=SELF, domain="health"), status="inactive"),
        False,
        Basis.CONSENT_WRITE_REFUSED,
        says="only the youth",
    ),
    # never the DPO
    Write("dpo-refused", DPO, KG_LOG, changed(STORED, status="inactive"), False, Basis.DPO),
]


@pytest.mark.parametrize("write", WRITES, ids=[w.id for w in WRITES])
def test_check_consent_write(write: Write) -> None:
    decision = check_consent_write(
        actor=write.actor,
        log=write.log,
        consent=write.consent,
        policy=write.policy,
        now=NOW,
        decision_id=f"w-{write.id}",
    )
    assert (decision.permitted, decision.basis) == (write.expect, write.basis), decision.reason
    assert write.says in decision.reason
    assert decision.decision_id == f"w-{write.id}"


@pytest.mark.parametrize("write", WRITES, ids=[w.id for w in WRITES])
def test_decide_delegates_consent_writes(write: Write) -> None:
    decision = decide(
        actor=write.actor,
        log=write.log,
        request=AccessRequest(action=Action.WRITE, resource_type="Consent", resource=write.consent),
        policy=write.policy,
        now=NOW,
        decision_id="x",
    )
    assert decision.permitted is write.expect, decision.reason


def test_consent_is_never_deleted_by_a_service() -> None:
    decision = decide(
        actor=TEACHER,
        log=KG_LOG,
        request=AccessRequest(action=Action.DELETE, resource_type="Consent", resource=STORED),
        policy=POLICY,
        now=NOW,
        decision_id="x",
    )
    assert (decision.permitted, decision.basis) == (False, Basis.CONSENT_WRITE_REFUSED)


def test_withdrawal_takes_effect_at_once() -> None:
    task = {"resourceType": "Task", "id": "t", "for": {"reference": f"Patient/{CHILD}"}}
    read = AccessRequest(action=Action.READ, resource_type="Task", resource=task)
    before = decide(
        actor=KG_SYSTEM, log=KG_LOG, request=read, policy=POLICY, now=NOW, decision_id="1"
    )
    withdrawn = changed(STORED, status="inactive")
    assert check_consent_write(
        actor=MOTHER_CITIZEN, log=KG_LOG, consent=withdrawn, policy=POLICY, now=NOW, decision_id="2"
    ).permitted
    after = decide(
        actor=KG_SYSTEM, log=log(withdrawn), request=read, policy=POLICY, now=NOW, decision_id="3"
    )
    assert before.permitted
    assert not after.permitted
    assert after.basis is Basis.CONSENT_INVALID
    assert "withdrawn" in after.reason
