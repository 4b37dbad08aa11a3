"""The health station simulator: a FHIR R4 server of its own, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.common.server import running
from simulators.health_station import HealthStationConfig, create_app

TOKEN = "test-token"
FHIR_JSON = "application/fhir+json"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
ORGNR = "urn:oid:2.16.578.1.12.4.1.4.101"
NORA = "15832151200"
FATHER = "22918731958"
CONNECTOR = "https://stafett.no/connector/helsestasjon"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("health")


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    config = HealthStationConfig(data_dir=data_dir, token=TOKEN, seed=True, fault_seed=5)
    with running(create_app(config)) as url:
        yield url


@pytest.fixture
def fhir(base_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": FHIR_JSON}
    with httpx.Client(base_url=base_url + "/fhir", headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def sim(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url + "/_sim", timeout=10) as client:
        yield client


def patient(fnr: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": FNR, "value": fnr}],
        "name": [{"family": "Nordmann", "given": ["Ola"]}],
    } | extra


def post(fhir: httpx.Client, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return fhir.post(
        f"/{resource['resourceType']}",
        json=resource,
        headers={"Content-Type": FHIR_JSON, **headers},
    )


def ids(bundle: dict[str, Any]) -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_health_station_needs_the_bearer_token(base_url: str) -> None:
    with httpx.Client(base_url=base_url + "/fhir") as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = client.get("/Patient", headers=headers)
            assert response.status_code == 401
            assert response.json()["issue"][0]["code"] == "login"
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
        metadata = client.get("/metadata")
    assert metadata.status_code == 200
    assert metadata.json()["fhirVersion"] == "4.0.1"


def test_health_station_seed_uses_its_own_coding(fhir: httpx.Client) -> None:
    child = fhir.get("/Patient", params={"identifier": f"{FNR}|{NORA}"}).json()
    assert child["resourceType"] == "Bundle"
    assert child["type"] == "searchset"
    assert child["total"] == 1
    child_id = ids(child)[0]
    assert child_id.startswith("hs-")
    plan = fhir.get("/CarePlan", params={"subject": f"Patient/{child_id}"}).json()["entry"][0][
        "resource"
    ]
    assert plan["category"][0]["coding"][0] | {"display": ""} == {
        "system": "http://helsestasjon.example/kodeverk/plantype",
        "code": "bti",
        "display": "",
    }
    assert plan["extension"] == [
        {"url": "http://helsestasjon.example/fhir/niva", "valueInteger": 2}
    ]
    assert plan["meta"]["source"] == "http://helsestasjon.example/fhir/journal"
    task = fhir.get("/Task", params={"patient": child_id}).json()["entry"][0]["resource"]
    assert task["code"]["coding"] == [
        {"system": "http://helsestasjon.example/kodeverk/oppgave", "code": "tiltak"}
    ]
    assert task["restriction"]["period"]["end"] == "2026-11-09"
    assert task["basedOn"] == [{"reference": f"CarePlan/{plan['id']}"}]
    consent = fhir.get("/Consent", params={"patient": f"Patient/{child_id}"}).json()
    actors = consent["entry"][0]["resource"]["provision"]["actor"]
    assert {a["reference"]["identifier"]["value"] for a in actors} == {"945182733", "912837467"}
    assert all(a["reference"]["identifier"]["system"] == ORGNR for a in actors)
    coded = fhir.get(
        "/Task", params={"code": "http://helsestasjon.example/kodeverk/oppgave|tiltak"}
    ).json()
    assert coded["total"] >= 1


def test_health_station_create_read_update_versions(fhir: httpx.Client) -> None:
    created = post(fhir, patient(FATHER, id="client-id", meta={"source": CONNECTOR}))
    assert created.status_code == 201
    assert created.headers["Content-Type"].startswith(FHIR_JSON)
    body = created.json()
    assert body["id"].startswith("hs-")  # the server's own id, not the client's
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["source"] == CONNECTOR
    assert created.headers["Location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    assert created.headers["ETag"] == 'W/"1"'

    read = fhir.get(f"/Patient/{body['id']}")
    assert read.json() == body
    assert read.headers["ETag"] == 'W/"1"'
    assert "GMT" in read.headers["Last-Modified"]

    changed = fhir.put(f"/Patient/{body['id']}", json=body | {"gender": "male"})
    assert changed.status_code == 200
    assert changed.json()["meta"]["versionId"] == "2"
    assert changed.json()["meta"]["lastUpdated"] > body["meta"]["lastUpdated"]
    same = fhir.put(f"/Patient/{body['id']}", json=changed.json())
    assert same.json()["meta"]["versionId"] == "2"  # a no-op update makes no version
    stale = fhir.put(
        f"/Patient/{body['id']}", json=body | {"gender": "other"}, headers={"If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert fhir.get(f"/Patient/{body['id']}/_history/1").json()["meta"]["versionId"] == "1"
    assert fhir.get(f"/Patient/{body['id']}/_history/9").status_code == 404

    assert fhir.get("/Patient/hs-999999").json()["issue"][0]["code"] == "not-found"
    assert fhir.put("/Patient/hs-999999", json=body | {"id": "hs-999999"}).status_code == 404
    assert fhir.put(f"/Patient/{body['id']}", json=body | {"id": "other"}).status_code == 400
    assert fhir.get("/Observation").status_code == 404
    assert fhir.delete(f"/Patient/{body['id']}").status_code == 405


@pytest.mark.parametrize(
    ("resource", "status", "expression"),
    [
        (patient(NORA, foo=1), 422, "Patient.foo"),
        (patient(NORA, birthDate="15.03.2021"), 422, "Patient.birthDate"),
        (patient("15832151201"), 422, "Patient.identifier[0]"),
        ({"resourceType": "Task", "status": "in-progress"}, 422, "Task.intent"),
        (
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": "Patient/hs-2"},
                "extension": [{"url": "http://helsestasjon.example/fhir/niva", "valueInteger": 4}],
            },
            422,
            "CarePlan.extension[0]",
        ),
    ],
)
def test_health_station_validates_resources(
    fhir: httpx.Client, resource: dict[str, Any], status: int, expression: str
) -> None:
    response = post(fhir, resource)
    assert response.status_code == status
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert expression in [e for i in outcome["issue"] for e in i.get("expression", [])]


def test_health_station_rejects_malformed_requests(fhir: httpx.Client) -> None:
    wrong_type = fhir.post("/Patient", json={"resourceType": "Task"})
    assert wrong_type.status_code == 400
    not_json = fhir.post("/Patient", content=b"{", headers={"Content-Type": FHIR_JSON})
    assert not_json.status_code == 400
    xml = fhir.post("/Patient", content=b"<Patient/>", headers={"Content-Type": "application/xml"})
    assert xml.status_code == 415
    assert fhir.get("/Patient", params={"_sort": "name"}).status_code == 400
    assert fhir.get("/Patient", params={"_lastUpdated": "gtigår"}).status_code == 400
    lenient = fhir.get("/Patient", params={"ukjent": "1"})
    assert lenient.status_code == 200
    strict = fhir.get("/Patient", params={"ukjent": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_health_station_change_discovery_pages_consistently(fhir: httpx.Client) -> None:
    everything = fhir.get("/Task", params={"_sort": "_lastUpdated", "_count": 200}).json()
    cursor = everything["entry"][-1]["resource"]["meta"]["lastUpdated"]
    child = fhir.get("/Patient", params={"identifier": NORA}).json()["entry"][0]["resource"]
    made = []
    for i in range(5):
        task = {
            "resourceType": "Task",
            "status": "requested",
            "intent": "plan",
            "description": f"Tiltak {i}",
            "for": {"reference": f"Patient/{child['id']}"},
            "identifier": [{"system": "https://stafett.no/fhir/sid/x/tiltak", "value": f"T{i}"}],
        }
        made.append(post(fhir, task).json())

    params = {"_lastUpdated": f"gt{cursor}", "_sort": "_lastUpdated", "_count": 2}
    page = fhir.get("/Task", params=params).json()
    assert page["total"] == 5
    seen = ids(page)
    # an update between pages does not shift later pages: the hits are frozen
    fhir.put(f"/Task/{made[0]['id']}", json=made[0] | {"status": "accepted"})
    while next_link := next((li["url"] for li in page["link"] if li["relation"] == "next"), None):
        page = fhir.get(next_link).json()
        seen += ids(page)
    assert seen == [m["id"] for m in made]
    newer = fhir.get(
        "/Task", params={"_lastUpdated": f"gt{made[-1]['meta']['lastUpdated']}"}
    ).json()
    assert ids(newer) == [made[0]["id"]]
    # an unencoded "+" in the offset arrives as a space and is still understood
    raw = fhir.get(f"/Task?_lastUpdated=gt{made[-1]['meta']['lastUpdated']}").json()
    assert ids(raw) == [made[0]["id"]]
    newest_first = fhir.get("/Task", params={"_sort": "-_lastUpdated", "_count": 1}).json()
    assert ids(newest_first) == [made[0]["id"]]
    assert fhir.get("/Task", params={"_count": 0}).json()["total"] >= 6
    assert (
        fhir.get("/Task", params={"identifier": "https://stafett.no/fhir/sid/x/tiltak|T3"}).json()[
            "total"
        ]
        == 1
    )
    assert fhir.get("", params={"_getpages": "gone", "_getpagesoffset": 2}).status_code == 410


def test_health_station_conditional_create_and_update(fhir: httpx.Client) -> None:
    org = {
        "resourceType": "Organization",
        "identifier": [{"system": ORGNR, "value": "912837467"}],
        "name": "Solsikken barnehage",
    }
    criteria = f"identifier={ORGNR}|912837467"
    first = post(fhir, org, **{"If-None-Exist": criteria})
    again = post(fhir, org, **{"If-None-Exist": criteria})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    updated = fhir.put(
        "/Organization", params={"identifier": f"{ORGNR}|912837467"}, json=org | {"active": True}
    )
    assert updated.json()["id"] == first.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    org2 = org | {"identifier": [{"system": ORGNR, "value": "927364514"}], "name": "Skolen"}
    created = fhir.put("/Organization", params={"identifier": f"{ORGNR}|927364514"}, json=org2)
    assert created.status_code == 201


def test_health_station_journal_writes_and_evaluations(
    fhir: httpx.Client, sim: httpx.Client
) -> None:
    registered = sim.post(
        "/barn",
        json={
            "fodselsnummer": "04868941214",
            "fornavn": "Mia",
            "etternavn": "Test",
            "fodselsdato": "1989-06-04",
        },
    )
    assert registered.status_code == 201
    assert (
        sim.post(
            "/barn",
            json={
                "fodselsnummer": "04868941214",
                "fornavn": "Mia",
                "etternavn": "Test",
                "fodselsdato": "1989-06-04",
            },
        ).status_code
        == 409
    )
    log = sim.post(
        "/logg",
        json={
            "fodselsnummer": "04868941214",
            "niva": 1,
            "oppmerksomhet": "Søvn",
            "opprettet": "2026-09-01",
        },
    ).json()
    task = sim.post(
        "/tiltak",
        json={
            "fodselsnummer": "04868941214",
            "beskrivelse": "Søvnveiledning",
            "startdato": "2026-09-07",
            "evalueringsdato": "2026-10-05",
        },
    ).json()
    assert task["basedOn"] == [{"reference": f"CarePlan/{log['id']}"}]
    evaluated = sim.post(
        f"/tiltak/{task['id']}/evaluering",
        json={"tekst": "Sover bedre", "status": "completed"},
    ).json()
    assert evaluated["note"][-1]["text"] == "Sover bedre"
    assert evaluated["status"] == "completed"
    assert evaluated["meta"]["versionId"] == "2"
    assert fhir.get(f"/Task/{task['id']}").json() == evaluated
    invalid = sim.post("/logg", json={"fodselsnummer": "04868941214", "niva": 5})
    assert invalid.status_code == 422
    level_up = sim.put(
        f"/fhir/CarePlan/{log['id']}",
        json=log
        | {"extension": [{"url": "http://helsestasjon.example/fhir/niva", "valueInteger": 2}]},
    )
    assert level_up.json()["meta"]["versionId"] == "2"
    store = sim.get("/store").json()
    assert len(store["resources"]["Task"][task["id"]]["history"]) == 2


def test_health_station_faults_return_operation_outcomes(
    base_url: str, fhir: httpx.Client, sim: httpx.Client
) -> None:
    sim.post("/faults", json={"error_rate": 0.5})
    try:
        responses = [fhir.get("/Patient", params={"_count": 1}) for _ in range(60)]
    finally:
        sim.delete("/faults")
    failures = [r for r in responses if r.status_code == 500]
    assert 15 <= len(failures) <= 45
    assert failures[0].json()["issue"][0]["code"] == "exception"

    sim.post("/faults", json={"timeout_rate": 1.0, "timeout_s": 0.5})
    try:
        with pytest.raises(httpx.TimeoutException):
            fhir.get("/Patient", timeout=0.2)
    finally:
        sim.delete("/faults")
    assert fhir.get("/Patient").status_code == 200


def test_health_station_restart_keeps_ids_and_versions(tmp_path: Path) -> None:
    config = HealthStationConfig(data_dir=tmp_path, token=TOKEN, seed=True)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        running(create_app(config)) as url,
        httpx.Client(base_url=url + "/fhir", headers=headers) as fhir,
    ):
        first = post(fhir, patient(FATHER)).json()
        updated = fhir.put(f"/Patient/{first['id']}", json=first | {"gender": "male"}).json()
    with (
        running(create_app(config)) as url,
        httpx.Client(base_url=url + "/fhir", headers=headers) as fhir,
    ):
        assert fhir.get(f"/Patient/{first['id']}").json() == updated
        assert fhir.get(f"/Patient/{first['id']}/_history/1").json() == first
        second = post(fhir, patient("12898522405")).json()
        assert int(second["id"][3:]) == int(first["id"][3:]) + 1
        assert second["meta"]["lastUpdated"] > updated["meta"]["lastUpdated"]
        assert fhir.get("/Patient").json()["total"] == 3  # seed ran once
