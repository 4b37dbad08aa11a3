"""The normative example files, and opening a log with one transaction (rule 8)."""

from __future__ import annotations

import copy
from datetime import datetime
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
    check_consent_write,
    decide,
    valid_consents,
)
from consent.constants import ENH, LOG_RESOURCE_TYPES
from tests.consent.builders import NOW, OSLO, Json, load, patient

POLICY = ConsentPolicy()
KINDERGARTEN = Actor(
    kind=ActorKind.PRACTITIONER,
    organization_number="912837467",
    organization_ids=frozenset({"demo-kindergarten"}),
)
HEALTH = Actor(
    kind=ActorKind.SYSTEM,
    organization_number="945182733",
    organization_ids=frozenset({"demo-health-station"}),
)


def _demo_log(*consents: Json) -> ChildLog:
    return ChildLog(
        patient_id="demo-child",
        patient=load("patient-child.json"),
        related_persons=(load("relatedperson-guardian.json"),),
        consents=consents,
    )


def _read(actor: Actor, child_log: ChildLog, resource: Json, now: datetime = NOW) -> Any:
    return decide(
        actor=actor,
        log=child_log,
        request=AccessRequest(
            action=Action.READ, resource_type=resource["resourceType"], resource=resource
        ),
        policy=POLICY,
        now=now,
        decision_id="x",
    )


def test_consent_permit_example() -> None:
    child_log = _demo_log(load("consent-permit.json"))
    note = load("communication-meeting.json")
    assert _read(KINDERGARTEN, child_log, note).permitted
    assert _read(HEALTH, child_log, note).permitted
    delivery = decide(
        actor=HEALTH,
        log=child_log,
        request=AccessRequest(action=Action.DELIVER, resource_type="Communication", resource=note),
        policy=POLICY,
        now=NOW,
        decision_id="x",
    )
    assert (delivery.permitted, delivery.provision) == (False, "Consent.provision.provision[0]")
    restricted = copy.deepcopy(load("task-measure.json"))
    restricted["meta"] = {
        "security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
        ]
    }
    denied = _read(KINDERGARTEN, child_log, restricted)
    assert (denied.basis, denied.provision) == (
        Basis.DENIED_BY_PROVISION,
        "Consent.provision.provision[1]",
    )


def test_consent_withdrawn_example() -> None:
    child_log = _demo_log(load("consent-withdrawn.json"))
    [verdict] = valid_consents(child_log, POLICY, NOW)
    assert not verdict.valid
    assert "withdrawn" in verdict.reason
    decision = _read(KINDERGARTEN, child_log, load("careplan.json"))
    assert decision.basis is Basis.CONSENT_INVALID


def test_hidden_example_hides_from_guardian_only() -> None:
    child_log = _demo_log(load("consent-permit.json"))
    hidden = copy.deepcopy(load("communication-hidden-from-guardians.json"))
    hidden["subject"] = {"reference": "Patient/demo-child"}
    mother = Actor(kind=ActorKind.CITIZEN, pid="04868941214")
    assert _read(mother, child_log, hidden).basis is Basis.HIDDEN_FROM_GUARDIANS
    assert _read(KINDERGARTEN, child_log, hidden).permitted


def test_consent_youth_example() -> None:
    youth = patient(fnr="15831051234", birth_date="2010-11-20") | {"id": "demo-youth"}
    child_log = ChildLog(
        patient_id="demo-youth", patient=youth, consents=(load("consent-youth.json"),)
    )
    now = datetime(2027, 6, 1, 9, 0, tzinfo=OSLO)
    [verdict] = valid_consents(child_log, POLICY, now)
    assert verdict.valid, verdict.reason
    nurse = Actor(
        kind=ActorKind.PRACTITIONER,
        organization_number="945182733",
        practitioner_ids=frozenset({"demo-school-nurse"}),
    )
    nav = Actor(kind=ActorKind.SYSTEM, organization_number="961728398")
    note = copy.deepcopy(load("communication-hidden-from-guardians.json"))
    assert _read(nurse, child_log, note, now).permitted
    assert _read(nav, child_log, note, now).permitted
    consent_read = _read(nav, child_log, load("consent-youth.json"), now)
    assert consent_read.basis is Basis.NAMED_IN_CONSENT
    # signed a year too early, the same form would not count
    younger = ChildLog(
        patient_id="demo-youth",
        patient=youth | {"birthDate": "2011-11-20"},
        consents=(load("consent-youth.json"),),
    )
    assert not valid_consents(younger, POLICY, now)[0].valid


