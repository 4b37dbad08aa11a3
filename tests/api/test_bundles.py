"""Batch and transaction Bundles over real HTTP on both databases."""

from __future__ import annotations

import base64
import copy
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support import FNR_SYSTEM, LiveServer, fhir_headers, synthetic_fnr, synthetic_orgnr

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "examples" / "stafettlogg" / "demo-transaction.json"


@pytest.fixture(scope="module")
def api(server: LiveServer) -> httpx.Client:
    return server.client(server.practitioner_token(org=synthetic_orgnr()))


def post_bundle(api: httpx.Client, bundle: dict[str, Any]) -> httpx.Response:
    return api.post("", json=bundle, headers=fhir_headers())


def log_bundle(fnr: str) -> dict[str, Any]:
    child = f"urn:uuid:{uuid.uuid4()}"
    plan = f"urn:uuid:{uuid.uuid4()}"
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            # the CarePlan comes first and refers to the Patient defined after it
            {
                "fullUrl": plan,
                "resource": {
                    "resourceType": "CarePlan",
                    "status": "active",
                    "intent": "plan",
                    "subject": {"reference": child},
                },
                "request": {"method": "POST", "url": "CarePlan"},
            },
            {
                "fullUrl": child,
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
                },
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={FNR_SYSTEM}|{fnr}",
                },
            },
            {
                "resource": {
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "plan",
                    "basedOn": [{"reference": plan}],
                    "for": {"reference": child},
                },
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }


def count(api: httpx.Client, resource_type: str, **params: str) -> int:
    return int(api.get(f"/{resource_type}", params={**params, "_summary": "count"}).json()["total"])


