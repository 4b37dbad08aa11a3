"""The school connectors end to end: simulator ⇄ Kafka ⇄ Stafett on PostgreSQL.

Nora's family is known in Stafett from the kindergarten (her mother's RelatedPerson with
parental responsibility, which the school cannot tell). The school's staff register her as a
pupil with a stafettlogg, a measure and the mother's signed consent; the source opens the log
in Stafett (renewing its OAuth token as it goes). A measure the health station writes in
Stafett reaches the school system; the teacher's evaluation flows back into that Task. The
nightly CSV export becomes Tasks without overwriting richer REST imports, a re-dropped file
changes nothing and a broken row is dead-lettered by its line. The mother's withdrawal marks
the school's consents withdrawn, and nothing more reaches the school.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus import topics
from bus.kafka import KafkaBus
from connectors import ConnectorConfig, ConnectorRuntime, FileCheckpointStore
from connectors.registry import factories
from service.worker import Worker
from simulators.common.server import running
from simulators.school.app import SchoolConfig, create_app
from tests.conftest import new_postgres_database
from tests.connectors.family_support import family_bundle
from tests.support import ORGNR_SYSTEM, LiveServer, fhir_headers, live_server

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.e2e]

NORA = "15832151200"
MOTHER = "04868941214"
OLA = "12851950085"  # another child, whose family shares with the health station only
FATHER = "03828510036"
SCHOOL = "927364514"
HEALTH = "945182733"
KINDERGARTEN = "912837467"
OPERATOR = "936451284"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
SID = f"https://stafett.no/fhir/sid/{OPERATOR}/skolesystem"
MEASURE = {"system": "https://stafett.no/fhir/CodeSystem/task-type", "code": "measure"}


@dataclass
class Stack:
    server: LiveServer
    vendor: httpx.Client
    runtime: ConnectorRuntime
    worker: Worker
    bus: KafkaBus
    export_dir: Path

    def stafett(self, org: str) -> httpx.Client:
        return self.server.client(self.server.system_token(org=org))

    def store(self) -> dict[str, Any]:
        data: dict[str, Any] = self.vendor.get("/_sim/store").json()
        return data

    def records(self, collection: str) -> list[dict[str, Any]]:
        return [entry["data"] for entry in self.store()[collection].values()]


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
    vendor_dir = tmp_path_factory.mktemp("skole")
    # short-lived tokens: the source renews its token many times during the module
    vendor_app = create_app(SchoolConfig(data_dir=vendor_dir, expires_in=4))
    with (
        running(vendor_app) as vendor_url,
        live_server(database_url=database, data_dir=tmp_path_factory.mktemp("data")) as server,
    ):
        directory = server.client(server.system_token(org=SCHOOL))
        for number, name in (
            (SCHOOL, "Fjellvik skole"),
            (HEALTH, "Fjellvik helsestasjon"),
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
        # Nora's family consented at the kindergarten to sharing with the school ahead of the
        # transition; Ola's family shares with the health station only
        for org, bundle in (
            (
                KINDERGARTEN,
                family_bundle(
                    child=NORA,
                    child_name=("Nora", "Eksempelsen"),
                    birth_date="2021-03-15",
                    guardian=MOTHER,
                    custodian=KINDERGARTEN,
                    recipients=[KINDERGARTEN, SCHOOL, HEALTH],
                    with_log=True,  # the kindergarten's log: Nora has two from now on
                ),
            ),
            (
                HEALTH,
                family_bundle(
                    child=OLA,
                    child_name=("Ola", "Nordmann"),
                    birth_date="2019-05-12",
                    guardian=FATHER,
                    custodian=HEALTH,
                    recipients=[HEALTH],
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
        reader = server.system_token(org=SCHOOL, scopes="system/*.rs")
        common = {
            "organization": SCHOOL,
            "operator": OPERATOR,
            "source_system": "skolesystem",
            "poll_interval_s": 0.2,
            "retry": {"max_attempts": 4, "backoff_s": 0.1, "max_backoff_s": 1.0},
        }
        state_file = str(tmp_path_factory.mktemp("state") / "skole-lenker.json")
        rest = {
            **common,
            "system": "school",
            "settings": {
                "base_url": vendor_url,
                "client_id": "stafett",
                "client_secret": "skole-dev-secret",
                "stafett_url": server.fhir,
                "stafett_token": reader,
                "state_file": state_file,
            },
        }
        export_dir = vendor_dir / "eksport"
        runtime = ConnectorRuntime(
            bus=bus,
            connectors=[
                ConnectorConfig.model_validate({**rest, "name": "skole-inn", "kind": "source"}),
                ConnectorConfig.model_validate({**rest, "name": "skole-ut", "kind": "sink"}),
                ConnectorConfig.model_validate(
                    {
                        **common,
                        "name": "skole-csv",
                        "kind": "source",
                        "system": "school-csv",
                        "settings": {
                            "folder": str(export_dir),
                            "pattern": "tiltak-*.csv",
                            "stafett_url": server.fhir,
                            "stafett_token": reader,
                            "state_file": state_file,
                        },
                    }
                ),
            ],
            checkpoints=FileCheckpointStore(tmp_path_factory.mktemp("checkpoints")),
            factories=factories(),
        )
        runtime.start()
        try:
            with httpx.Client(base_url=vendor_url) as vendor:
                _STATE["stack"] = Stack(server, vendor, runtime, worker, bus, export_dir)
                yield _STATE["stack"]
        finally:
            runtime.stop()
            worker.stop()


def _one(stack: Stack, org: str, resource_type: str, **params: str) -> dict[str, Any] | None:
    found = stack.stafett(org).get(f"/{resource_type}", params=params)
    entries = found.json().get("entry", []) if found.status_code == 200 else []
    matches = [e["resource"] for e in entries if e.get("search", {}).get("mode") == "match"]
    return matches[0] if len(matches) == 1 else None


def _staff(stack: Stack, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = stack.vendor.request(method, f"/_sim/{path}", json=body)
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()
    return data


def _task(stack: Stack, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = stack.stafett(SCHOOL).get(f"/Task/{task_id}").json()
    return data


def _outputs(task: dict[str, Any]) -> list[str]:
    return [o["valueAnnotation"]["text"] for o in task.get("output", [])]


def test_the_school_opens_the_log_in_stafett(stack: Stack) -> None:
    pupil = _staff(
        stack,
        "POST",
        "elever",
        {
            "personnummer": NORA,
            "navn": {"fornavn": "Nora", "etternavn": "Eksempelsen"},
            "trinn": 1,
            "skole": SCHOOL,
            "stafettlogg": {
                "nivaa": 2,
                "kontaktlaerer": {"ansattnr": "L-3", "navn": "Per Lærer"},
                "aktiv": True,
                "bekymring": "Overgang fra barnehage: Nora trenger en fast voksen.",
            },
        },
    )
    _staff(
        stack,
        "POST",
        "samtykker",
        {
            "elevId": pupil["elevId"],
            "foresatt": [MOTHER],
            "signert": "2026-08-17",
            "utloper": "2027-08-16",
            "mottakere": [SCHOOL, HEALTH],
            "trukket": False,
            "vedlegg": {"pdf": "JVBERi0xLjQK"},
        },
    )
    measure = _staff(
        stack,
        "POST",
        "tiltak",
        {
            "elevId": pupil["elevId"],
            "tittel": "Fast voksen i overganger",
            "beskrivelse": "En fast voksen tar imot Nora om morgenen og etter friminutt.",
            "ansvarligEnhet": SCHOOL,
            "status": "AKTIV",
            "fra": "2026-08-17",
            "evaluerDato": "2026-11-30",
            "evaluering": None,
        },
    )
    _STATE.update(pupil=pupil["elevId"], measure=measure["tiltakId"])
    elev = f"{SID}/elev|{pupil['elevId']}"
    careplan = _wait(lambda: _one(stack, SCHOOL, "CarePlan", identifier=elev))
    assert careplan["extension"][0]["valueCoding"]["code"] == "2"
    assert careplan["status"] == "active"
    consent = _one(stack, SCHOOL, "Consent", identifier=f"{SID}/samtykke|301")
    assert consent is not None
    assert consent["status"] == "active"
    task = _wait(
        lambda: _one(stack, SCHOOL, "Task", identifier=f"{SID}/tiltak|{measure['tiltakId']}")
    )
    assert task["description"].startswith("En fast voksen")
    assert task["restriction"]["period"]["end"] == "2026-11-30"
    assert task["lastModified"] == measure["endret"]
    provenance = stack.stafett(SCHOOL).get("/Provenance", params={"target": f"Task/{task['id']}"})
    assert provenance.json()["total"] >= 1
    team = _one(stack, SCHOOL, "CareTeam", identifier=elev)
    assert team is not None
    assert [p["period"].get("end") for p in team["participant"]] == [None]
    _STATE.update(careplan=careplan["id"], task=task["id"])

    # every token expires (as after a restart of the school system): the source renews it
    assert stack.vendor.post("/_sim/tokens/expire").status_code == 200
    raised = {**pupil["stafettlogg"], "nivaa": 3}
    body = {k: v for k, v in pupil.items() if k not in ("elevId", "endret", "endretAv")}
    _staff(stack, "PUT", f"elever/{pupil['elevId']}", {**body, "stafettlogg": raised})
    _wait(
        lambda: (
            stack.stafett(SCHOOL)
            .get(f"/CarePlan/{careplan['id']}")
            .json()["extension"][0]["valueCoding"]["code"]
            == "3"
        )
    )
    team = _one(stack, SCHOOL, "CareTeam", identifier=elev)
    assert team is not None
    assert len(team["participant"]) == 1  # the same stafettholder, not added twice
    status = stack.runtime.status("skole-inn")
    assert status.dead_lettered == 0, status.last_error


def test_a_measure_written_in_stafett_reaches_the_school_system(stack: Stack) -> None:
    school = _one(stack, SCHOOL, "Organization", identifier=f"{ORGNR_SYSTEM}|{SCHOOL}")
    assert school is not None
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "code": {"coding": [MEASURE]},
        "basedOn": [{"reference": f"CarePlan/{_STATE['careplan']}"}],
        "for": {"reference": _wait(lambda: _task(stack, _STATE["task"]))["for"]["reference"]},
        "owner": {"reference": f"Organization/{school['id']}"},
        "description": "Samtale med helsesykepleier hver fjortende dag",
        "restriction": {"period": {"start": "2026-11-23", "end": "2027-01-15"}},
    }
    created = stack.stafett(HEALTH).post("/Task", json=task, headers=fhir_headers())
    assert created.status_code == 201, created.text
    _STATE["health_task"] = created.json()["id"]

    def arrived() -> list[dict[str, Any]]:
        return [
            m for m in stack.records("tiltak") if "helsesykepleier" in str(m.get("beskrivelse", ""))
        ]

    found = _wait(arrived)
    assert len(found) == 1
    measure = found[0]
    assert measure["elevId"] == _STATE["pupil"]
    assert measure["ansvarligEnhet"] == SCHOOL
    assert measure["evaluerDato"] == "2027-01-15"
    assert measure["status"] == "PLANLAGT"
    assert measure["endretAv"] == "stafett"
    _STATE["school_copy"] = measure["tiltakId"]


def test_an_evaluation_in_the_school_flows_back_into_the_stafett_task(stack: Stack) -> None:
    copy_id = _STATE["school_copy"]
    record = next(m for m in stack.records("tiltak") if m["tiltakId"] == copy_id)
    body = {k: v for k, v in record.items() if k not in ("tiltakId", "endret", "endretAv")}
    evaluation = {"dato": "2027-01-15", "tekst": "Nora forteller mer om hvordan dagen har vært."}
    _staff(stack, "PUT", f"tiltak/{copy_id}", {**body, "status": "AKTIV", "evaluering": evaluation})

    task = _wait(
        lambda: (t := _task(stack, _STATE["health_task"])).get("output") and t,
    )
    assert _outputs(task) == [evaluation["tekst"]]
    assert task["status"] == "in-progress"
    assert task["description"] == "Samtale med helsesykepleier hver fjortende dag"
    assert {"system": f"{SID}/tiltak", "value": str(copy_id)} in task["identifier"]
    assert task["basedOn"] == [{"reference": f"CarePlan/{_STATE['careplan']}"}]
    same = stack.stafett(SCHOOL).get("/Task", params={"identifier": f"{SID}/tiltak|{copy_id}"})
    assert same.json()["total"] == 1  # the health station's Task, not a second one

    # the health station pauses the measure: the school's copy is updated, not duplicated
    paused = {**task, "status": "on-hold"}
    updated = stack.stafett(HEALTH).put(f"/Task/{task['id']}", json=paused, headers=fhir_headers())
    assert updated.status_code == 200, updated.text
    _wait(
        lambda: (
            next(m for m in stack.records("tiltak") if m["tiltakId"] == copy_id)["status"]
            == "PAUSET"
        )
    )
    copy = next(m for m in stack.records("tiltak") if m["tiltakId"] == copy_id)
    assert copy["evaluering"] == evaluation
    assert sum("helsesykepleier" in str(m.get("beskrivelse")) for m in stack.records("tiltak")) == 1


def test_the_nightly_export_becomes_tasks_without_overwriting_rest_imports(stack: Stack) -> None:
    stack.runtime.pause("skole-inn")  # only the CSV export tells Stafett about the new measure
    measure = _staff(
        stack,
        "POST",
        "tiltak",
        {
            "elevId": _STATE["pupil"],
            "tittel": "Leselyst i liten gruppe",
            "beskrivelse": "Tre elever leser sammen med spesialpedagog.",
            "ansvarligEnhet": SCHOOL,
            "status": "PLANLAGT",
            "fra": None,
            "evaluerDato": "2027-02-01",
            "evaluering": None,
        },
    )
    exported = _staff(stack, "POST", "export", {"dato": "2026-09-07"})
    assert exported["rader"] == 3
    identifier = f"{SID}/tiltak|{measure['tiltakId']}"
    task = _wait(lambda: _one(stack, SCHOOL, "Task", identifier=identifier))
    assert task["code"]["text"] == "Leselyst i liten gruppe"
    assert task["status"] == "accepted"
    assert task["lastModified"] == measure["endret"]
    assert "description" not in task  # the export has none
    # the row names the pupil by personnummer only; of Nora's two logs, the school's is meant
    assert task["basedOn"] == [{"reference": f"CarePlan/{_STATE['careplan']}"}]
    # the REST-imported measures kept what the export does not carry
    rest = _task(stack, _STATE["task"])
    assert rest["description"].startswith("En fast voksen")
    health = _task(stack, _STATE["health_task"])
    assert _outputs(health) == ["Nora forteller mer om hvordan dagen har vært."]
    assert stack.runtime.status("skole-csv").records_out == 1
    _STATE["csv_task"] = task


def test_a_redropped_export_changes_nothing(stack: Stack) -> None:
    before = stack.runtime.offsets("skole-csv")["checkpoint"]["files"]["tiltak-20260907.csv"]
    time.sleep(0.05)  # a new mtime
    _staff(stack, "POST", "export", {"dato": "2026-09-07"})
    _wait(
        lambda: (
            stack.runtime.offsets("skole-csv")["checkpoint"]["files"]["tiltak-20260907.csv"][
                "mtime_ns"
            ]
            != before["mtime_ns"]
        )
    )
    assert stack.runtime.status("skole-csv").records_out == 1
    task = _task(stack, _STATE["csv_task"]["id"])
    assert task["meta"]["versionId"] == _STATE["csv_task"]["meta"]["versionId"]


def test_a_broken_row_is_dead_lettered_by_its_line(stack: Stack) -> None:
    header = "tiltak_id;personnummer;tittel;status;fra_dato;evaluer_dato;ansvarlig_enhet;endret"
    rows = [
        header,
        "9901;15832151200;Ukjent status;KANSKJE;;2027-01-01;927364514;2026-09-08T10:00:00+02:00",
        "9902;15832151200;For få felt;AKTIV",
    ]
    path = stack.export_dir / "tiltak-20260908.csv"
    tmp = stack.export_dir / ".tiltak-20260908.part"
    tmp.write_text("\r\n".join(rows) + "\r\n", encoding="utf-8")
    tmp.replace(path)

    with stack.bus.consumer([topics.DEAD_LETTER], f"school-dlq-{time.time_ns()}") as consumer:
        reasons: dict[str, str] = {}

        def dead() -> bool:
            for message in consumer.poll(0.5):
                source = (message.header("stafett-dlq-source") or b"").decode()
                if source.startswith("skole-csv/"):
                    reasons[source] = (message.header("stafett-dlq-reason") or b"").decode()
            return len(reasons) == 2

        _wait(dead)
    assert set(reasons) == {
        "skole-csv/tiltak-20260908.csv:line 2",
        "skole-csv/tiltak-20260908.csv:line 3",
    }
    assert "line 2" in reasons["skole-csv/tiltak-20260908.csv:line 2"]
    assert "status" in reasons["skole-csv/tiltak-20260908.csv:line 2"]
    assert "expected 8 fields" in reasons["skole-csv/tiltak-20260908.csv:line 3"]
    stack.runtime.resume("skole-inn")


def test_withdrawal_in_stafett_marks_the_school_consents_withdrawn(stack: Stack) -> None:
    patient = _task(stack, _STATE["task"])["for"]["reference"]
    mother = stack.server.client(
        stack.server.issuer.issue_citizen(pid=MOTHER, audience=stack.server.settings.audience)
    )
    consents = mother.get("/Consent", params={"patient": patient}).json()["entry"]
    naming_school = [
        e["resource"]
        for e in consents
        if SCHOOL in str(e["resource"]["provision"]) and e["resource"]["status"] == "active"
    ]
    assert len(naming_school) == 2  # the kindergarten's and the school's
    for consent in naming_school:
        withdrawn = mother.put(
            f"/Consent/{consent['id']}",
            json={**consent, "status": "inactive"},
            headers=fhir_headers(),
        )
        assert withdrawn.status_code == 200, withdrawn.text
    _wait(lambda: all(c["trukket"] for c in stack.records("samtykker")))
    consents_at_school = stack.records("samtykker")
    assert [c["endretAv"] for c in consents_at_school] == ["stafett"]
    assert stack.runtime.status("skole-ut").dead_lettered == 0


def test_a_child_whose_consent_does_not_name_the_school_never_reaches_it(stack: Stack) -> None:
    health = stack.stafett(HEALTH)
    log = _one(stack, HEALTH, "CarePlan", **{"subject.identifier": f"{FNR}|{OLA}"})
    assert log is not None
    school = _one(stack, HEALTH, "Organization", identifier=f"{ORGNR_SYSTEM}|{SCHOOL}")
    assert school is not None
    refused = stack.worker.counters.refused
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "code": {"coding": [MEASURE]},
        "basedOn": [{"reference": f"CarePlan/{log['id']}"}],
        "for": log["subject"],
        "owner": {"reference": f"Organization/{school['id']}"},
        "description": "Ola: samtale om skolestart (skal ikke til skolen)",
    }
    created = health.post("/Task", json=task, headers=fhir_headers())
    assert created.status_code == 201, created.text
    _wait(lambda: stack.worker.counters.refused > refused)
    time.sleep(1.0)  # a delivery, had there been one, would have been applied by now

    store = stack.store()
    measures = [e["data"] for e in store["tiltak"].values()]
    assert not any("Ola" in str(m.get("beskrivelse")) for m in measures)
    assert sorted(m["tittel"][:12] for m in measures) == [
        "Fast voksen ",
        "Leselyst i l",
        "Samtale med ",
    ]
    assert [p["personnummer"] for p in (e["data"] for e in store["elever"].values())] == [NORA]
    assert [c["trukket"] for c in (e["data"] for e in store["samtykker"].values())] == [True]
    for name in ("skole-inn", "skole-ut"):
        status = stack.runtime.status(name)
        assert status.dead_lettered == 0, (name, status.last_error)
