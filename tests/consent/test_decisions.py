"""Table-driven scenarios for the pure consent decision point (consent/README.md).

Each row is one question to `decide`: who asks, about which log, to do what with which
resource, and the expected answer and basis. The same rows then prove that `readable_types`
never under-approximates what `decide` permits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from consent import (
    AccessRequest,
    Action,
    Actor,
    ActorKind,
    Basis,
    ChildLog,
    ConsentPolicy,
    Decision,
    InvalidRequest,
    decide,
    readable_types,
)
from tests.consent.builders import (
    CHILD,
    CHILD_CITIZEN,
    COMM_CS,
    DPO,
    FATHER,
    FATHER_CITIZEN,
    HEALTH,
    HEALTH_SYSTEM,
    HIDDEN,
    HIDDEN_URN,
    KG_SYSTEM,
    KINDERGARTEN,
    MOTHER,
    MOTHER_CITIZEN,
    NAV,
    NAV_SYSTEM,
    NOW,
    NURSE,
    NURSE_FNR,
    NURSE_HPR,
    OSLO,
    R_LABEL,
    SCHOOL_SYSTEM,
    STEP_CITIZEN,
    STEP_FNR,
    STRANGER,
    TEACHER,
    Json,
    born,
    by_fnr,
    consent,
    enh,
    entry,
    guardian,
    hpr,
    log,
    org,
    patient,
    provision,
    ref,
    service,
)

POLICY = ConsentPolicy()
ALL_GUARDIANS = ConsentPolicy(guardians_required="all")
DOMAINS = ConsentPolicy(consent_age={"default": 16, "health": 16, "child-welfare": 18})
FAMILY_NOTES = ConsentPolicy(family_write_types=frozenset({"Communication"}))
LIFELONG = ConsentPolicy(guardian_until_age=None)

DEFAULT = object()

# Logs used by several rows.
KG_PERMIT = log(consent())
KG_TASK_ONLY = log(consent(classes=["Task"]))
NO_CONSENT = log()
YOUTH_13 = patient(birth_date=born(13))
YOUTH_16 = patient(birth_date=born(16, days=-60))  # 16 before the form was signed
YOUTH_15 = patient(birth_date=born(15))
HEALTH_CONSENT_EXAMPLE_SHAPE = log(
    consent(
        actors=[org(KINDERGARTEN), org(HEALTH)],
        actions=["access", "collect", "correct"],
        classes=["CarePlan", "CareTeam", "Goal", "Task", "Communication"],
        nested=[
            provision("deny", actors=[org(HEALTH)], actions=["collect"], classes=["Communication"]),
            provision("deny", labels=[R_LABEL]),
        ],
    )
)


@dataclass(frozen=True)
class Case:
    """One scenario: a question to decide and the expected answer."""

    id: str
    actor: Actor
    log: ChildLog
    rtype: str
    expect: bool
    basis: Basis
    action: Action = Action.READ
    resource: Any = DEFAULT
    policy: ConsentPolicy = POLICY
    now: datetime = NOW
    provision: Any = DEFAULT
    consent_id: Any = DEFAULT
    labels: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def request(self) -> AccessRequest:
        """Return the AccessRequest of this scenario."""
        resource: Json | None = entry(self.rtype) if self.resource is DEFAULT else self.resource
        return AccessRequest(
            action=self.action,
            resource_type=self.rtype,
            resource=resource,
            security_labels=self.labels,
        )


def task(rid: str = "e1", **kw: Any) -> Json:
    """Return a Task of the child."""
    return entry("Task", rid, **kw)


def note(category: str = "note", **kw: Any) -> Json:
    """Return a Communication of the child."""
    return entry("Communication", category=category, **kw)


CASES = [
    # -- default deny and validity (rules 1, 2, 9) ---------------------------------------------
    Case("no-consent-deny", KG_SYSTEM, NO_CONSENT, "Task", False, Basis.DEFAULT_DENY),
    Case(
        "no-consent-write-deny",
        KG_SYSTEM,
        NO_CONSENT,
        "Task",
        False,
        Basis.DEFAULT_DENY,
        action=Action.WRITE,
    ),
    Case(
        "permit-org-by-id",
        KG_SYSTEM,
        KG_PERMIT,
        "Task",
        True,
        Basis.CONSENT,
        provision="Consent.provision",
        consent_id="demo-consent",
    ),
    Case(
        "permit-org-by-enh",
        NAV_SYSTEM,
        log(consent(actors=[enh(NAV)])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "enh-other-number-deny",
        NAV_SYSTEM,
        log(consent(actors=[enh(HEALTH)])),
        "Task",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case("other-org-deny", HEALTH_SYSTEM, KG_PERMIT, "Task", False, Basis.DEFAULT_DENY),
    Case(
        "expired-deny",
        KG_SYSTEM,
        log(consent(period={"start": "2025-08-31", "end": "2026-09-30"})),
        "Task",
        False,
        Basis.CONSENT_INVALID,
        consent_id="demo-consent",
    ),
    Case(
        "expiry-day-still-valid",
        KG_SYSTEM,
        log(consent(period={"start": "2025-08-31", "end": "2026-10-01"})),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "expired-minute-ago",
        KG_SYSTEM,
        log(consent(period={"start": "2025-08-31", "end": "2026-10-01T11:59:00+02:00"})),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "not-yet-started",
        KG_SYSTEM,
        log(consent(period={"start": "2026-10-02", "end": "2027-10-01"})),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case("no-period-no-expiry", KG_SYSTEM, log(consent(period=None)), "Task", True, Basis.CONSENT),
    Case(
        "withdrawn-inactive",
        KG_SYSTEM,
        log(consent(status="inactive")),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "draft-deny", KG_SYSTEM, log(consent(status="draft")), "Task", False, Basis.CONSENT_INVALID
    ),
    Case(
        "proposed-deny",
        KG_SYSTEM,
        log(consent(status="proposed")),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "rejected-deny",
        KG_SYSTEM,
        log(consent(status="rejected")),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "entered-in-error-deny",
        KG_SYSTEM,
        log(consent(status="entered-in-error")),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "wrong-scope-deny",
        KG_SYSTEM,
        log(consent(scope="research")),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "other-patient-consent-ignored",
        KG_SYSTEM,
        log(consent(child="other-child")),
        "Task",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case(
        "consent-without-provision",
        KG_SYSTEM,
        log({k: v for k, v in consent().items() if k != "provision"}),
        "Task",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case(
        "one-expired-one-active",
        KG_SYSTEM,
        log(
            consent("old", period={"start": "2025-01-01", "end": "2026-01-01"}),
            consent("new", period={"start": "2026-09-01", "end": "2027-09-01"}),
        ),
        "Task",
        True,
        Basis.CONSENT,
        consent_id="new",
    ),
    Case(
        "withdrawn-and-replaced-by-narrower",
        KG_SYSTEM,
        log(consent("old", status="inactive"), consent("new", classes=["Task"])),
        "Communication",
        False,
        Basis.CONSENT_INVALID,
        consent_id="old",
    ),
    # -- class, labels, code, data (rule 3) ----------------------------------------------------
    Case("class-task-permits-task", KG_SYSTEM, KG_TASK_ONLY, "Task", True, Basis.CONSENT),
    Case(
        "class-task-denies-communication",
        KG_SYSTEM,
        KG_TASK_ONLY,
        "Communication",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case("class-absent-covers-consent", KG_SYSTEM, KG_PERMIT, "Consent", True, Basis.CONSENT),
    Case(
        "class-absent-covers-provenance",
        KG_SYSTEM,
        KG_PERMIT,
        "Provenance",
        True,
        Basis.CONSENT,
        provision="Consent.provision",
    ),
    Case(
        "label-limited-with-label",
        KG_SYSTEM,
        log(consent(root=provision(actors=[org(KINDERGARTEN)], labels=[R_LABEL]))),
        "Task",
        True,
        Basis.CONSENT,
        resource=task(labels=[R_LABEL]),
    ),
    Case(
        "label-limited-without-label",
        KG_SYSTEM,
        log(consent(root=provision(actors=[org(KINDERGARTEN)], labels=[R_LABEL]))),
        "Task",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case(
        "nested-label-deny-restricted",
        KG_SYSTEM,
        HEALTH_CONSENT_EXAMPLE_SHAPE,
        "Task",
        False,
        Basis.DENIED_BY_PROVISION,
        resource=task(labels=[R_LABEL]),
        provision="Consent.provision.provision[1]",
    ),
    Case(
        "code-limited-lysglimt-permit",
        KG_SYSTEM,
        log(
            consent(
                root=provision(
                    actors=[org(KINDERGARTEN)], codes=[{"system": COMM_CS, "code": "lysglimt"}]
                )
            )
        ),
        "Communication",
        True,
        Basis.CONSENT,
        resource=note("lysglimt"),
    ),
    Case(
        "code-limited-note-deny",
        KG_SYSTEM,
        log(
            consent(
                root=provision(
                    actors=[org(KINDERGARTEN)], codes=[{"system": COMM_CS, "code": "lysglimt"}]
                )
            )
        ),
        "Communication",
        False,
        Basis.DEFAULT_DENY,
        resource=note("note"),
    ),
    Case(
        "data-instance-deny",
        KG_SYSTEM,
        log(
            consent(
                nested=[
                    provision(
                        "deny", data=[{"meaning": "instance", "reference": ref("Task/secret")}]
                    )
                ]
            )
        ),
        "Task",
        False,
        Basis.DENIED_BY_PROVISION,
        resource=task("secret"),
    ),
    Case(
        "data-instance-deny-other-task",
        KG_SYSTEM,
        log(
            consent(
                nested=[
                    provision(
                        "deny", data=[{"meaning": "instance", "reference": ref("Task/secret")}]
                    )
                ]
            )
        ),
        "Task",
        True,
        Basis.CONSENT,
        resource=task("open"),
    ),
    # -- nested provisions (rule 4) ------------------------------------------------------------
    Case(
        "nested-deny-communication",
        KG_SYSTEM,
        log(consent(nested=[provision("deny", classes=["Communication"])])),
        "Communication",
        False,
        Basis.DENIED_BY_PROVISION,
        provision="Consent.provision.provision[0]",
    ),
    Case(
        "nested-deny-communication-task-ok",
        KG_SYSTEM,
        log(consent(nested=[provision("deny", classes=["Communication"])])),
        "Task",
        True,
        Basis.CONSENT,
        provision="Consent.provision",
    ),
    Case(
        "nested-permit-inside-deny",
        KG_SYSTEM,
        log(
            consent(
                root=provision(
                    "deny", nested=[provision(actors=[org(KINDERGARTEN)], classes=["Task"])]
                )
            )
        ),
        "Task",
        True,
        Basis.CONSENT,
        provision="Consent.provision.provision[0]",
    ),
    Case(
        "nested-permit-inside-deny-other-type",
        KG_SYSTEM,
        log(
            consent(
                root=provision(
                    "deny", nested=[provision(actors=[org(KINDERGARTEN)], classes=["Task"])]
                )
            )
        ),
        "Communication",
        False,
        Basis.DENIED_BY_PROVISION,
        provision="Consent.provision",
    ),
    Case(
        "three-levels-lysglimt-allowed",
        KG_SYSTEM,
        log(
            consent(
                nested=[
                    provision(
                        "deny",
                        classes=["Communication"],
                        nested=[provision(codes=[{"system": COMM_CS, "code": "lysglimt"}])],
                    )
                ]
            )
        ),
        "Communication",
        True,
        Basis.CONSENT,
        resource=note("lysglimt"),
        provision="Consent.provision.provision[0].provision[0]",
    ),
    Case(
        "three-levels-note-denied",
        KG_SYSTEM,
        log(
            consent(
                nested=[
                    provision(
                        "deny",
                        classes=["Communication"],
                        nested=[provision(codes=[{"system": COMM_CS, "code": "lysglimt"}])],
                    )
                ]
            )
        ),
        "Communication",
        False,
        Basis.DENIED_BY_PROVISION,
        resource=note("note"),
        provision="Consent.provision.provision[0]",
    ),
    Case(
        "sibling-deny-wins",
        KG_SYSTEM,
        log(consent(nested=[provision(classes=["Task"]), provision("deny", classes=["Task"])])),
        "Task",
        False,
        Basis.DENIED_BY_PROVISION,
        provision="Consent.provision.provision[1]",
    ),
    Case(
        "nested-deny-expired-window",
        KG_SYSTEM,
        log(
            consent(
                nested=[
                    provision(
                        "deny",
                        classes=["Task"],
                        period={"start": "2026-01-01", "end": "2026-09-01"},
                    )
                ]
            )
        ),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "deny-naming-actor-beats-other-consent",
        KG_SYSTEM,
        log(
            consent("a"),
            consent("b", root=provision("deny", actors=[org(KINDERGARTEN)], classes=["Task"])),
        ),
        "Task",
        False,
        Basis.DENIED_BY_PROVISION,
        consent_id="b",
        provision="Consent.provision",
    ),
    Case(
        "exception-only-inside-its-parent",
        KG_SYSTEM,
        log(
            consent("a"),
            consent(
                "b",
                actors=[org(HEALTH)],
                nested=[provision("deny", actors=[org(KINDERGARTEN)], classes=["Task"])],
            ),
        ),
        "Task",
        True,
        Basis.CONSENT,
        consent_id="a",
    ),
    Case(
        "generic-label-deny-stays-in-its-consent",
        KG_SYSTEM,
        log(
            consent("a", nested=[provision("deny", labels=[R_LABEL])]),
            consent("b", root=provision(actors=[org(KINDERGARTEN)], labels=[R_LABEL])),
        ),
        "Task",
        True,
        Basis.CONSENT,
        resource=task(labels=[R_LABEL]),
        consent_id="b",
    ),
    # -- actions (rule 3) ---------------------------------------------------------------------
    Case(
        "write-with-collect",
        KG_SYSTEM,
        log(consent(actions=["collect"])),
        "Task",
        True,
        Basis.CONSENT,
        action=Action.WRITE,
    ),
    Case(
        "write-with-correct",
        KG_SYSTEM,
        log(consent(actions=["correct"])),
        "Task",
        True,
        Basis.CONSENT,
        action=Action.WRITE,
    ),
    Case(
        "write-with-access-only",
        KG_SYSTEM,
        log(consent(actions=["access"])),
        "Task",
        False,
        Basis.DEFAULT_DENY,
        action=Action.WRITE,
    ),
    Case(
        "read-with-access-only",
        KG_SYSTEM,
        log(consent(actions=["access"])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "read-with-correct-only",
        KG_SYSTEM,
        log(consent(actions=["correct"])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case("no-action-reads", KG_SYSTEM, KG_PERMIT, "Task", True, Basis.CONSENT),
    Case(
        "no-action-writes", KG_SYSTEM, KG_PERMIT, "Task", True, Basis.CONSENT, action=Action.WRITE
    ),
    Case(
        "deliver-with-collect",
        KG_SYSTEM,
        log(consent(actions=["access", "collect"])),
        "Task",
        True,
        Basis.CONSENT,
        action=Action.DELIVER,
    ),
    Case(
        "deliver-with-correct-only",
        KG_SYSTEM,
        log(consent(actions=["access", "correct"])),
        "Task",
        False,
        Basis.DEFAULT_DENY,
        action=Action.DELIVER,
    ),
    Case(
        "example-health-reads-notes",
        HEALTH_SYSTEM,
        HEALTH_CONSENT_EXAMPLE_SHAPE,
        "Communication",
        True,
        Basis.CONSENT,
    ),
    Case(
        "example-health-not-delivered-notes",
        HEALTH_SYSTEM,
        HEALTH_CONSENT_EXAMPLE_SHAPE,
        "Communication",
        False,
        Basis.DENIED_BY_PROVISION,
        action=Action.DELIVER,
        provision="Consent.provision.provision[0]",
    ),
    Case(
        "example-health-corrects-notes",
        HEALTH_SYSTEM,
        HEALTH_CONSENT_EXAMPLE_SHAPE,
        "Communication",
        True,
        Basis.CONSENT,
        action=Action.WRITE,
    ),
    Case(
        "example-kindergarten-delivers-notes",
        KG_SYSTEM,
        HEALTH_CONSENT_EXAMPLE_SHAPE,
        "Communication",
        True,
        Basis.CONSENT,
        action=Action.DELIVER,
    ),
    Case(
        "deny-access-denies-write-too",
        KG_SYSTEM,
        log(consent(nested=[provision("deny", actions=["access"], classes=["Task"])])),
        "Task",
        False,
        Basis.DENIED_BY_PROVISION,
        action=Action.WRITE,
    ),
    # -- who is matched (rule 3) ---------------------------------------------------------------
    Case(
        "practitioner-by-reference",
        NURSE,
        log(consent(actors=[ref("Practitioner/demo-nurse")])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "practitioner-by-hpr",
        NURSE,
        log(consent(actors=[hpr(NURSE_HPR)])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "practitioner-by-fnr",
        NURSE,
        log(consent(actors=[by_fnr(NURSE_FNR)])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "practitioner-role-reference",
        TEACHER,
        log(consent(actors=[ref("PractitionerRole/demo-teacher-role")])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case("practitioner-via-own-organisation", TEACHER, KG_PERMIT, "Task", True, Basis.CONSENT),
    Case(
        "practitioner-other-person-deny",
        TEACHER,
        log(consent(actors=[ref("Practitioner/demo-nurse")])),
        "Task",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case(
        "system-never-matches-practitioner",
        service(HEALTH),
        log(consent(actors=[ref("Practitioner/demo-nurse")])),
        "Task",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case(
        "system-at-permitted-org",
        SCHOOL_SYSTEM,
        log(consent(actors=[org(("demo-school", "927364514"))])),
        "CarePlan",
        True,
        Basis.CONSENT,
    ),
    Case(
        "absolute-and-versioned-reference",
        KG_SYSTEM,
        log(
            consent(
                actors=[
                    ref("https://stafett.example/fhir/Organization/demo-kindergarten/_history/3")
                ]
            )
        ),
        "Task",
        True,
        Basis.CONSENT,
    ),
    # -- derived rules: whose log, Provenance, one's own Consent -------------------------------
    Case(
        "identity-patient-with-task-only-consent",
        KG_SYSTEM,
        KG_TASK_ONLY,
        "Patient",
        True,
        Basis.CONSENT,
    ),
    Case(
        "identity-guardians-with-task-only-consent",
        KG_SYSTEM,
        KG_TASK_ONLY,
        "RelatedPerson",
        True,
        Basis.CONSENT,
    ),
    Case(
        "identity-denied-without-consent",
        NAV_SYSTEM,
        KG_TASK_ONLY,
        "Patient",
        False,
        Basis.DEFAULT_DENY,
    ),
    Case(
        "identity-explicitly-denied",
        KG_SYSTEM,
        log(consent(nested=[provision("deny", classes=["RelatedPerson"])])),
        "RelatedPerson",
        False,
        Basis.DENIED_BY_PROVISION,
    ),
    Case("provenance-follows-task", KG_SYSTEM, KG_TASK_ONLY, "Provenance", True, Basis.CONSENT),
    Case(
        "provenance-of-communication-denied",
        KG_SYSTEM,
        KG_TASK_ONLY,
        "Provenance",
        False,
        Basis.DEFAULT_DENY,
        resource=entry("Provenance") | {"target": [{"reference": "Communication/c1"}]},
    ),
    Case(
        "named-reads-own-consent",
        KG_SYSTEM,
        KG_TASK_ONLY,
        "Consent",
        True,
        Basis.NAMED_IN_CONSENT,
        resource=consent(classes=["Task"]),
    ),
    Case(
        "named-reads-withdrawn-consent",
        KG_SYSTEM,
        log(consent(status="inactive")),
        "Consent",
        True,
        Basis.NAMED_IN_CONSENT,
        resource=consent(status="inactive"),
    ),
    Case(
        "unnamed-cannot-read-consent",
        NAV_SYSTEM,
        KG_TASK_ONLY,
        "Consent",
        False,
        Basis.DEFAULT_DENY,
        resource=consent(classes=["Task"]),
    ),
    # -- not in the log -------------------------------------------------------------------------
    Case(
        "organization-not-in-log",
        KG_SYSTEM,
        KG_PERMIT,
        "Organization",
        False,
        Basis.NOT_IN_LOG,
        resource=None,
    ),
    Case(
        "task-of-other-child",
        KG_SYSTEM,
        KG_PERMIT,
        "Task",
        False,
        Basis.NOT_IN_LOG,
        resource=entry("Task", child="other-child"),
    ),
    Case(
        "auditevent-not-for-services",
        KG_SYSTEM,
        KG_PERMIT,
        "AuditEvent",
        False,
        Basis.NOT_IN_LOG,
        resource=None,
    ),
    # -- the family (rules 5, 6) ----------------------------------------------------------------
    Case("guardian-felles-reads", MOTHER_CITIZEN, NO_CONSENT, "Task", True, Basis.FAMILY_GUARDIAN),
    Case(
        "guardian-reads-consent", FATHER_CITIZEN, KG_PERMIT, "Consent", True, Basis.FAMILY_GUARDIAN
    ),
    Case(
        "guardian-mor-reads",
        MOTHER_CITIZEN,
        log(related=(guardian(code="mor"),)),
        "CarePlan",
        True,
        Basis.FAMILY_GUARDIAN,
    ),
    Case(
        "guardian-andre-denied",
        STEP_CITIZEN,
        log(related=(MOTHER, guardian("step", fnr=STEP_FNR, code="andre"))),
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "guardian-ukjent-denied",
        STEP_CITIZEN,
        log(related=(guardian("step", fnr=STEP_FNR, code="ukjent"),)),
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "guardian-inactive-denied",
        MOTHER_CITIZEN,
        log(related=(guardian(active=False),)),
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "guardian-period-ended-denied",
        MOTHER_CITIZEN,
        log(related=(guardian(period={"start": "2021-03-15", "end": "2026-06-30"}),)),
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "guardian-of-other-child-denied",
        MOTHER_CITIZEN,
        log(related=(guardian(child="other-child"),)),
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "guardian-hidden-denied",
        MOTHER_CITIZEN,
        NO_CONSENT,
        "Communication",
        False,
        Basis.HIDDEN_FROM_GUARDIANS,
        resource=note(labels=[HIDDEN]),
    ),
    Case(
        "guardian-hidden-urn-denied",
        MOTHER_CITIZEN,
        NO_CONSENT,
        "Communication",
        False,
        Basis.HIDDEN_FROM_GUARDIANS,
        resource=note(labels=[HIDDEN_URN]),
    ),
    Case(
        "guardian-hidden-by-request-labels",
        MOTHER_CITIZEN,
        NO_CONSENT,
        "Communication",
        False,
        Basis.HIDDEN_FROM_GUARDIANS,
        resource=None,
        labels=frozenset({tuple(HIDDEN.values())}),
    ),
    Case(
        "guardian-of-adult-denied",
        MOTHER_CITIZEN,
        log(child=patient(birth_date=born(18))),
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "guardian-of-adult-lifelong-policy",
        MOTHER_CITIZEN,
        log(child=patient(birth_date=born(18))),
        "Task",
        True,
        Basis.FAMILY_GUARDIAN,
        policy=LIFELONG,
    ),
    Case("stranger-denied", STRANGER, KG_PERMIT, "Task", False, Basis.NOT_FAMILY),
    Case(
        "citizen-without-pid",
        Actor(kind=ActorKind.CITIZEN),
        KG_PERMIT,
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "consent-does-not-admit-citizens",
        Actor(kind=ActorKind.CITIZEN, pid=NURSE_FNR),
        log(consent(actors=[by_fnr(NURSE_FNR)])),
        "Task",
        False,
        Basis.NOT_FAMILY,
    ),
    Case(
        "youth-13-reads-hidden",
        CHILD_CITIZEN,
        log(child=YOUTH_13),
        "Communication",
        True,
        Basis.FAMILY_YOUTH,
        resource=note(labels=[HIDDEN]),
    ),
    Case(
        "youth-12-on-birthday-reads",
        CHILD_CITIZEN,
        log(child=patient(birth_date=born(12))),
        "Task",
        True,
        Basis.FAMILY_YOUTH,
    ),
    Case(
        "youth-11-denied",
        CHILD_CITIZEN,
        log(child=patient(birth_date=born(12, days=1))),
        "Task",
        False,
        Basis.FAMILY_YOUTH,
    ),
    Case(
        "youth-synthetic-fnr-age",
        CHILD_CITIZEN.__class__(kind=ActorKind.CITIZEN, pid="10851351200"),
        log(child=patient(fnr="10851351200", birth_date=None)),
        "Task",
        True,
        Basis.FAMILY_YOUTH,
    ),
    Case(
        "youth-d-nummer-age",
        Actor(kind=ActorKind.CITIZEN, pid="50051351200"),
        log(
            child=patient(
                fnr="50051351200", birth_date=None, system="urn:oid:2.16.578.1.12.4.1.4.2"
            )
        ),
        "Task",
        True,
        Basis.FAMILY_YOUTH,
    ),
    Case(
        "youth-synthetic-fnr-too-young",
        CHILD_CITIZEN,
        log(child=patient(birth_date=None)),
        "Task",
        False,
        Basis.FAMILY_YOUTH,
    ),
    Case(
        "family-writes-task-denied",
        MOTHER_CITIZEN,
        NO_CONSENT,
        "Task",
        False,
        Basis.FAMILY_GUARDIAN,
        action=Action.WRITE,
    ),
    Case(
        "family-writes-note-when-configured",
        MOTHER_CITIZEN,
        NO_CONSENT,
        "Communication",
        True,
        Basis.FAMILY_GUARDIAN,
        action=Action.WRITE,
        policy=FAMILY_NOTES,
    ),
    Case(
        "family-cannot-overwrite-hidden-note",
        MOTHER_CITIZEN,
        NO_CONSENT,
        "Communication",
        False,
        Basis.HIDDEN_FROM_GUARDIANS,
        action=Action.WRITE,
        policy=FAMILY_NOTES,
        resource=note(labels=[HIDDEN]),
    ),
    Case(
        "family-writes-consent",
        MOTHER_CITIZEN,
        NO_CONSENT,
        "Consent",
        True,
        Basis.FAMILY_GUARDIAN,
        action=Action.WRITE,
        resource=consent("new", form=False),
    ),
    Case(
        "family-deletes-consent-refused",
        MOTHER_CITIZEN,
        KG_PERMIT,
        "Consent",
        False,
        Basis.CONSENT_WRITE_REFUSED,
        action=Action.DELETE,
    ),
    Case(
        "family-no-delivery",
        MOTHER_CITIZEN,
        KG_PERMIT,
        "Task",
        False,
        Basis.FAMILY_GUARDIAN,
        action=Action.DELIVER,
    ),
    # -- who can consent (rules 2, 5) -----------------------------------------------------------
    Case(
        "performer-andre-invalid",
        KG_SYSTEM,
        log(
            consent(performers=[ref("RelatedPerson/step")]),
            related=(MOTHER, guardian("step", fnr=STEP_FNR, code="andre")),
        ),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "performer-practitioner-invalid",
        KG_SYSTEM,
        log(consent(performers=[ref("Practitioner/demo-teacher")])),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "performer-guardian-by-fnr",
        KG_SYSTEM,
        log(consent(performers=[by_fnr(FATHER["identifier"][0]["value"])])),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "all-guardians-one-signed-invalid",
        KG_SYSTEM,
        KG_PERMIT,
        "Task",
        False,
        Basis.CONSENT_INVALID,
        policy=ALL_GUARDIANS,
    ),
    Case(
        "all-guardians-both-signed",
        KG_SYSTEM,
        log(
            consent(performers=[ref("RelatedPerson/demo-mother"), ref("RelatedPerson/demo-father")])
        ),
        "Task",
        True,
        Basis.CONSENT,
        policy=ALL_GUARDIANS,
    ),
    Case(
        "all-guardians-sole-responsibility",
        KG_SYSTEM,
        log(
            consent(),
            related=(
                guardian(code="mor"),
                guardian("demo-father", fnr="22918731958", code="andre"),
            ),
        ),
        "Task",
        True,
        Basis.CONSENT,
        policy=ALL_GUARDIANS,
    ),
    Case(
        "youth-16-consents-default-domain",
        KG_SYSTEM,
        log(consent(performers=[ref(f"Patient/{CHILD}")]), child=YOUTH_16),
        "Task",
        True,
        Basis.CONSENT,
    ),
    Case(
        "youth-15-cannot-consent",
        KG_SYSTEM,
        log(consent(performers=[ref(f"Patient/{CHILD}")]), child=YOUTH_15),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "youth-16-child-welfare-needs-18",
        KG_SYSTEM,
        log(consent(performers=[ref(f"Patient/{CHILD}")], domain="child-welfare"), child=YOUTH_16),
        "Task",
        False,
        Basis.CONSENT_INVALID,
        policy=DOMAINS,
    ),
    Case(
        "youth-16-health-domain",
        KG_SYSTEM,
        log(consent(performers=[ref(f"Patient/{CHILD}")], domain="health"), child=YOUTH_16),
        "Task",
        True,
        Basis.CONSENT,
        policy=DOMAINS,
    ),
    Case(
        "youth-signed-at-15-still-invalid-at-16",
        KG_SYSTEM,
        log(
            consent(
                performers=[ref(f"Patient/{CHILD}")], signed=(NOW - timedelta(days=200)).isoformat()
            ),
            child=patient(birth_date=born(16, days=-100)),
        ),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    Case(
        "guardian-consent-lapses-at-18",
        KG_SYSTEM,
        log(consent(), child=patient(birth_date=born(18))),
        "Task",
        False,
        Basis.CONSENT_INVALID,
    ),
    # -- the DPO (rule 7) -----------------------------------------------------------------------
    Case("dpo-reads-consent", DPO, KG_PERMIT, "Consent", True, Basis.DPO),
    Case("dpo-reads-auditevent", DPO, KG_PERMIT, "AuditEvent", True, Basis.DPO, resource=None),
    Case("dpo-reads-careplan-denied", DPO, KG_PERMIT, "CarePlan", False, Basis.DPO),
    Case("dpo-reads-patient-denied", DPO, KG_PERMIT, "Patient", False, Basis.DPO),
    Case(
        "dpo-writes-consent-denied",
        DPO,
        KG_PERMIT,
        "Consent",
        False,
        Basis.DPO,
        action=Action.WRITE,
    ),
    Case("dpo-writes-task-denied", DPO, KG_PERMIT, "Task", False, Basis.DPO, action=Action.WRITE),
    # -- type-level questions over-approximate ---------------------------------------------------
    Case(
        "type-level-label-limited-maybe",
        KG_SYSTEM,
        log(consent(root=provision(actors=[org(KINDERGARTEN)], labels=[R_LABEL]))),
        "Task",
        True,
        Basis.CONSENT,
        resource=None,
    ),
    Case(
        "type-level-nested-permit-in-label-deny",
        KG_SYSTEM,
        log(
            consent(
                root=provision(
                    "deny", labels=[R_LABEL], nested=[provision(actors=[org(KINDERGARTEN)])]
                )
            )
        ),
        "Task",
        True,
        Basis.CONSENT,
        resource=None,
    ),
    Case(
        "type-level-class-excluded",
        KG_SYSTEM,
        KG_TASK_ONLY,
        "Goal",
        False,
        Basis.DEFAULT_DENY,
        resource=None,
    ),
]


def _check(case: Case, decision: Decision) -> None:
    assert (decision.permitted, decision.basis) == (case.expect, case.basis), decision.reason
    assert decision.decision_id == f"d-{case.id}"
    assert decision.reason
    if case.provision is not DEFAULT:
        assert decision.provision == case.provision, decision.reason
    if case.consent_id is not DEFAULT:
        assert decision.consent_id == case.consent_id, decision.reason


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_decide(case: Case) -> None:
    decision = decide(
        actor=case.actor,
        log=case.log,
        request=case.request(),
        policy=case.policy,
        now=case.now,
        decision_id=f"d-{case.id}",
    )
    _check(case, decision)


def test_scenario_ids_are_unique_and_many() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


@pytest.mark.parametrize("case", [c for c in CASES if c.action is Action.READ], ids=lambda c: c.id)
def test_readable_types_never_under_approximates(case: Case) -> None:
    decision = decide(
        actor=case.actor,
        log=case.log,
        request=case.request(),
        policy=case.policy,
        now=case.now,
        decision_id="d",
    )
    access = readable_types(actor=case.actor, log=case.log, policy=case.policy, now=case.now)
    if decision.permitted and case.rtype != "AuditEvent":
        assert case.rtype in access.types
        labels = case.request().security_labels or frozenset()
        resource = case.request().resource or {}
        for coding in resource.get("meta", {}).get("security", []):
            labels |= {(coding["system"], coding["code"])}
        assert labels.isdisjoint(access.excluded_labels)
    if (
        not access.needs_resource_check
        and case.rtype in access.types
        and case.request().resource is not None
        and not decision.permitted
        and decision.basis is not Basis.NOT_IN_LOG
    ):
        # Without per-resource checks the only thing the SQL filter leaves out is labels.
        carried = {
            (c["system"], c["code"])
            for c in (case.request().resource or {}).get("meta", {}).get("security", [])
        }
        assert not carried.isdisjoint(access.excluded_labels), decision.reason


def test_decision_does_not_depend_on_memo_order() -> None:
    shared = log(consent(classes=["Task"]))
    later = NOW + timedelta(days=800)
    request = AccessRequest(action=Action.READ, resource_type="Task", resource=task())
    first = decide(
        actor=KG_SYSTEM, log=shared, request=request, policy=POLICY, now=NOW, decision_id="1"
    )
    expired = decide(
        actor=KG_SYSTEM, log=shared, request=request, policy=POLICY, now=later, decision_id="2"
    )
    again = decide(
        actor=KG_SYSTEM, log=shared, request=request, policy=POLICY, now=NOW, decision_id="3"
    )
    assert (first.permitted, expired.permitted, again.permitted) == (True, False, True)
    assert expired.basis is Basis.CONSENT_INVALID
    assert "expired" in expired.reason


def test_now_must_be_aware() -> None:
    with pytest.raises(InvalidRequest):
        decide(
            actor=KG_SYSTEM,
            log=KG_PERMIT,
            request=AccessRequest(action=Action.READ, resource_type="Task"),
            policy=POLICY,
            now=datetime(2026, 10, 1, 12),
            decision_id="x",
        )


def test_request_type_must_match_resource() -> None:
    with pytest.raises(InvalidRequest):
        decide(
            actor=KG_SYSTEM,
            log=KG_PERMIT,
            request=AccessRequest(action=Action.READ, resource_type="Task", resource=note()),
            policy=POLICY,
            now=NOW,
            decision_id="x",
        )


def test_date_only_bounds_follow_the_zone_of_now() -> None:
    expiring = log(consent(period={"start": "2025-01-01", "end": "2026-09-30"}))
    request = AccessRequest(action=Action.READ, resource_type="Task", resource=task())
    # 23:30 on the last day in Oslo is still inside; the same instant in UTC is too.
    late = datetime(2026, 9, 30, 23, 30, tzinfo=OSLO)
    assert decide(
        actor=KG_SYSTEM, log=expiring, request=request, policy=POLICY, now=late, decision_id="x"
    ).permitted
    after = datetime(2026, 10, 1, 0, 30, tzinfo=OSLO)
    assert not decide(
        actor=KG_SYSTEM, log=expiring, request=request, policy=POLICY, now=after, decision_id="x"
    ).permitted


def test_mother_and_father_are_both_guardians() -> None:
    for actor in (MOTHER_CITIZEN, FATHER_CITIZEN):
        assert decide(
            actor=actor,
            log=KG_PERMIT,
            request=AccessRequest(action=Action.READ, resource_type="Goal", resource=entry("Goal")),
            policy=POLICY,
            now=NOW,
            decision_id="x",
        ).permitted
    assert MOTHER["id"] != FATHER["id"]
    assert NAV[1] == "961728398"
