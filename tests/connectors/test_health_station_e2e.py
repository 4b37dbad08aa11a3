"""The health-station connector end to end: its FHIR server ⇄ Kafka ⇄ Stafett on PostgreSQL.

Nora's family is known in Stafett from the kindergarten, whose consent names the health
station and the school. The station's staff register Nora, open her log, add a measure and
record the mother's signed consent in their journal; the source re-codes them into Stafett.
A measure the school writes in Stafett reaches the station's server (named by the station's
own Patient, log and Organization), the nurse's evaluation flows back into that Task, and
the kindergarten's log reaches the station as a copy that is never sent back. The mother's
withdrawal sets the station's Consents inactive; a child whose consent does not name the
station never reaches it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bus import topics
from bus.kafka import KafkaBus
from connectors import ConnectorConfig, ConnectorRuntime, FileCheckpointStore
from connectors.registry import factories
from service.worker import Worker
from simulators.common.server import running
from simulators.health_station.app import HealthStationConfig, create_app
from tests.conftest import new_postgres_database
from tests.connectors.family_support import family_bundle
from tests.support import ORGNR_SYSTEM, LiveServer, fhir_headers, live_server

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.e2e]

NORA = "15832151200"
MOTHER = "04868941214"
OLA = "12851950085"  # another child, whose family shares with the school only
FATHER = "03828510036"
HEALTH = "945182733"
SCHOOL = "927364514"
KINDERGARTEN = "912837467"
OPERATOR = "936451284"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
SID = f"https://stafett.no/fhir/sid/{OPERATOR}/helsestasjon-fhir"
OWN_SOURCE = "https://stafett.no/connectors/helsestasjon"
TOKEN = "stasjon-token"
MEASURE = {"system": "https://stafett.no/fhir/CodeSystem/task-type", "code": "measure"}
IRCP = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}


@dataclass
class Stack:
    server: LiveServer
    vendor: httpx.Client
    runtime: ConnectorRuntime
    worker: Worker
    bus: KafkaBus

    def stafett(self, org: str) -> httpx.Client:
        return self.server.client(self.server.system_token(org=org))

    def station(self, resource_type: str) -> list[dict[str, Any]]:
        store = self.vendor.get("/_sim/store").json()
        return [e["current"] for e in store["resources"][resource_type].values()]


_STATE: dict[str, Any] = {}


def _wait(check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out; {_diagnosis()}"
        time.sleep(0.2)


def _diagnosis() -> str:
    stack: Stack | None = _STATE.get("stack")
    if stack is None:
        return ""
    statuses = [stack.runtime.status(n) for n in stack.runtime.names()]
    reasons = []
    with stack.bus.consumer([topics.DEAD_LETTER], f"diagnosis-{time.time_ns()}") as consumer:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for message in consumer.poll(0.5):
                reasons.append((message.header("stafett-dlq-reason") or b"").decode()[:600])
    return f"connectors: {statuses}; worker: {stack.worker.counters}; dead: {reasons[-5:]}"


@pytest.fixture(scope="module")
def stack(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database = new_postgres_database(postgres_admin_url)
    vendor_app = create_app(HealthStationConfig(data_dir=None, token=TOKEN))
    with (
        running(vendor_app) as vendor_url,
        live_server(database_url=database, data_dir=tmp_path_factory.mktemp("data")) as server,
    ):
        directory = server.client(server.system_token(org=HEALTH))
        for number, name in (
            (HEALTH, "Fjellvik helsestasjon"),
            (SCHOOL, "Fjellvik skole"),
            (KINDERGARTEN, "Solsikken barnehage"),
            (OPERATOR, "Kommunen"),
        ):
            created = directory.post(
                "/Organization",
                json={
                    "resourceType": "Organization",
                    "identifier": [{"system": ORGNR_SYSTEM, "value": number}],
                    "name": name,
                },
                headers=fhir_headers(),
            )
            assert created.status_code == 201, created.text
        for org, bundle in (
            (
                KINDERGARTEN,
                family_bundle(
                    child=NORA,
                    child_name=("Nora", "Eksempelsen"),
                    birth_date="2021-03-15",
                    guardian=MOTHER,
                    custodian=KINDERGARTEN,
                    recipients=[KINDERGARTEN, HEALTH, SCHOOL],
                    with_log=True,
                ),
            ),
            (
                SCHOOL,
                family_bundle(
                    child=OLA,
                    child_name=("Ola", "Nordmann"),
                    birth_date="2019-05-12",
                    guardian=FATHER,
                    custodian=SCHOOL,
                    recipients=[SCHOOL],
                    with_log=True,
                ),
            ),
        ):
            family = server.client(server.system_token(org=org)).post(
                "", json=bundle, headers=fhir_headers()
            )
            assert family.status_code == 200, family.text
        bus = KafkaBus(
            kafka_bootstrap,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=20000,
            fetch_max_wait_ms=20,
        )
        worker = Worker(server.settings, bus=bus, components=("relay", "router", "ingest"))
        worker.start()
        common = {
            "system": "health_station",
            "organization": HEALTH,
            "operator": OPERATOR,
            "source_system": "helsestasjon-fhir",
            "poll_interval_s": 0.2,
            "retry": {"max_attempts": 4, "backoff_s": 0.1, "max_backoff_s": 1.0},
            "settings": {
                "base_url": vendor_url,
                "token": TOKEN,
                "page_size": 2,  # small pages: the source follows `next` links
                "source_uri": OWN_SOURCE,
                "stafett_url": server.fhir,
                "stafett_token": server.system_token(org=HEALTH, scopes="system/*.rs"),
            },
        }
        runtime = ConnectorRuntime(
            bus=bus,
            connectors=[
                ConnectorConfig.model_validate({**common, "name": "hs-inn", "kind": "source"}),
                ConnectorConfig.model_validate({**common, "name": "hs-ut", "kind": "sink"}),
            ],
            checkpoints=FileCheckpointStore(tmp_path_factory.mktemp("checkpoints")),
            factories=factories(),
        )
        runtime.start()
        try:
            with httpx.Client(base_url=vendor_url) as vendor:
                _STATE["stack"] = Stack(server, vendor, runtime, worker, bus)
                yield _STATE["stack"]
        finally:
            runtime.stop()
            worker.stop()


def _one(stack: Stack, org: str, resource_type: str, **params: str) -> dict[str, Any] | None:
    found = stack.stafett(org).get(f"/{resource_type}", params=params)
    entries = found.json().get("entry", []) if found.status_code == 200 else []
    matches = [e["resource"] for e in entries if e.get("search", {}).get("mode") == "match"]
    return matches[0] if len(matches) == 1 else None


def _staff(stack: Stack, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.vendor.post(f"/_sim/{path}", json=body)
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()
    return data


def _read(stack: Stack, org: str, reference: str) -> dict[str, Any]:
    data: dict[str, Any] = stack.stafett(org).get(f"/{reference}").json()
    return data


def test_the_station_opens_the_log_in_stafett(stack: Stack) -> None:
    station = _staff(
        stack,
        "fhir/Organization",
        {
            "resourceType": "Organization",
            "identifier": [{"system": ORGNR_SYSTEM, "value": HEALTH}],
            "name": "Fjellvik helsestasjon",
        },
    )
    patient = _staff(
        stack,
        "barn",
        {
            "fodselsnummer": NORA,
            "fornavn": "Nora",
            "etternavn": "Eksempelsen",
            "fodselsdato": "2021-03-15",
            "kjonn": "female",
        },
    )
    plan = _staff(
        stack,
        "logg",
        {
            "fodselsnummer": NORA,
            "niva": 2,
            "oppmerksomhet": "Språkutvikling: Nora sier lite i grupper.",
            "opprettet": "2026-08-31",
        },
    )
    measure = _staff(
        stack,
        "tiltak",
        {
            "fodselsnummer": NORA,
            "beskrivelse": "Samtale med helsesykepleier hver fjerde uke",
            "startdato": "2026-09-14",
            "evalueringsdato": "2026-11-09",
        },
    )
    consent = _staff(
        stack,
        "fhir/Consent",
        {
            "resourceType": "Consent",
            "status": "active",
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient['id']}"},
            "dateTime": "2026-08-31T10:40:00+02:00",
            "performer": [
                {"type": "RelatedPerson", "identifier": {"system": FNR, "value": MOTHER}}
            ],
            "organization": [{"reference": f"Organization/{station['id']}"}],
            "sourceAttachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK"},
            "provision": {
                "type": "permit",
                "period": {"start": "2026-08-31", "end": "2027-08-31"},
                "actor": [
                    {
                        "role": IRCP,
                        "reference": {"identifier": {"system": ORGNR_SYSTEM, "value": org}},
                    }
                    for org in (HEALTH, SCHOOL)
                ],
            },
        },
    )
    _STATE.update(station=station["id"], patient=patient["id"], plan=plan["id"])
    careplan = _wait(
        lambda: _one(stack, HEALTH, "CarePlan", identifier=f"{SID}/careplan|{plan['id']}")
    )
    assert careplan["extension"][0]["valueCoding"]["code"] == "2"
    assert careplan["description"].startswith("Språkutvikling")
    stafett_consent = _one(stack, HEALTH, "Consent", identifier=f"{SID}/consent|{consent['id']}")
    assert stafett_consent is not None
    assert stafett_consent["status"] == "active"
    task = _wait(lambda: _one(stack, HEALTH, "Task", identifier=f"{SID}/task|{measure['id']}"))
    assert task["restriction"]["period"]["end"] == "2026-11-09"
    assert task["basedOn"] == [{"reference": f"CarePlan/{careplan['id']}"}]
    owner = _read(stack, HEALTH, task["owner"]["reference"])
    assert owner["identifier"][0]["value"] == HEALTH
    provenance = stack.stafett(HEALTH).get("/Provenance", params={"target": f"Task/{task['id']}"})
    assert provenance.json()["total"] >= 1
    _STATE.update(careplan=careplan["id"], child=task["for"]["reference"])
    status = stack.runtime.status("hs-inn")
    assert status.dead_lettered == 0, status.last_error


def test_a_measure_written_in_stafett_reaches_the_station(stack: Stack) -> None:
    health = _one(stack, SCHOOL, "Organization", identifier=f"{ORGNR_SYSTEM}|{HEALTH}")
    assert health is not None
    task = {
        "resourceType": "Task",
        "status": "accepted",
        "intent": "plan",
        "code": {"coding": [MEASURE]},
        "basedOn": [{"reference": f"CarePlan/{_STATE['careplan']}"}],
        "for": {"reference": _STATE["child"]},
        "owner": {"reference": f"Organization/{health['id']}"},
        "authoredOn": "2026-11-20T10:00:00+01:00",
        "description": "Helsesykepleier deltar på foreldremøte om språk",
        "restriction": {"period": {"start": "2026-11-23", "end": "2027-01-15"}},
    }
    created = stack.stafett(SCHOOL).post("/Task", json=task, headers=fhir_headers())
    assert created.status_code == 201, created.text
    _STATE["school_task"] = created.json()["id"]

    def arrived() -> list[dict[str, Any]]:
        return [t for t in stack.station("Task") if "foreldremøte" in t.get("description", "")]

    copy = _wait(arrived)[0]
    assert copy["code"]["coding"][0]["code"] == "tiltak"
    assert copy["meta"]["source"] == OWN_SOURCE
    assert {"system": "https://stafett.no/fhir/id/Task", "value": _STATE["school_task"]} in copy[
        "identifier"
    ]
    assert copy["for"]["reference"] == f"Patient/{_STATE['patient']}"
    assert copy["basedOn"] == [{"reference": f"CarePlan/{_STATE['plan']}"}]
    assert copy["owner"] == {"reference": f"Organization/{_STATE['station']}"}
    assert copy["restriction"]["period"]["end"] == "2027-01-15"
    _STATE["copy"] = copy["id"]

    # the kindergarten raises the level of its own log: the station gets a copy
    kindergarten = stack.stafett(KINDERGARTEN)
    logs = kindergarten.get("/CarePlan", params={"subject": _STATE["child"]}).json()["entry"]
    theirs = next(e["resource"] for e in logs if e["resource"]["id"] != _STATE["careplan"])
    raised = {**theirs, "description": "Barnehagen: språk og samspill"}
    raised["extension"][0]["valueCoding"]["code"] = "2"
    updated = kindergarten.put(f"/CarePlan/{theirs['id']}", json=raised, headers=fhir_headers())
    assert updated.status_code == 200, updated.text
    plans = _wait(
        lambda: [p for p in stack.station("CarePlan") if "Barnehagen" in p.get("description", "")]
    )
    assert plans[0]["extension"] == [
        {"url": "http://helsestasjon.example/fhir/niva", "valueInteger": 2}
    ]
    assert plans[0]["subject"]["reference"] == f"Patient/{_STATE['patient']}"
    _STATE["kindergarten_log"] = theirs["id"]


def test_an_evaluation_in_the_station_flows_back_into_the_stafett_task(stack: Stack) -> None:
    evaluation = _staff(
        stack,
        f"tiltak/{_STATE['copy']}/evaluering",
        {
            "tekst": "Foreldrene leser for Nora hver kveld.",
            "tidspunkt": "2027-01-15T10:00:00+01:00",
        },
    )
    assert evaluation["meta"]["source"] != OWN_SOURCE

    def evaluated() -> dict[str, Any] | None:
        task = _read(stack, SCHOOL, f"Task/{_STATE['school_task']}")
        return task if task.get("output") else None

    task = _wait(evaluated)
    assert [o["valueAnnotation"]["text"] for o in task["output"]] == [
        "Foreldrene leser for Nora hver kveld."
    ]
    assert task["authoredOn"] == "2026-11-20T10:00:00+01:00"  # Stafett's own, kept
    assert {"system": f"{SID}/task", "value": _STATE["copy"]} in task["identifier"]
    assert task["basedOn"] == [{"reference": f"CarePlan/{_STATE['careplan']}"}]

    # the school puts the measure on hold: the station's copy follows, notes kept, no new copy
    held = stack.stafett(SCHOOL).put(
        f"/Task/{task['id']}", json={**task, "status": "on-hold"}, headers=fhir_headers()
    )
    assert held.status_code == 200, held.text

    def on_hold() -> dict[str, Any] | None:
        found = [t for t in stack.station("Task") if t["id"] == _STATE["copy"]]
        return found[0] if found and found[0]["status"] == "on-hold" else None

    copy = _wait(on_hold)
    assert [n["text"] for n in copy["note"]] == ["Foreldrene leser for Nora hver kveld."]
    assert sum("foreldremøte" in t.get("description", "") for t in stack.station("Task")) == 1
    # the kindergarten's log came to the station as a copy, and never went back as a new log
    logs = stack.stafett(HEALTH).get("/CarePlan", params={"subject": _STATE["child"]}).json()
    assert logs["total"] == 2


def test_withdrawal_in_stafett_sets_the_station_consents_inactive(stack: Stack) -> None:
    mother = stack.server.client(
        stack.server.issuer.issue_citizen(pid=MOTHER, audience=stack.server.settings.audience)
    )
    consents = mother.get("/Consent", params={"patient": _STATE["child"]}).json()["entry"]
    naming_station = [
        e["resource"]
        for e in consents
        if HEALTH in str(e["resource"]["provision"]) and e["resource"]["status"] == "active"
    ]
    assert len(naming_station) == 2  # the kindergarten's and the station's
    for consent in naming_station:
        withdrawn = mother.put(
            f"/Consent/{consent['id']}",
            json={**consent, "status": "inactive"},
            headers=fhir_headers(),
        )
        assert withdrawn.status_code == 200, withdrawn.text
    _wait(lambda: all(c["status"] == "inactive" for c in stack.station("Consent")))
    consents_at_station = stack.station("Consent")
    # the station's own, withdrawn by the sink, and the kindergarten's, delivered withdrawn
    # while the station's own consent still let the station see the log
    assert [c["meta"]["source"] for c in consents_at_station] == [OWN_SOURCE, OWN_SOURCE]
    copies = [c for c in consents_at_station if "stafett.no/fhir/id/Consent" in str(c)]
    assert len(copies) == 1
    assert stack.runtime.status("hs-ut").dead_lettered == 0


def test_a_child_whose_consent_does_not_name_the_station_never_reaches_it(stack: Stack) -> None:
    school = stack.stafett(SCHOOL)
    log = _one(stack, SCHOOL, "CarePlan", **{"subject.identifier": f"{FNR}|{OLA}"})
    assert log is not None
    health = _one(stack, SCHOOL, "Organization", identifier=f"{ORGNR_SYSTEM}|{HEALTH}")
    assert health is not None
    refused = stack.worker.counters.refused
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "code": {"coding": [MEASURE]},
        "basedOn": [{"reference": f"CarePlan/{log['id']}"}],
        "for": log["subject"],
        "owner": {"reference": f"Organization/{health['id']}"},
        "description": "Ola: henvisning til helsestasjonen (skal ikke dit)",
    }
    created = school.post("/Task", json=task, headers=fhir_headers())
    assert created.status_code == 201, created.text
    _wait(lambda: stack.worker.counters.refused > refused)
    time.sleep(1.0)  # a delivery, had there been one, would have been applied by now

    patients = stack.station("Patient")
    assert [p["identifier"][0]["value"] for p in patients] == [NORA]
    tasks = stack.station("Task")
    assert not any("Ola" in t.get("description", "") for t in tasks)
    assert sorted(t["description"][:20] for t in tasks) == [
        "Helsesykepleier delt",
        "Samtale med helsesyk",
    ]
    plans = stack.station("CarePlan")
    assert len(plans) == 2  # the station's own log and the kindergarten's copy
    assert all(c["status"] == "inactive" for c in stack.station("Consent"))
    for name in ("hs-inn", "hs-ut"):
        status = stack.runtime.status(name)
        assert status.dead_lettered == 0, (name, status.last_error)
