"""build_audit_event: BALP shape, R4B validity and Stafett's own validation, table-driven."""

from __future__ import annotations

import base64
import uuid
from dataclasses import replace
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from service.audit import AuditRecord, build_audit_event
from service.errors import BadRequest, InvalidResource
from service.fhir import validation
from service.fhir.spec import SUPPORTED_RESOURCE_TYPES
from service.search.values import micros_to_instant
from tests.audit.audit_support import (
    CITIZEN_PID,
    CLIENT_ID,
    HPR,
    ORGNR,
    PRACTITIONER_PID,
    PRINCIPALS,
    make_record,
)

HPR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.4"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
ENH_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
CLIENT_SYSTEM = "urn:stafett:client-id"

# interaction -> AuditEvent.action (BALP: C create, R read, U update, D delete, E execute)
ACTIONS = {
    "read": "R",
    "vread": "R",
    "search-type": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "history-instance": "R",
    "history-type": "E",
    "batch": "E",
    "transaction": "E",
    "operation": "E",
}
# principal -> the requesting agent's identifier (system, value)
REQUESTOR = {
    "practitioner-hpr": (HPR_SYSTEM, HPR),
    "practitioner-pid": (FNR_SYSTEM, PRACTITIONER_PID),
    "citizen": (FNR_SYSTEM, CITIZEN_PID),
    "system": (CLIENT_SYSTEM, "school-system"),
}
CASES = [
    pytest.param(principal, interaction, permitted, id=f"{principal}-{interaction}-{verdict}")
    for principal in REQUESTOR
    for interaction in ACTIONS
    for permitted, verdict in ((True, "permit"), (False, "deny"))
]


