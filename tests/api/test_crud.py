"""Create, read, vread, update, patch, delete and history over real HTTP, on both databases."""

from __future__ import annotations

import base64
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import orjson
import pytest

from tests.support import FNR_SYSTEM, LiveServer, fhir_headers, synthetic_fnr, synthetic_orgnr

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def org() -> str:
    return synthetic_orgnr()


@pytest.fixture(scope="module")
def api(server: LiveServer, org: str) -> httpx.Client:
    return server.client(server.practitioner_token(org=org))


def patient(fnr: str | None = None, **extra: object) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": FNR_SYSTEM, "value": fnr or synthetic_fnr()}],
        "name": [{"family": "Nordmann", "given": ["Ola"]}],
        "gender": "male",
        "birthDate": "2019-05-04",
        **extra,
    }


def create(api: httpx.Client, resource: dict[str, object]) -> httpx.Response:
    response = api.post(f"/{resource['resourceType']}", json=resource, headers=fhir_headers())
    assert response.status_code == 201, response.text
    return response


def test_create_returns_location_etag_and_body(api: httpx.Client, server: LiveServer) -> None:
    response = create(api, patient())
    body = response.json()
    assert body["meta"]["versionId"] == "1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["location"] == f"{server.fhir}/Patient/{body['id']}/_history/1"
    assert response.headers["content-type"].startswith("application/fhir+json")
    assert "last-modified" in response.headers


def test_create_ignores_client_id(api: httpx.Client) -> None:
    body = create(api, {**patient(), "id": "client-chosen"}).json()
    assert body["id"] != "client-chosen"


def test_read_and_vread(api: httpx.Client) -> None:
    created = create(api, patient()).json()
    read = api.get(f"/Patient/{created['id']}")
    assert read.status_code == 200
    assert read.json() == created
    assert read.headers["etag"] == 'W/"1"'
    vread = api.get(f"/Patient/{created['id']}/_history/1")
    assert vread.status_code == 200
    assert vread.json()["meta"]["versionId"] == "1"
    assert api.get(f"/Patient/{created['id']}/_history/7").status_code == 404


def test_read_unknown_is_404_with_operation_outcome(api: httpx.Client) -> None:
    response = api.get("/Patient/does-not-exist")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["issue"][0]["code"] == "not-found"


def test_unsupported_type_is_404(api: httpx.Client) -> None:
    assert api.get("/Observation/1").status_code == 404
    response = api.post(
        "/Observation", json={"resourceType": "Observation"}, headers=fhir_headers()
    )
    assert response.status_code == 404


def test_if_none_match_gives_304(api: httpx.Client) -> None:
    created = create(api, patient()).json()
    response = api.get(f"/Patient/{created['id']}", headers={"If-None-Match": 'W/"1"'})
    assert response.status_code == 304