def _resolve(bundle: Json) -> list[Json]:
    """Give pending resources ids and rewrite urn:uuid references, as a server does."""
    ids: dict[str, str] = {}
    for n, entry in enumerate(bundle["entry"]):
        rtype = entry["resource"]["resourceType"]
        ids[entry["fullUrl"]] = f"{rtype}/new-{n}"

    def rewrite(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (ids.get(v, v) if k == "reference" and isinstance(v, str) else rewrite(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    resolved = []
    for entry in bundle["entry"]:
        resource = rewrite(entry["resource"])
        resource["id"] = ids[entry["fullUrl"]].split("/")[1]
        resolved.append(resource)
    return resolved


def _pending_log(resources: list[Json], *, with_consent: bool = True) -> ChildLog:
    [child] = [r for r in resources if r["resourceType"] == "Patient"]
    return ChildLog(
        patient_id=child["id"],
        patient=child,
        related_persons=tuple(r for r in resources if r["resourceType"] == "RelatedPerson"),
        consents=tuple(r for r in resources if r["resourceType"] == "Consent" and with_consent),
    )


def _org_id(resources: list[Json], orgnr: str) -> str:
    for r in resources:
        if r["resourceType"] == "Organization" and r["identifier"][0] == {
            "system": ENH,
            "value": orgnr,
        }:
            return str(r["id"])
    raise AssertionError(orgnr)


def _decide_transaction(actor: Actor, resources: list[Json], child_log: ChildLog) -> list[Any]:
    decisions = []
    for resource in resources:
        rtype = resource["resourceType"]
        if rtype == "Consent":
            decisions.append(
                check_consent_write(
                    actor=actor,
                    log=child_log,
                    consent=resource,
                    policy=POLICY,
                    now=NOW,
                    decision_id=f"tx-{resource['id']}",
                )
            )
        elif rtype in LOG_RESOURCE_TYPES:
            decisions.append(
                decide(
                    actor=actor,
                    log=child_log,
                    request=AccessRequest(
                        action=Action.WRITE, resource_type=rtype, resource=resource
                    ),
                    policy=POLICY,
                    now=NOW,
                    decision_id=f"tx-{resource['id']}",
                )
            )
    return decisions


@pytest.fixture
def demo_resources() -> list[Json]:
    """Return the demo transaction's resources with ids assigned."""
    return _resolve(load("demo-transaction.json"))


def _teacher(resources: list[Json]) -> Actor:
    return Actor(
        kind=ActorKind.PRACTITIONER,
        organization_number="912837467",
        organization_ids=frozenset({_org_id(resources, "912837467")}),
        pid="12898522405",
    )


def test_opening_a_log_is_decided_as_a_whole(demo_resources: list[Json]) -> None:
    decisions = _decide_transaction(
        _teacher(demo_resources), demo_resources, _pending_log(demo_resources)
    )
    assert len(decisions) == 15
    assert all(d.permitted for d in decisions), [d.reason for d in decisions if not d.permitted]
    assert {d.basis for d in decisions} == {Basis.CONSENT, Basis.RECORDED_WITH_SIGNED_FORM}


def test_opening_without_signed_form_fails(demo_resources: list[Json]) -> None:
    for resource in demo_resources:
        resource.pop("sourceAttachment", None)
    decisions = _decide_transaction(
        _teacher(demo_resources), demo_resources, _pending_log(demo_resources)
    )
    refused = [d for d in decisions if not d.permitted]
    assert [d.basis for d in refused] == [Basis.CONSENT_WRITE_REFUSED]
    assert "sourceAttachment" in refused[0].reason
    # The refused Consent grants nothing: decided without it, every entry is denied.
    without = _decide_transaction(
        _teacher(demo_resources),
        demo_resources,
        _pending_log(demo_resources, with_consent=False),
    )
    assert not any(d.permitted for d in without if d.basis is not Basis.RECORDED_WITH_SIGNED_FORM)


def test_opening_for_an_organisation_not_named_fails(demo_resources: list[Json]) -> None:
    nav = Actor(
        kind=ActorKind.SYSTEM, organization_number="961728398", organization_ids=frozenset({"nav"})
    )
    decisions = _decide_transaction(nav, demo_resources, _pending_log(demo_resources))
    # NAV may record the signed form, but may not write the log's entries.
    assert [d.basis for d in decisions if d.permitted] == [Basis.RECORDED_WITH_SIGNED_FORM]