@pytest.fixture
def audit_writable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let validate_resource check AuditEvents, which it refuses from clients."""
    monkeypatch.setattr(validation, "WRITABLE_TYPES", frozenset(SUPPORTED_RESOURCE_TYPES))


def _record(principal: str, interaction: str, permitted: bool) -> AuditRecord:
    searches = interaction in ("search-type", "history-type")
    return make_record(
        patient_id="child-1",
        principal=principal,
        interaction=interaction,
        permitted=permitted,
        resources=("CarePlan/plan-1", "Task/task-1"),
        consent_id="consent-7" if permitted else None,
        query="patient=child-1&_count=10" if searches else None,
        client_address="192.0.2.10",
    )


def _entities_of_type(event: dict[str, Any], system: str, code: str) -> list[dict[str, Any]]:
    return [
        e
        for e in event["entity"]
        if e.get("type", {}).get("system") == system and e["type"].get("code") == code
    ]


def _codes(concept: dict[str, Any]) -> set[tuple[str, str]]:
    return {(c["system"], c["code"]) for c in concept.get("coding", [])}


@pytest.mark.usefixtures("audit_writable")
@pytest.mark.parametrize(("principal", "interaction", "permitted"), CASES)
def test_event_is_valid_balp_shape(principal: str, interaction: str, permitted: bool) -> None:
    record = _record(principal, interaction, permitted)
    event = build_audit_event(record, audit_id="a-1", server_url="http://stafett.test/fhir")

    AuditEvent.model_validate(event)
    assert validation.validate_resource(event) == "AuditEvent"

    assert event["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    }
    assert [(s["system"], s["code"]) for s in event["subtype"]] == [
        ("http://hl7.org/fhir/restful-interaction", interaction)
    ]
    assert event["action"] == ACTIONS[interaction]
    assert event["outcome"] == ("0" if permitted else "8")
    assert event["recorded"] == micros_to_instant(record.recorded)

    requestors = [a for a in event["agent"] if a["requestor"]]
    assert len(requestors) == 1
    who = requestors[0]["who"]["identifier"]
    assert (who["system"], who["value"]) == REQUESTOR[principal]
    assert requestors[0]["role"][0]["coding"][0]["code"] == PRINCIPALS[principal].kind.value

    organisations = [
        a for a in event["agent"] if a["who"].get("identifier", {}).get("system") == ENH_SYSTEM
    ]
    expected_org = PRINCIPALS[principal].organization
    assert [a["who"]["identifier"]["value"] for a in organisations] == (
        [expected_org] if expected_org else []
    )
    clients = [
        a for a in event["agent"] if a["who"].get("identifier", {}).get("system") == CLIENT_SYSTEM
    ]
    assert len(clients) == 1
    assert clients[0]["network"] == {"address": "192.0.2.10", "type": "2"}
    servers = [a for a in event["agent"] if a["who"].get("display") == "Stafett"]
    assert len(servers) == 1
    assert servers[0]["network"] == {"address": "http://stafett.test/fhir", "type": "5"}
    assert event["source"]["observer"] == {"display": "Stafett"}

    audit_entity_type = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
    object_role = "http://terminology.hl7.org/CodeSystem/object-role"
    patients = _entities_of_type(event, audit_entity_type, "1")
    assert [(p["what"]["reference"], p["role"]["code"]) for p in patients] == [
        ("Patient/child-1", "1")
    ]
    data = [e for e in event["entity"] if e.get("role", {}).get("code") == "4"]
    assert [e["what"]["reference"] for e in data] == ["CarePlan/plan-1", "Task/task-1"]
    assert all(e["role"]["system"] == object_role for e in data)

    queries = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
    if record.query is None:
        assert queries == []
    else:
        assert [base64.b64decode(q["query"]).decode() for q in queries] == [record.query]

    consents = _entities_of_type(event, "http://hl7.org/fhir/resource-types", "Consent")
    expected_consents = ["Consent/consent-7"] if permitted else []
    assert [c["what"]["reference"] for c in consents] == expected_consents

    decisions = [
        e
        for e in event["entity"]
        if e.get("what", {}).get("identifier", {}).get("system") == "urn:stafett:consent-decision"
    ]
    assert len(decisions) == 1
    assert decisions[0]["what"]["identifier"]["value"] == record.decision_id
    details = {d["type"]: d["valueString"] for d in decisions[0]["detail"]}
    assert details["decision-id"] == record.decision_id
    assert details["decision"] == ("permit" if permitted else "deny")
    assert details["decision-basis"] == record.basis
    assert details.get("reason") == (record.reason or None)

    request_ids = _entities_of_type(
        event, "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "XrequestId"
    )
    assert [r["what"]["identifier"]["value"] for r in request_ids] == [record.request_id]


@pytest.mark.parametrize(
    ("interaction", "user_type", "client_type", "server_type"),
    [
        ("read", "IRCP", "110152", "110153"),
        ("search-type", "IRCP", "110153", "110152"),
        ("create", "AUT", "110153", "110152"),
        ("update", "AUT", "110153", "110152"),
        ("delete", "INF", "110150", "custodian"),
    ],
)
def test_agent_types_follow_balp_per_interaction(
    interaction: str, user_type: str, client_type: str, server_type: str
) -> None:
    event = build_audit_event(
        make_record(patient_id="child-1", interaction=interaction), audit_id="a-1"
    )
    by_who = {
        a["who"].get("identifier", {}).get("system") or a["who"].get("display"): a
        for a in event["agent"]
    }
    assert by_who[HPR_SYSTEM]["type"]["coding"][0]["code"] == user_type
    assert by_who[CLIENT_SYSTEM]["type"]["coding"][0]["code"] == client_type
    assert by_who["Stafett"]["type"]["coding"][0]["code"] == server_type
    assert _codes(by_who[ENH_SYSTEM]["type"]) == {
        ("http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PROV")
    }


def test_user_agent_carries_token_id_subject_and_name() -> None:
    event = build_audit_event(make_record(patient_id="child-1"), audit_id="a-1")
    user = next(a for a in event["agent"] if a["requestor"])
    assert user["policy"] == ["urn:ietf:params:oauth:jti:jti-practitioner"]
    assert user["altId"] == "practitioner-sub"
    assert user["name"] == "Kari Nordmann"


def test_system_token_has_no_user_and_the_client_is_the_requestor() -> None:
    event = build_audit_event(make_record(patient_id="child-1", principal="system"), audit_id="a-1")
    requestor = next(a for a in event["agent"] if a["requestor"])
    assert requestor["who"]["identifier"] == {"system": CLIENT_SYSTEM, "value": "school-system"}
    assert requestor["policy"] == ["urn:ietf:params:oauth:jti:jti-system"]
    assert not any(
        a["who"].get("identifier", {}).get("system") in (HPR_SYSTEM, FNR_SYSTEM)
        for a in event["agent"]
    )


@pytest.mark.usefixtures("audit_writable")
def test_permitted_but_not_found_is_a_minor_failure() -> None:
    record = make_record(patient_id="child-1", outcome_detail="410 Gone")
    event = build_audit_event(record, audit_id="a-1")
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "410 Gone"
    validation.validate_resource(event)


@pytest.mark.usefixtures("audit_writable")
def test_denial_answered_404_stays_a_serious_failure() -> None:
    record = make_record(patient_id="child-1", permitted=False, outcome_detail="404")
    event = build_audit_event(record, audit_id="a-1")
    assert event["outcome"] == "8"
    assert event["outcomeDesc"] == "404: no active consent names the organisation"
    validation.validate_resource(event)


@pytest.mark.usefixtures("audit_writable")
def test_type_level_denial_without_patient_or_resources_is_valid() -> None:
    record = make_record(
        patient_id=None, permitted=False, interaction="search-type", consent_id=None, query="x=1"
    )
    event = build_audit_event(record, audit_id="a-1")
    AuditEvent.model_validate(event)
    validation.validate_resource(event)
    assert not any(e.get("role", {}).get("code") in ("1", "4") for e in event["entity"])


def test_patient_among_the_resources_is_recorded_once_as_the_patient() -> None:
    record = make_record(patient_id="child-1", resources=("Patient/child-1", "Goal/g-1"))
    event = build_audit_event(record, audit_id="a-1")
    references = [e["what"].get("reference") for e in event["entity"] if "what" in e]
    assert references.count("Patient/child-1") == 1
    assert "Goal/g-1" in references


def test_practitioner_without_hpr_or_pid_falls_back_to_issuer_and_subject() -> None:
    principal = replace(PRINCIPALS["practitioner-pid"], pid=None)
    record = replace(make_record(patient_id="child-1"), principal=principal)
    event = build_audit_event(record, audit_id="a-1")
    requestor = next(a for a in event["agent"] if a["requestor"])
    assert requestor["who"]["identifier"] == {
        "system": "https://helseid-sts.test",
        "value": "teacher-sub",
    }


def test_unknown_interaction_is_refused() -> None:
    with pytest.raises(ValueError, match="capabilities"):
        build_audit_event(
            make_record(patient_id="child-1", interaction="capabilities"), audit_id="a-1"
        )


@pytest.mark.usefixtures("audit_writable")
def test_validation_would_catch_a_bad_outcome_code() -> None:
    # proves the validity assertions above have teeth: the outcome binding is required
    event = build_audit_event(make_record(patient_id="child-1"), audit_id="a-1")
    event["outcome"] = "9"
    with pytest.raises(InvalidResource):
        validation.validate_resource(event)


def test_clients_still_cannot_write_audit_events() -> None:
    event = build_audit_event(make_record(patient_id="child-1"), audit_id=str(uuid.uuid4()))
    with pytest.raises(BadRequest, match="written by Stafett only"):
        validation.validate_resource(event)


def test_client_without_id_or_address_is_left_out() -> None:
    principal = replace(PRINCIPALS["citizen"], client_id=None)
    record = replace(make_record(patient_id="child-1", principal="citizen"), principal=principal)
    event = build_audit_event(record, audit_id="a-1")
    assert len(event["agent"]) == 2  # the citizen and the server
    assert {a["who"].get("identifier", {}).get("value") for a in event["agent"]} == {
        CITIZEN_PID,
        None,
    }
    assert CLIENT_ID not in str(event)
    assert ORGNR not in str(event)
