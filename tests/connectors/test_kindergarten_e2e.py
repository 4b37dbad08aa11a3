"""The kindergarten connector end to end: simulator ⇄ Kafka ⇄ Stafett on PostgreSQL.

The kindergarten system's staff register a child, a measure and the family's signed consent;
the source connector opens the log in Stafett; a measure the health station writes in Stafett
reaches the kindergarten system through the sink; an evaluation written in the kindergarten
flows back; the family's withdrawal in Stafett makes the kindergarten system mark the consent
withdrawn and hide the child.
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
from simulators.kindergarten.app import KindergartenConfig, create_app
from tests.conftest import new_postgres_database
from tests.support import ORGNR_SYSTEM, LiveServer, fhir_headers, live_server

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.e2e]

NORA = "15832151200"
MOTHER = "04868941214"
KINDERGARTEN = "912837467"
HEALTH = "945182733"
OPERATOR = "936451284"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"


@dataclass
class Stack:
    server: LiveServer
    vendor: httpx.Client
    runtime: ConnectorRuntime
    worker: Worker

    def stafett(self, org: str) -> httpx.Client:
        return self.server.client(self.server.system_token(org=org))

    def store(self) -> dict[str, Any]:
        data: dict[str, Any] = self.vendor.get("/_sim/store").json()
        return data


_STATE: dict[str, Any] = {}


def _wait(check: Callable[[], Any], timeout: float = 60.0) -> Any:
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
    return f"connectors: {statuses}; worker: {stack.worker.counters}"


@pytest.fixture(scope="module")
def stack(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database = new_postgres_database(postgres_admin_url)
    vendor_app = create_app(KindergartenConfig(data_dir=None, api_key="nokkel", seed=True))
    with (
        running(vendor_app) as vendor_url,
        live_server(database_url=database, data_dir=tmp_path_factory.mktemp("data")) as server,
    ):
        directory = server.client(server.system_token(org=KINDERGARTEN))
        for number, name in (
            (KINDERGARTEN, "Solsikken barnehage"),
            (HEALTH, "Helsestasjonen"),
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
            "system": "kindergarten",
            "organization": KINDERGARTEN,
            "operator": OPERATOR,
            "source_system": "barnehagesystem",
            "poll_interval_s": 0.2,
            "retry": {"max_attempts": 4, "backoff_s": 0.1, "max_backoff_s": 1.0},
            "settings": {
                "base_url": vendor_url,
                "api_key": "nokkel",
                "stafett_url": server.fhir,
                "stafett_token": server.system_token(org=KINDERGARTEN, scopes="system/*.rs"),
            },
        }
        runtime = ConnectorRuntime(
            bus=bus,
            connectors=[
                ConnectorConfig.model_validate(
                    {**common, "name": "barnehage-inn", "kind": "source"}
                ),
                ConnectorConfig.model_validate({**common, "name": "barnehage-ut", "kind": "sink"}),
            ],
            checkpoints=FileCheckpointStore(tmp_path_factory.mktemp("checkpoints")),
            factories=factories(),
        )
        runtime.start()
        try:
            with httpx.Client(base_url=vendor_url, headers={"X-Api-Key": "nokkel"}) as vendor:
                _STATE["stack"] = Stack(server, vendor, runtime, worker)
                yield _STATE["stack"]
        finally:
            runtime.stop()
            worker.stop()


def _patient(stack: Stack) -> dict[str, Any] | None:
    found = stack.stafett(KINDERGARTEN).get("/Patient", params={"identifier": f"{FNR}|{NORA}"})
    entries = found.json().get("entry", []) if found.status_code == 200 else []
    return entries[0]["resource"] if entries else None


def test_the_kindergarten_opens_the_log_in_stafett(stack: Stack) -> None:
    patient = _wait(lambda: _patient(stack))
    kindergarten = stack.stafett(KINDERGARTEN)
    logs = kindergarten.get("/CarePlan", params={"subject": f"Patient/{patient['id']}"}).json()
    assert logs["total"] == 1
    careplan = logs["entry"][0]["resource"]
    assert careplan["extension"][0]["valueCoding"]["code"] == "2"
    consents = kindergarten.get("/Consent", params={"patient": f"Patient/{patient['id']}"}).json()
    assert consents["total"] == 1
    assert consents["entry"][0]["resource"]["status"] == "active"
    tasks = _wait(
        lambda: kindergarten.get("/Task", params={"patient": patient["id"]}).json().get("entry")
    )
    assert tasks[0]["resource"]["restriction"]["period"]["end"] == "2026-10-19"
    status = stack.runtime.status("barnehage-inn")
    assert status.records_out >= 2
    assert status.dead_lettered == 0, status.last_error


def test_a_measure_written_in_stafett_reaches_the_kindergarten_system(stack: Stack) -> None:
    patient = _wait(lambda: _patient(stack))
    health = stack.stafett(HEALTH)
    owner = (
        stack.stafett(KINDERGARTEN)
        .get("/Organization", params={"identifier": f"{ORGNR_SYSTEM}|{KINDERGARTEN}"})
        .json()["entry"][0]["resource"]["id"]
    )
    careplan = (
        stack.stafett(KINDERGARTEN)
        .get("/CarePlan", params={"subject": f"Patient/{patient['id']}"})
        .json()["entry"][0]["resource"]["id"]
    )
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "code": {
            "coding": [
                {"system": "https://stafett.no/fhir/CodeSystem/task-type", "code": "measure"}
            ]
        },
        "basedOn": [{"reference": f"CarePlan/{careplan}"}],
        "for": {"reference": f"Patient/{patient['id']}"},
        "owner": {"reference": f"Organization/{owner}"},
        "description": "Samtale med helsesykepleier hver fjortende dag",
        "restriction": {"period": {"start": "2026-11-23", "end": "2027-01-15"}},
    }
    created = health.post("/Task", json=task, headers=fhir_headers())
    assert created.status_code == 201, created.text

    def arrived() -> list[dict[str, Any]]:
        return [
            m
            for m in stack.store()["tiltak"].values()
            if "helsesykepleier" in str(m.get("data", m).get("beskrivelse", ""))
        ]

    found = _wait(arrived)
    measure = found[0].get("data", found[0])
    assert measure["evalueringsdato"] == "2027-01-15"
    assert measure["ansvarlig"] == KINDERGARTEN
    # a kindergarten teacher evaluates it there: the evaluation comes back to the same Task
    evaluated = stack.vendor.post(
        f"/_sim/tiltak/{measure['id']}/evalueringer",
        json={"dato": "2026-12-01", "tekst": "Fungerer godt", "ansattId": "A-17"},
    )
    assert evaluated.status_code in (200, 201), evaluated.text

    def evaluated_in_stafett() -> list[dict[str, Any]]:
        bundle = health.get("/Task", params={"patient": patient["id"], "_count": "100"}).json()
        return [
            e["resource"]
            for e in bundle.get("entry", [])
            if "helsesykepleier" in e["resource"].get("description", "")
        ]

    tasks = _wait(lambda: [t for t in evaluated_in_stafett() if t.get("output")])
    assert len(evaluated_in_stafett()) == 1  # the same Task, not a copy
    assert tasks[0]["id"] == created.json()["id"]
    assert tasks[0]["output"][0]["valueAnnotation"]["text"] == "Fungerer godt"
    assert len(arrived()) == 1  # and no second measure in the kindergarten system


def test_withdrawal_in_stafett_hides_the_child_in_the_kindergarten_system(stack: Stack) -> None:
    patient = _wait(lambda: _patient(stack))
    mother = stack.server.client(
        stack.server.issuer.issue_citizen(pid=MOTHER, audience=stack.server.settings.audience)
    )
    consent = mother.get("/Consent", params={"patient": f"Patient/{patient['id']}"}).json()
    current = consent["entry"][0]["resource"]
    withdrawn = mother.put(
        f"/Consent/{current['id']}", json={**current, "status": "inactive"}, headers=fhir_headers()
    )
    assert withdrawn.status_code == 200, withdrawn.text

    def hidden() -> bool:
        store = stack.store()
        children = [c.get("data", c) for c in store["barn"].values()]
        consents = [c.get("data", c) for c in store["samtykker"].values()]
        return any(c.get("skjult") for c in children if c.get("fodselsnummer") == NORA) and all(
            c.get("status") == "trukket" for c in consents if c.get("barn") == NORA
        )

    _wait(hidden)
    assert stack.runtime.status("barnehage-ut").dead_lettered == 0
    _ = topics  # the topics module names what the connectors use
