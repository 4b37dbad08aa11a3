"""Summaries over a whole log: valid_consents, readable_types, consent_status."""

from __future__ import annotations

from datetime import timedelta

import pytest

from consent import (
    ALL_LOG_TYPES,
    Actor,
    Basis,
    ChildLog,
    ConsentPolicy,
    TypeAccess,
    consent_status,
    readable_types,
    valid_consents,
)
from tests.consent.builders import (
    CHILD_CITIZEN,
    DPO,
    HEALTH,
    HEALTH_SYSTEM,
    KG_SYSTEM,
    MOTHER_CITIZEN,
    NAV_SYSTEM,
    NOW,
    R_LABEL,
    STEP_FNR,
    STRANGER,
    born,
    consent,
    guardian,
    log,
    org,
    patient,
    provision,
    ref,
)

POLICY = ConsentPolicy()


def test_valid_consents_gives_a_reason_for_each() -> None:
    child_log = log(
        consent("ok"),
        consent("expired", period={"start": "2025-01-01", "end": "2026-01-31"}),
        consent("withdrawn", status="inactive"),
        consent("draft", status="draft"),
        consent("unsigned", performers=[ref("RelatedPerson/step")]),
        consent("elsewhere", child="other-child"),
        consent("open-ended", period=None),
        related=(
            guardian(),
            guardian("step", fnr=STEP_FNR, code="andre"),
        ),
    )
    verdicts = {v.consent_id: v for v in valid_consents(child_log, POLICY, NOW)}
    assert [v.consent_id for v in valid_consents(child_log, POLICY, NOW)] == [
        "ok",
        "expired",
        "withdrawn",
        "draft",
        "unsigned",
        "elsewhere",
        "open-ended",
    ]
    assert verdicts["ok"].valid
    assert "RelatedPerson/demo-mother" in verdicts["ok"].reason
    assert "until 2027-11-01" in verdicts["ok"].reason
    assert verdicts["ok"].period_end == "2027-11-01"
    assert verdicts["ok"].domains == ("default",)
    assert not verdicts["expired"].valid
    assert "expired 2026-01-31" in verdicts["expired"].reason
    assert "withdrawn" in verdicts["withdrawn"].reason
    assert "draft" in verdicts["draft"].reason
    assert "andre" in verdicts["unsigned"].reason
    assert "another patient" in verdicts["elsewhere"].reason
    assert verdicts["open-ended"].valid
    assert "no expiry" in verdicts["open-ended"].reason


def test_valid_consents_of_an_empty_log() -> None:
    assert valid_consents(log(), POLICY, NOW) == []


@pytest.mark.parametrize(
    ("actor", "child_log", "types", "excluded", "check"),
    [
        pytest.param(
            MOTHER_CITIZEN,
            log(),
            ALL_LOG_TYPES,
            POLICY.hidden_labels,
            False,
            id="guardian-all-but-hidden",
        ),
        pytest.param(
            CHILD_CITIZEN,
            log(child=patient(birth_date=born(14))),
            ALL_LOG_TYPES,
            frozenset(),
            False,
            id="youth-everything",
        ),
        pytest.param(
            CHILD_CITIZEN, log(), frozenset(), frozenset(), False, id="child-under-read-age"
        ),
        pytest.param(
            STRANGER, log(consent()), frozenset(), frozenset(), False, id="stranger-nothing"
        ),
        pytest.param(
            DPO, log(consent()), frozenset({"Consent"}), frozenset(), False, id="dpo-consents-only"
        ),
        pytest.param(KG_SYSTEM, log(), frozenset(), frozenset(), False, id="no-consent"),
        pytest.param(
            KG_SYSTEM, log(consent()), ALL_LOG_TYPES, frozenset(), False, id="unconditional-permit"
        ),
        pytest.param(
            KG_SYSTEM,
            log(consent(classes=["Task"])),
            frozenset({"Task", "Patient", "RelatedPerson", "Provenance", "Consent"}),
            frozenset(),
            True,
            id="task-only",
        ),
        pytest.param(
            KG_SYSTEM,
            log(consent(nested=[provision("deny", labels=[R_LABEL])])),
            ALL_LOG_TYPES,
            frozenset(),
            True,
            id="label-exception-needs-check",
        ),
        pytest.param(
            HEALTH_SYSTEM,
            log(consent(root=provision(actors=[org(HEALTH)], classes=["Goal"], labels=[R_LABEL]))),
            frozenset({"Goal", "Patient", "RelatedPerson", "Provenance", "Consent"}),
            frozenset(),
            True,
            id="label-limited-permit",
        ),
        pytest.param(
            NAV_SYSTEM,
            log(consent(), consent("x", status="inactive")),
            frozenset(),
            frozenset(),
            False,
            id="unnamed-organisation",
        ),
    ],
)
def test_readable_types(
    actor: Actor,
    child_log: ChildLog,
    types: frozenset[str],
    excluded: frozenset[tuple[str, str]],
    check: bool,
) -> None:
    access = readable_types(actor=actor, log=child_log, policy=POLICY, now=NOW)
    assert access == TypeAccess(types=types, excluded_labels=excluded, needs_resource_check=check)
    assert access.is_all is (types == ALL_LOG_TYPES)
    assert access.is_none is (not types)


@pytest.mark.parametrize(
    ("actor", "child_log", "permitted", "basis", "consent_id"),
    [
        pytest.param(KG_SYSTEM, log(consent()), True, Basis.CONSENT, "demo-consent", id="kg"),
        pytest.param(NAV_SYSTEM, log(consent()), False, Basis.DEFAULT_DENY, None, id="nav"),
        pytest.param(
            KG_SYSTEM,
            log(consent(period={"start": "2025-01-01", "end": "2026-01-01"})),
            False,
            Basis.CONSENT_INVALID,
            "demo-consent",
            id="expired",
        ),
        pytest.param(
            KG_SYSTEM,
            log(consent(root=provision("deny", actors=[org(("demo-kindergarten", "912837467"))]))),
            False,
            Basis.DENIED_BY_PROVISION,
            "demo-consent",
            id="explicit-deny",
        ),
        pytest.param(MOTHER_CITIZEN, log(), True, Basis.FAMILY_GUARDIAN, None, id="guardian"),
        pytest.param(CHILD_CITIZEN, log(), False, Basis.FAMILY_YOUTH, None, id="young-child"),
        pytest.param(DPO, log(), True, Basis.DPO, None, id="dpo"),
        pytest.param(STRANGER, log(), False, Basis.NOT_FAMILY, None, id="stranger"),
    ],
)
def test_consent_status(
    actor: Actor, child_log: ChildLog, permitted: bool, basis: Basis, consent_id: str | None
) -> None:
    decision = consent_status(
        actor=actor, log=child_log, policy=POLICY, now=NOW, decision_id="status-1"
    )
    assert (decision.permitted, decision.basis) == (permitted, basis), decision.reason
    assert decision.consent_id == consent_id
    assert decision.decision_id == "status-1"
    assert decision.policy_revision == "default"


def test_consent_status_names_the_readable_classes_and_expiry() -> None:
    decision = consent_status(
        actor=KG_SYSTEM,
        log=log(consent(classes=["Task", "Goal"])),
        policy=POLICY,
        now=NOW,
        decision_id="s",
    )
    assert "Goal, Task" in decision.reason
    assert "until 2027-11-01" in decision.reason
    later = consent_status(
        actor=KG_SYSTEM,
        log=log(consent()),
        policy=POLICY,
        now=NOW + timedelta(days=500),
        decision_id="s",
    )
    assert not later.permitted
    assert "expired 2027-11-01" in later.reason
