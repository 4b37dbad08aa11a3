"""The CapabilityStatement lists exactly what the server does, and each listed thing works."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from service.fhir.bindings import check_required_bindings
from tests.support import LiveServer, fhir_headers, synthetic_orgnr

pytestmark = pytest.mark.e2e

SAMPLE = {"token": "x", "string": "x", "date": "2026", "reference": "x", "uri": "http://x"}


@pytest.fixture(scope="module")
def statement(server: LiveServer) -> dict[str, Any]:
    response = httpx.get(server.fhir + "/metadata")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/fhir+json")
    body: dict[str, Any] = response.json()
    return body


def test_statement_is_valid_r4(statement: dict[str, Any]) -> None:
    CapabilityStatement.model_validate(statement)
    assert check_required_bindings(statement) == []
    assert statement["fhirVersion"] == "4.0.1"


def test_lists_exactly_the_served_types(statement: dict[str, Any]) -> None:
    types = {r["type"] for r in statement["rest"][0]["resource"]}
    assert types == {
        "Patient",
        "RelatedPerson",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "CarePlan",
        "CareTeam",
        "Goal",
        "Task",
        "Communication",
        "Consent",
        "Provenance",
        "AuditEvent",
    }
    audit = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert {i["code"] for i in audit["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "history-type",
        "search-type",
    }


def test_every_listed_search_parameter_works(statement: dict[str, Any], server: LiveServer) -> None:
    api = server.client(server.practitioner_token(org=synthetic_orgnr()))
    for resource in statement["rest"][0]["resource"]:
        for param in resource["searchParam"]:
            for params in (
                {param["name"]: SAMPLE[param["type"]]},
                {f"{param['name']}:missing": "true"},
            ):
                response = api.get(
                    f"/{resource['type']}", params=params, headers={"Prefer": "handling=strict"}
                )
                assert response.status_code == 200, (resource["type"], params, response.text)


def test_includes_listed_are_accepted(statement: dict[str, Any], server: LiveServer) -> None:
    api = server.client(server.practitioner_token(org=synthetic_orgnr()))
    for resource in statement["rest"][0]["resource"]:
        for include in resource["searchInclude"]:
            response = api.get(f"/{resource['type']}", params={"_include": include})
            assert response.status_code == 200, include
        for include in resource["searchRevInclude"]:
            response = api.get(f"/{resource['type']}", params={"_revinclude": include})
            assert response.status_code == 200, include


def test_required_parameters_are_listed(statement: dict[str, Any]) -> None:
    by_type = {
        r["type"]: {p["name"] for p in r["searchParam"]} for r in statement["rest"][0]["resource"]
    }
    assert {
        "_id",
        "_lastUpdated",
        "identifier",
        "patient",
        "subject",
        "status",
        "owner",
        "based-on",
        "part-of",
        "period",
    } <= by_type["Task"]
    assert {"category", "date", "subject", "patient", "care-team"} <= by_type["CarePlan"]
    assert {"participant", "patient"} <= by_type["CareTeam"]
    assert {"patient", "status", "period", "actor", "category"} <= by_type["Consent"]
    assert {"based-on", "category", "sent", "part-of"} <= by_type["Communication"]


def test_metrics_count_requests_by_interaction_and_show_the_outbox(server: LiveServer) -> None:
    client = server.client(server.practitioner_token(org="912837467"))
    created = client.post(
        "/Patient", json={"resourceType": "Patient", "gender": "female"}, headers=fhir_headers()
    )
    assert created.status_code == 201
    client.get(f"/Patient/{created.json()['id']}")
    client.get("/Patient/does-not-exist")
    text = httpx.get(server.base_url + "/metrics").text
    assert (
        'stafett_http_requests_total{interaction="read",resource_type="Patient",status="2xx"}'
        in text
    )
    assert (
        'stafett_http_requests_total{interaction="read",resource_type="Patient",status="4xx"}'
        in text
    )
    assert (
        'stafett_http_requests_total{interaction="create",resource_type="Patient",status="2xx"}'
        in text
    )
    assert "stafett_http_request_duration_seconds_bucket" in text
    backlog = [line for line in text.splitlines() if line.startswith("stafett_outbox_backlog ")]
    assert backlog
    assert float(backlog[0].split()[1]) >= 1  # the Patient's change event waits for a worker