def test_transaction_rewrites_urn_uuid_references(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    response = post_bundle(api, log_bundle(fnr))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [entry["response"]["status"] for entry in body["entry"]]
    assert statuses == ["201 Created"] * 3
    plan_location = body["entry"][0]["response"]["location"]
    patient_id = body["entry"][1]["response"]["location"].split("/")[1]
    plan = api.get("/" + plan_location.split("/_history")[0]).json()
    assert plan["subject"]["reference"] == f"Patient/{patient_id}"
    tasks = api.get("/Task", params={"based-on": plan_location.split("/_history")[0]}).json()
    assert tasks["total"] == 1
    assert tasks["entry"][0]["resource"]["for"]["reference"] == f"Patient/{patient_id}"


def test_transaction_if_none_exist_reuses_existing(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    first = post_bundle(api, log_bundle(fnr)).json()
    second = post_bundle(api, log_bundle(fnr)).json()
    assert second["entry"][1]["response"]["status"] == "200 OK"
    assert second["entry"][1]["response"]["location"] == first["entry"][1]["response"]["location"]
    assert count(api, "Patient", identifier=f"{FNR_SYSTEM}|{fnr}") == 1
    assert count(api, "CarePlan", **{"subject.identifier": f"{FNR_SYSTEM}|{fnr}"}) == 2


def test_transaction_is_all_or_nothing(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    bundle = log_bundle(fnr)
    bundle["entry"][2]["resource"]["status"] = "no-such-status"
    response = post_bundle(api, bundle)
    assert response.status_code == 422
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Bundle.entry[2]" in outcome["issue"][0]["diagnostics"]
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[2].resource.status"]
    assert count(api, "Patient", identifier=f"{FNR_SYSTEM}|{fnr}") == 0
    assert count(api, "CarePlan", **{"subject.identifier": f"{FNR_SYSTEM}|{fnr}"}) == 0


def test_transaction_failure_in_update_rolls_back_creates(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    bundle = log_bundle(fnr)
    bundle["entry"].append(
        {
            "resource": {"resourceType": "Patient", "id": "x-missing"},
            "request": {"method": "PUT", "url": "Patient/x-missing", "ifMatch": 'W/"3"'},
        }
    )
    response = post_bundle(api, bundle)
    assert response.status_code == 412
    assert count(api, "Patient", identifier=f"{FNR_SYSTEM}|{fnr}") == 0


def test_transaction_unresolved_urn_is_400(api: httpx.Client) -> None:
    bundle = log_bundle(synthetic_fnr())
    bundle["entry"][2]["resource"]["for"]["reference"] = f"urn:uuid:{uuid.uuid4()}"
    assert post_bundle(api, bundle).status_code == 400


def test_transaction_conditional_reference(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    post_bundle(api, log_bundle(fnr))
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Goal",
                    "lifecycleStatus": "active",
                    "description": {"text": "Trives i barnehagen"},
                    "subject": {"reference": f"Patient?identifier={FNR_SYSTEM}|{fnr}"},
                },
                "request": {"method": "POST", "url": "Goal"},
            }
        ],
    }
    response = post_bundle(api, bundle)
    assert response.status_code == 200, response.text
    goals = api.get("/Goal", params={"subject.identifier": f"{FNR_SYSTEM}|{fnr}"}).json()
    assert goals["total"] == 1
    missing = copy.deepcopy(bundle)
    missing["entry"][0]["resource"]["subject"]["reference"] = (
        f"Patient?identifier={FNR_SYSTEM}|{synthetic_fnr()}"
    )
    assert post_bundle(api, missing).status_code == 412


def test_transaction_update_patch_delete_and_read(api: httpx.Client) -> None:
    created = api.post(
        "/Patient",
        json={
            "resourceType": "Patient",
            "identifier": [{"system": FNR_SYSTEM, "value": synthetic_fnr()}],
        },
        headers=fhir_headers(),
    ).json()
    doomed = api.post("/Patient", json={"resourceType": "Patient"}, headers=fhir_headers()).json()
    patch = [{"op": "add", "path": "/gender", "value": "female"}]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(orjson.dumps(patch)).decode(),
                },
                "request": {"method": "PATCH", "url": f"Patient/{created['id']}"},
            },
            {"request": {"method": "DELETE", "url": f"Patient/{doomed['id']}"}},
            {"request": {"method": "GET", "url": f"Patient/{created['id']}"}},
        ],
    }
    response = post_bundle(api, bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[1]["response"]["status"] == "204 No Content"
    # GET runs after the writes inside a transaction
    assert entries[2]["resource"]["gender"] == "female"
    assert api.get(f"/Patient/{doomed['id']}").status_code == 410


def test_batch_entries_succeed_or_fail_independently(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
                },
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "dragon"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
            {"request": {"method": "GET", "url": f"Patient?identifier={FNR_SYSTEM}|{fnr}"}},
        ],
    }
    response = post_bundle(api, bundle)
    assert response.status_code == 200
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"] == "422"
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == ["Patient.gender"]
    assert entries[2]["response"]["status"] == "404"
    assert entries[3]["resource"]["total"] == 1


@pytest.mark.parametrize(
    "bundle",
    [
        {"resourceType": "Bundle", "type": "collection"},
        {"resourceType": "Patient"},
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": {"resourceType": "Patient"}}],
        },
        {"resourceType": "Bundle", "type": "transaction", "entry": "nope"},
    ],
)
def test_malformed_bundles_are_400(api: httpx.Client, bundle: dict[str, Any]) -> None:
    response = post_bundle(api, bundle)
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_demo_log_loads_as_one_transaction(api: httpx.Client) -> None:
    bundle = orjson.loads(DEMO.read_bytes())
    response = post_bundle(api, bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert len(entries) == len(bundle["entry"])
    child = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    fnr = child["identifier"][0]["value"]
    found = api.get(
        "/CarePlan",
        params={"subject.identifier": f"{FNR_SYSTEM}|{fnr}", "_revinclude": "Task:based-on"},
    ).json()
    assert found["total"] == 1
    tasks = [e for e in found["entry"] if e["search"]["mode"] == "include"]
    assert len(tasks) == sum(1 for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")


def test_base_url_without_trailing_slash_takes_bundles(server: LiveServer) -> None:
    token = server.practitioner_token(org=synthetic_orgnr())
    response = httpx.post(
        server.fhir,
        json={"resourceType": "Bundle", "type": "batch"},
        headers={"Authorization": f"Bearer {token}", **fhir_headers()},
    )
    assert response.status_code == 200
    assert response.json()["type"] == "batch-response"