def test_update_with_if_match(api: httpx.Client) -> None:
    created = create(api, patient()).json()
    changed = {**created, "gender": "female"}
    ok = api.put(
        f"/Patient/{created['id']}", json=changed, headers=fhir_headers(**{"If-Match": 'W/"1"'})
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["meta"]["versionId"] == "2"
    assert ok.headers["etag"] == 'W/"2"'
    stale = api.put(
        f"/Patient/{created['id']}",
        json={**changed, "gender": "other"},
        headers=fhir_headers(**{"If-Match": 'W/"1"'}),
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert api.get(f"/Patient/{created['id']}").json()["gender"] == "female"


def test_update_without_change_keeps_version(api: httpx.Client) -> None:
    created = create(api, patient()).json()
    again = api.put(f"/Patient/{created['id']}", json=created, headers=fhir_headers())
    assert again.status_code == 200
    assert again.json()["meta"]["versionId"] == "1"


def test_update_as_create_with_client_id(api: httpx.Client) -> None:
    resource = {**patient(), "id": f"client-{int(time.time() * 1000)}"}
    response = api.put(f"/Patient/{resource['id']}", json=resource, headers=fhir_headers())
    assert response.status_code == 201
    assert response.json()["id"] == resource["id"]
    assert "location" in response.headers


def test_update_id_mismatch_and_missing_id_are_400(api: httpx.Client) -> None:
    created = create(api, patient()).json()
    wrong = api.put(
        f"/Patient/{created['id']}", json={**created, "id": "other"}, headers=fhir_headers()
    )
    assert wrong.status_code == 400
    body = {k: v for k, v in created.items() if k != "id"}
    missing = api.put(f"/Patient/{created['id']}", json=body, headers=fhir_headers())
    assert missing.status_code == 400


def test_invalid_resource_is_422_with_location_and_writes_nothing(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    bad = patient(fnr, birthDate="2019-13-45")
    response = api.post("/Patient", json=bad, headers=fhir_headers())
    assert response.status_code == 422
    issues = response.json()["issue"]
    assert any("Patient.birthDate" in issue.get("expression", []) for issue in issues)
    found = api.get("/Patient", params={"identifier": f"{FNR_SYSTEM}|{fnr}"}).json()
    assert found["total"] == 0


@pytest.mark.parametrize(
    ("field", "value", "location"),
    [
        ("gender", "dragon", "Patient.gender"),
        ("active", "yes", "Patient.active"),
        ("unknownElement", 1, "Patient.unknownElement"),
        ("name", [], "Patient.name"),
        ("name", [{"family": None}], "Patient.name[0].family"),
    ],
)
def test_invalid_values_are_422(
    api: httpx.Client, field: str, value: object, location: str
) -> None:
    response = api.post("/Patient", json=patient(**{field: value}), headers=fhir_headers())
    assert response.status_code == 422, response.text
    expressions = [e for issue in response.json()["issue"] for e in issue.get("expression", [])]
    assert location in expressions


def test_task_status_outside_required_binding_is_422(api: httpx.Client) -> None:
    task = {
        "resourceType": "Task",
        "status": "no-such-status",
        "intent": "plan",
    }
    response = api.post("/Task", json=task, headers=fhir_headers())
    assert response.status_code == 422
    assert response.json()["issue"][0]["expression"] == ["Task.status"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"", 400),
        (b"[1, 2]", 400),
        (b'{"resourceType": "Practitioner"}', 400),  # type does not match the URL
    ],
)
def test_malformed_bodies_are_400(api: httpx.Client, body: bytes, status: int) -> None:
    response = api.post("/Patient", content=body, headers=fhir_headers())
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"


def test_wrong_content_type_is_415(api: httpx.Client) -> None:
    response = api.post(
        "/Patient", content=orjson.dumps(patient()), headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415


def test_xml_is_not_acceptable(api: httpx.Client) -> None:
    assert api.get("/Patient", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert api.get("/Patient", params={"_format": "xml"}).status_code == 406


def test_body_over_limit_is_413(api: httpx.Client, server: LiveServer) -> None:
    big = patient(
        text={
            "status": "generated",
            "div": "<div>" + "x" * server.settings.max_request_bytes + "</div>",
        }
    )
    response = api.post("/Patient", json=big, headers=fhir_headers())
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"


def test_unsupported_method_is_405(api: httpx.Client) -> None:
    response = api.delete("/Patient")
    assert response.status_code == 405
    assert response.json()["resourceType"] == "OperationOutcome"


def test_audit_event_is_read_only(api: httpx.Client) -> None:
    event = {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "recorded": "2026-11-01T10:00:00Z",
        "agent": [{"requestor": True, "who": {"display": "x"}}],
        "source": {"observer": {"display": "x"}},
    }
    response = api.put("/AuditEvent/x", json={**event, "id": "x"}, headers=fhir_headers())
    assert response.status_code == 405
    assert api.get("/AuditEvent").status_code == 200


def test_prefer_return(api: httpx.Client) -> None:
    minimal = api.post("/Patient", json=patient(), headers=fhir_headers(Prefer="return=minimal"))
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert "location" in minimal.headers
    outcome = api.post(
        "/Patient", json=patient(), headers=fhir_headers(Prefer="return=OperationOutcome")
    )
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"


def test_conditional_create(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    criteria = f"identifier={FNR_SYSTEM}|{fnr}"
    first = api.post(
        "/Patient", json=patient(fnr), headers=fhir_headers(**{"If-None-Exist": criteria})
    )
    assert first.status_code == 201
    second = api.post(
        "/Patient", json=patient(fnr), headers=fhir_headers(**{"If-None-Exist": criteria})
    )
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    create(api, patient(fnr))  # a duplicate made without the condition
    third = api.post(
        "/Patient", json=patient(fnr), headers=fhir_headers(**{"If-None-Exist": criteria})
    )
    assert third.status_code == 412


def test_json_patch(api: httpx.Client) -> None:
    created = create(api, patient()).json()
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    response = api.patch(
        f"/Patient/{created['id']}",
        content=orjson.dumps(ops),
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert response.status_code == 200, response.text
    assert response.json()["gender"] == "female"
    assert response.json()["meta"]["versionId"] == "2"
    bad = api.patch(
        f"/Patient/{created['id']}",
        content=orjson.dumps([{"op": "replace", "path": "/gender", "value": "dragon"}]),
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert bad.status_code == 422
    stale = api.patch(
        f"/Patient/{created['id']}",
        content=orjson.dumps(ops),
        headers={"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'},
    )
    assert stale.status_code == 412


def test_delete_then_gone_and_history(api: httpx.Client) -> None:
    created = create(api, patient()).json()
    pid = created["id"]
    api.put(f"/Patient/{pid}", json={**created, "gender": "female"}, headers=fhir_headers())
    deleted = api.delete(f"/Patient/{pid}")
    assert deleted.status_code == 204
    assert api.get(f"/Patient/{pid}").status_code == 410
    assert api.delete(f"/Patient/{pid}").status_code == 204  # idempotent
    history = api.get(f"/Patient/{pid}/_history").json()
    assert history["type"] == "history"
    assert history["total"] == 3
    methods = [entry["request"]["method"] for entry in history["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in history["entry"][0]
    assert api.get(f"/Patient/{pid}/_history/3").status_code == 410
    assert api.get(f"/Patient/{pid}/_history/2").json()["gender"] == "female"
    # a deleted resource is not found by search
    fnr = created["identifier"][0]["value"]
    assert api.get("/Patient", params={"identifier": fnr}).json()["total"] == 0
    # update after delete brings it back as a new version
    revived = api.put(f"/Patient/{pid}", json=created, headers=fhir_headers())
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "4"


def test_type_history_pages(api: httpx.Client) -> None:
    start = api.get("/RelatedPerson/_history", params={"_count": "1"}).json()["total"]
    child = create(api, patient()).json()
    for _ in range(3):
        create(
            api,
            {
                "resourceType": "RelatedPerson",
                "patient": {"reference": f"Patient/{child['id']}"},
            },
        )
    page = api.get("/RelatedPerson/_history", params={"_count": "2"}).json()
    assert page["total"] == start + 3
    assert len(page["entry"]) == 2
    relations = {link["relation"] for link in page["link"]}
    assert "next" in relations
    since = api.get("/RelatedPerson/_history", params={"_since": "2999-01-01"}).json()
    assert since["total"] == 0


def test_requires_authentication(server: LiveServer) -> None:
    anonymous = server.client(None)
    response = anonymous.get("/Patient")
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["issue"][0]["code"] == "login"
    assert anonymous.get("/metadata").status_code == 200


def test_forged_tokens_are_401(server: LiveServer, org: str) -> None:
    token = server.practitioner_token(org=org)
    header, payload, _signature = token.split(".")
    unsigned = header.replace(
        header, base64.urlsafe_b64encode(b'{"alg":"none"}').decode().rstrip("=")
    )
    for forged in (f"{unsigned}.{payload}.", f"{header}.{payload}.AAAA", "not-a-jwt"):
        assert server.client(forged).get("/Patient").status_code == 401


def test_scopes_gate_interactions(server: LiveServer, org: str) -> None:
    reader = server.client(server.practitioner_token(org=org, scopes="user/Patient.rs"))
    assert reader.get("/Patient").status_code == 200
    refused = reader.post("/Patient", json=patient(), headers=fhir_headers())
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["code"] == "forbidden"
    assert reader.get("/CarePlan").status_code == 403


def test_health_endpoints(server: LiveServer) -> None:
    assert httpx.get(server.base_url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.base_url + "/readyz").json() == {"status": "ready"}


def test_request_id_is_echoed(api: httpx.Client) -> None:
    response = api.get("/Patient", headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


def test_concurrent_conditional_creates_make_one_resource(api: httpx.Client) -> None:
    fnr = synthetic_fnr()
    criteria = f"identifier={FNR_SYSTEM}|{fnr}"

    def attempt(_: int) -> int:
        response = api.post(
            "/Patient", json=patient(fnr), headers=fhir_headers(**{"If-None-Exist": criteria})
        )
        return response.status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(16)))
    assert statuses.count(201) == 1
    assert set(statuses) <= {200, 201}
    assert api.get("/Patient", params={"identifier": f"{FNR_SYSTEM}|{fnr}"}).json()["total"] == 1


def test_concurrent_updates_never_lose_a_version(api: httpx.Client) -> None:
    created = create(api, patient()).json()

    def attempt(index: int) -> int:
        body = {**created, "name": [{"family": f"Nordmann{index}"}]}
        return api.put(f"/Patient/{created['id']}", json=body, headers=fhir_headers()).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(attempt, range(12)))
    assert statuses.count(200) + statuses.count(409) == 12
    history = api.get(f"/Patient/{created['id']}/_history", params={"_count": "50"}).json()
    versions = [int(e["resource"]["meta"]["versionId"]) for e in history["entry"]]
    assert sorted(versions) == list(range(1, len(versions) + 1))
    assert len(versions) == 1 + statuses.count(200)


VENDOR_SYSTEM = "https://stafett.no/fhir/sid/936451284/barnehagesystem-demo/tiltak"


def _measure(patient_id: str, record: str, text: str) -> dict[str, object]:
    return {
        "resourceType": "Task",
        "identifier": [{"system": VENDOR_SYSTEM, "value": record}],
        "status": "in-progress",
        "intent": "plan",
        "for": {"reference": f"Patient/{patient_id}"},
        "description": text,
    }


def test_conditional_update_creates_then_updates_the_one_match(api: httpx.Client) -> None:
    owner = create(api, patient()).json()["id"]
    record = f"T-{time.time_ns()}"
    url = f"/Task?identifier={VENDOR_SYSTEM}|{record}"
    first = api.put(url, json=_measure(owner, record, "Språkgruppe"), headers=fhir_headers())
    assert first.status_code == 201, first.text
    again = api.put(
        url, json=_measure(owner, record, "Språkgruppe, 4 dager"), headers=fhir_headers()
    )
    assert again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["meta"]["versionId"] == "2"
    found = api.get("/Task", params={"identifier": f"{VENDOR_SYSTEM}|{record}"}).json()
    assert found["total"] == 1


def test_conditional_update_refuses_ambiguity_and_a_foreign_id(api: httpx.Client) -> None:
    owner = create(api, patient()).json()["id"]
    record = f"T-{time.time_ns()}"
    for _ in range(2):
        create(api, _measure(owner, record, "duplikat"))
    url = f"/Task?identifier={VENDOR_SYSTEM}|{record}"
    ambiguous = api.put(url, json=_measure(owner, record, "x"), headers=fhir_headers())
    assert ambiguous.status_code == 412
    other = f"T-{time.time_ns()}"
    single = create(api, _measure(owner, other, "én")).json()["id"]
    wrong = api.put(
        f"/Task?identifier={VENDOR_SYSTEM}|{other}",
        json={**_measure(owner, other, "x"), "id": "not-the-match"},
        headers=fhir_headers(),
    )
    assert wrong.status_code == 400
    assert single not in wrong.text or "not the id of the match" in wrong.text
    assert (
        api.put("/Task", json=_measure(owner, other, "x"), headers=fhir_headers()).status_code
        == 400
    )


def test_conditional_update_in_a_transaction_resolves_references_to_it(
    api: httpx.Client,
) -> None:
    owner = create(api, patient()).json()["id"]
    record = f"T-{time.time_ns()}"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:6f3b0a52-0a7e-4c1e-9f3e-2b8f0f6a1c01",
                "resource": _measure(owner, record, "Fra fagsystemet"),
                "request": {"method": "PUT", "url": f"Task?identifier={VENDOR_SYSTEM}|{record}"},
            },
            {
                "resource": {
                    "resourceType": "Provenance",
                    "target": [{"reference": "urn:uuid:6f3b0a52-0a7e-4c1e-9f3e-2b8f0f6a1c01"}],
                    "recorded": "2026-11-22T10:00:00Z",
                    "agent": [{"who": {"display": "barnehagesystem"}}],
                },
                "request": {"method": "POST", "url": "Provenance"},
            },
        ],
    }
    locations = []
    for _ in range(2):  # the same message twice: one Task, unchanged the second time
        response = api.post("", json=bundle, headers=fhir_headers())
        assert response.status_code == 200, response.text
        entries = response.json()["entry"]
        task_location = entries[0]["response"]["location"]
        provenance_id = entries[1]["response"]["location"].split("/")[1]
        provenance = api.get(f"/Provenance/{provenance_id}").json()
        assert provenance["target"][0]["reference"] == task_location.split("/_history")[0]
        locations.append(task_location)
    assert locations[0] == locations[1]
    assert locations[0].endswith("/_history/1")
    found = api.get("/Task", params={"identifier": f"{VENDOR_SYSTEM}|{record}"}).json()
    assert found["total"] == 1
