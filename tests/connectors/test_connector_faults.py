"""Connectors under vendor faults and restarts: simulator ⇄ Kafka ⇄ Stafett on PostgreSQL.

The issue's words: a vendor API returning 500s and timeouts is retried and caught up after it
recovers; a restarted connector resumes from its checkpoint. The kindergarten simulator's
fault injection (`POST /_sim/faults`) makes a share of its API calls answer 500 or hang longer
than the connector's HTTP timeout; staff actions (`/_sim`) are never faulted. Counts are exact:
every vendor record arrives once, none is missing, nothing is dead-lettered.

- Source: staff register measures while 30 % of calls fail and 10 % time out; the connector
  shows the errors, retries from its checkpoint (a failed poll publishes nothing), and after
  the faults are reset Stafett holds exactly one Task per measure.
- Sink: the health station writes Tasks for the kindergarten while 30 % of the kindergarten
  system's calls fail; each delivery is retried with backoff until it is created once.
- Restart: the source's runtime is stopped mid-stream and a new one starts on the same
  checkpoint folder, with the checkpoint rewound as if the process had died between
  publishing a page and storing its checkpoint: the re-read page is recognised by Stafett's
  ingest (deterministic event ids), and the rest is read once.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.kafka import KafkaBus
from connectors import ConnectorConfig, ConnectorRuntime, FileCheckpointStore
from connectors.registry import factories
from service.worker import Worker
from simulators.common.server import running
from simulators.kindergarten.app import KindergartenConfig, create_app
from simulators.school.app import SchoolConfig
from simulators.school.app import create_app as create_school_app
from tests.conftest import new_postgres_database
from tests.connectors.family_support import family_bundle
from tests.support import ORGNR_SYSTEM, LiveServer, fhir_headers, live_server

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.e2e]

# Organisations of this module only: their outbound topics and consumer groups on the shared
# broker are nobody else's (another module's sink would otherwise replay our deliveries)
KINDERGARTEN = "991166416"
HEALTH = "969424819"
SCHOOL = "879844789"
OPERATOR = "936451284"
NORA, MOTHER = "15832151200", "04868941214"  # a child and her mother, in the kindergarten
OLA, FATHER = "12851950085", "03828510036"  # a pupil and his father, for the school
API_KEY = "nokkel"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
TILTAK_SID = f"https://stafett.no/fhir/sid/{OPERATOR}/barnehagesystem/tiltak"
SCHOOL_SID = f"https://stafett.no/fhir/sid/{OPERATOR}/skolesystem"
MEASURE = {"system": "https://stafett.no/fhir/CodeSystem/task-type", "code": "measure"}
SOURCE, SINK = "barnehage-inn", "barnehage-ut"
CLIENT_TIMEOUT_S = 0.5  # the connector's HTTP timeout: a 2 s hang is a timeout for it
SOURCE_MEASURES = 40
SINK_TASKS = 30
RESTART_MEASURES = 60
SCHOOL_MEASURES = 20
PAGE = 10  # feed entries per poll


@dataclass
class Stack:
    server: LiveServer
    vendor: httpx.Client
    bus: KafkaBus
    worker: Worker
    sink: ConnectorRuntime
    source: ConnectorRuntime
    source_config: ConnectorConfig
    checkpoints: Path
    retired_out: int = 0  # records published by source runtimes that were replaced
    # what the worker had taken and dead-lettered besides this module's records (a shared
    # broker may hold messages another module left behind on stafett.inbound)
    base_taken: int = 0
    base_dead: int = 0

    def stafett(self, org: str) -> httpx.Client:
        return self.server.client(self.server.system_token(org=org))

    def store(self) -> dict[str, Any]:
        data: dict[str, Any] = self.vendor.get("/_sim/store").json()
        return data

    def faults(self, **config: float) -> None:
        response = self.vendor.post("/_sim/faults", json=config)
        assert response.status_code == 200, response.text

    def reset_faults(self) -> None:
        assert self.vendor.delete("/_sim/faults").status_code == 200

    def new_source_runtime(self) -> ConnectorRuntime:
        """A fresh runtime for the source, as after a restart of the connector process."""
        self.retired_out += self.source.status(SOURCE).records_out
        self.source = _runtime(self.bus, self.source_config, self.checkpoints)
        return self.source


def _runtime(bus: KafkaBus, config: ConnectorConfig, checkpoints: Path) -> ConnectorRuntime:
    return ConnectorRuntime(
        bus=bus,
        connectors=[config],
        checkpoints=FileCheckpointStore(checkpoints),
        factories=factories(),
        poll_timeout_s=0.2,
    )


_STATE: dict[str, Any] = {}


def _wait(check: Callable[[], Any], timeout: float = 30.0, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out; {_diagnosis()}"
        time.sleep(step)


def _diagnosis() -> str:
    stack: Stack | None = _STATE.get("stack")
    if stack is None:
        return ""
    statuses = [stack.source.status(SOURCE), stack.sink.status(SINK)]
    return f"connectors: {statuses}; worker: {stack.worker.counters}"


@pytest.fixture(scope="module")
def stack(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database = new_postgres_database(postgres_admin_url)
    vendor_app = create_app(KindergartenConfig(data_dir=None, api_key=API_KEY, fault_seed=20261122))
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
            "poll_interval_s": 0.1,
            "settings": {
                "base_url": vendor_url,
                "api_key": API_KEY,
                "timeout_s": CLIENT_TIMEOUT_S,
                "page_size": PAGE,
                "stafett_url": server.fhir,
                "stafett_token": server.system_token(org=KINDERGARTEN, scopes="system/*.rs"),
                # a file of this module's own: links kept in memory are shared per operator
                # by every kindergarten connector of the process (other test modules too)
                "state_file": str(tmp_path_factory.mktemp("state") / "barnehage-lenker.json"),
            },
        }
        source_config = ConnectorConfig.model_validate(
            {
                **common,
                "name": SOURCE,
                "kind": "source",
                "retry": {"backoff_s": 0.05, "max_backoff_s": 0.4},
            }
        )
        sink_config = ConnectorConfig.model_validate(
            {
                **common,
                "name": SINK,
                "kind": "sink",
                # 0.3 ** 40: a delivery never runs out of attempts at a 30 % error rate
                "retry": {"max_attempts": 40, "backoff_s": 0.05, "max_backoff_s": 0.4},
            }
        )
        checkpoints = tmp_path_factory.mktemp("checkpoints")
        sink = _runtime(bus, sink_config, checkpoints)
        source = _runtime(bus, source_config, checkpoints)
        sink.start()
        source.start()
        with httpx.Client(base_url=vendor_url, headers={"X-Api-Key": API_KEY}) as vendor:
            built = Stack(server, vendor, bus, worker, sink, source, source_config, checkpoints)
            _STATE["stack"] = built
            try:
                _register_nora(vendor)
                _log_open(built)
                _settle(built)
                yield built
            finally:
                built.reset_faults()
                built.source.stop()
                sink.stop()
                worker.stop()


# -- helpers ---------------------------------------------------------------------------------
def _register_nora(vendor: httpx.Client) -> None:
    """Staff register Nora with her log and her mother's consent (kindergarten + health)."""
    child = vendor.post(
        "/_sim/barn",
        json={
            "fodselsnummer": NORA,
            "fornavn": "Nora",
            "etternavn": "Eksempelsen",
            "fodselsdato": "2021-03-15",
            "logg": {
                "opprettet": "2026-08-31",
                "niva": "2",
                "oppmerksomhet": "Nora sier lite i grupper og trekker seg ofte ut av leken.",
                "stafettholder": {"ansattId": "A-17", "navn": "Kari Lærer", "enhet": KINDERGARTEN},
                "status": "aktiv",
            },
            "foresatte": [
                {"fodselsnummer": MOTHER, "navn": "Mona Eksempelsen", "foreldreansvar": "felles"}
            ],
        },
    )
    assert child.status_code == 201, child.text
    consent = vendor.post(
        "/_sim/samtykker",
        json={
            "barn": NORA,
            "signertAv": [MOTHER],
            "signertDato": "2026-08-31",
            "gyldigFra": "2026-08-31",
            "gyldigTil": "2027-11-01",
            "status": "gyldig",
            "deleMed": [KINDERGARTEN, HEALTH],
            "skjema": {"filnavn": "samtykke.pdf", "pdfBase64": "JVBERi0xLjQK"},
        },
    )
    assert consent.status_code == 201, consent.text


def _taken(stack: Stack) -> int:
    counters = stack.worker.counters
    return counters.applied + counters.duplicates + counters.dead_lettered


def _settle(stack: Stack) -> None:
    """Once the source has read the feed and the worker is quiet, note the worker's baseline."""
    _wait(lambda: _checkpoint(stack) == _feed_head(stack))
    last = -1
    while (taken := _taken(stack)) != last:  # quiet for a second
        last = taken
        time.sleep(1.0)
    stack.base_taken = taken - stack.source.status(SOURCE).records_out
    stack.base_dead = stack.worker.counters.dead_lettered


def _patient(stack: Stack) -> dict[str, Any] | None:
    found = stack.stafett(KINDERGARTEN).get("/Patient", params={"identifier": f"{FNR}|{NORA}"})
    entries = found.json().get("entry", []) if found.status_code == 200 else []
    return entries[0]["resource"] if entries else None


def _log_open(stack: Stack) -> dict[str, Any]:
    """Nora's Patient once the source has opened her log in Stafett."""

    def opened() -> dict[str, Any] | None:
        patient = _patient(stack)
        if patient is None:
            return None
        logs = stack.stafett(KINDERGARTEN).get(
            "/CarePlan", params={"subject": f"Patient/{patient['id']}"}
        )
        return patient if logs.json().get("total") else None

    found: dict[str, Any] = _wait(opened)
    return found


def _tasks(stack: Stack, patient_id: str, org: str = KINDERGARTEN) -> list[dict[str, Any]]:
    """Every Task of the child in Stafett that `org` may read, all pages."""
    client = stack.stafett(org)
    found: list[dict[str, Any]] = []
    response = client.get("/Task", params={"patient": patient_id, "_count": "500"})
    while True:
        assert response.status_code == 200, response.text
        bundle = response.json()
        found += [e["resource"] for e in bundle.get("entry", []) if "resource" in e]
        following = [link["url"] for link in bundle.get("link", []) if link["relation"] == "next"]
        if not following:
            return found
        response = client.get(following[0])


def _vendor_ids(tasks: list[dict[str, Any]], system: str = TILTAK_SID) -> Counter[str]:
    """How many Tasks carry each vendor measure id (the kindergarten's by default)."""
    return Counter(
        i["value"]
        for task in tasks
        for i in task.get("identifier", [])
        if i.get("system") == system
    )


def _staff_measure(stack: Stack, description: str) -> str:
    """A teacher registers a measure in the kindergarten system (never faulted)."""
    response = stack.vendor.post(
        "/_sim/tiltak",
        json={
            "barn": NORA,
            "beskrivelse": description,
            "ansvarlig": KINDERGARTEN,
            "status": "pagar",
            "startdato": "2026-09-07",
            "evalueringsdato": "2026-10-19",
            "evalueringer": [],
        },
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _feed_head(stack: Stack) -> int:
    return int(stack.store()["sekvens"])


def _checkpoint(stack: Stack) -> int:
    stored = stack.source.offsets(SOURCE)["checkpoint"] or {}
    return int(stored.get("after", 0))


def _drained(stack: Stack) -> None:
    """Wait until the ingest worker has taken every record the source published."""

    def done() -> bool:
        published = stack.retired_out + stack.source.status(SOURCE).records_out
        return _taken(stack) - stack.base_taken == published

    _wait(done)


def _errors_while_faulty(
    stack: Stack, runtime: ConnectorRuntime, name: str, *, kinds: tuple[str, ...], least: int
) -> list[str]:
    """Watch the connector's status until it has failed `least` times with each kind of error."""
    start = runtime.status(name).errors
    seen: list[str] = []
    deadline = time.monotonic() + 90  # generous: CI machines are loaded
    while True:
        status = runtime.status(name)
        if status.last_error and (not seen or seen[-1] != status.last_error):
            seen.append(status.last_error)
        if status.errors - start >= least and all(any(k in e for e in seen) for k in kinds):
            return seen
        assert time.monotonic() < deadline, f"errors seen: {seen}; {_diagnosis()}"
        time.sleep(0.01)


# -- tests -------------------------------------------------------------------------------------
def test_the_source_is_retried_through_500s_and_timeouts_and_catches_up(stack: Stack) -> None:
    patient = _log_open(stack)
    _wait(lambda: _checkpoint(stack) == _feed_head(stack))
    _drained(stack)
    before = stack.source.status(SOURCE)
    applied_before = stack.worker.counters.applied
    stack.faults(error_rate=0.3, timeout_rate=0.1, timeout_s=2)
    try:
        ids = [_staff_measure(stack, f"Feiltest kilde {i}") for i in range(SOURCE_MEASURES)]
        # the errors show in the connector's status while the system misbehaves
        errors = _errors_while_faulty(
            stack, stack.source, SOURCE, kinds=("500 Internal Server Error", "Timeout"), least=6
        )
        during = stack.source.status(SOURCE)
        assert during.last_error is not None
        assert during.errors - before.errors >= 6, errors
    finally:
        stack.reset_faults()
    head = _feed_head(stack)
    _wait(lambda: _checkpoint(stack) == head)
    _drained(stack)
    found = _vendor_ids(_tasks(stack, patient["id"]))
    assert {i: found[i] for i in ids} == dict.fromkeys(ids, 1)  # each measure, once
    after = stack.source.status(SOURCE)
    # a failed poll publishes nothing and leaves the checkpoint: every record went out once
    assert after.records_out - before.records_out == SOURCE_MEASURES
    assert after.dead_lettered == before.dead_lettered
    assert stack.worker.counters.applied - applied_before == SOURCE_MEASURES
    assert stack.worker.counters.dead_lettered == stack.base_dead


def test_the_sink_is_retried_with_backoff_until_each_task_is_created_once(stack: Stack) -> None:
    patient = _log_open(stack)
    kindergarten = stack.stafett(KINDERGARTEN)
    owner = kindergarten.get(
        "/Organization", params={"identifier": f"{ORGNR_SYSTEM}|{KINDERGARTEN}"}
    ).json()["entry"][0]["resource"]["id"]
    careplan = kindergarten.get("/CarePlan", params={"subject": f"Patient/{patient['id']}"}).json()
    careplan_id = careplan["entry"][0]["resource"]["id"]
    before = stack.sink.status(SINK)
    source_before = stack.source.status(SOURCE).records_out
    health = stack.stafett(HEALTH)
    marker = "Feiltest mottak"

    def arrived() -> Counter[str]:
        return Counter(
            str(m["data"]["beskrivelse"])
            for m in stack.store()["tiltak"].values()
            if str(m["data"]["beskrivelse"]).startswith(marker)
        )

    stack.faults(error_rate=0.3)
    try:
        for i in range(SINK_TASKS):
            created = health.post(
                "/Task",
                json={
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "plan",
                    "code": {"coding": [MEASURE]},
                    "basedOn": [{"reference": f"CarePlan/{careplan_id}"}],
                    "for": {"reference": f"Patient/{patient['id']}"},
                    "owner": {"reference": f"Organization/{owner}"},
                    "description": f"{marker} {i}",
                    "restriction": {"period": {"start": "2026-11-23", "end": "2027-01-15"}},
                },
                headers=fhir_headers(),
            )
            assert created.status_code == 201, created.text
        # deliveries keep arriving while a third of the calls fail: each is retried
        _errors_while_faulty(stack, stack.sink, SINK, kinds=("500 Internal Server Error",), least=3)
        _wait(lambda: sum(arrived().values()) >= SINK_TASKS // 2)
    finally:
        stack.reset_faults()
    expected = {f"{marker} {i}": 1 for i in range(SINK_TASKS)}
    _wait(lambda: arrived() == expected)
    after = stack.sink.status(SINK)
    assert after.errors - before.errors >= 3
    assert after.dead_lettered == before.dead_lettered  # no delivery ran out of attempts
    # the created measures are linked: their echo in the feed makes no second Task in Stafett
    time.sleep(1.0)
    _wait(lambda: _checkpoint(stack) == _feed_head(stack))
    assert stack.source.status(SOURCE).records_out == source_before  # echoes are skipped
    tasks = [t for t in _tasks(stack, patient["id"]) if t["description"].startswith(marker)]
    assert Counter(t["description"] for t in tasks) == expected
    assert arrived() == expected


def test_a_restarted_source_resumes_from_its_checkpoint(stack: Stack) -> None:
    patient = _log_open(stack)
    _wait(lambda: _checkpoint(stack) == _feed_head(stack))
    _drained(stack)
    first = stack.source
    before = first.status(SOURCE)
    start = _checkpoint(stack)
    duplicates_before = stack.worker.counters.duplicates
    # every call answered after 50 ms: slow enough to stop the connector mid-stream
    stack.faults(timeout_rate=1.0, timeout_s=0.05)
    try:
        ids = [_staff_measure(stack, f"Omstart {i}") for i in range(RESTART_MEASURES)]
        head = _feed_head(stack)
        assert head == start + RESTART_MEASURES
        _wait(lambda: first.status(SOURCE).records_out - before.records_out >= 2 * PAGE, step=0.01)
        first.stop()
    finally:
        stack.reset_faults()
    published = first.status(SOURCE).records_out - before.records_out
    stopped_at = _checkpoint(stack)
    assert stopped_at == start + published  # the page in hand was finished and checkpointed
    assert stopped_at < head, "the source finished before it could be stopped"
    # as if the process died after publishing its last page but before storing the checkpoint
    rewound = stopped_at - PAGE
    FileCheckpointStore(stack.checkpoints).save(SOURCE, {"after": rewound})
    second = stack.new_source_runtime()
    second.start()
    _wait(lambda: _checkpoint(stack) == head)
    _drained(stack)
    # the new runtime read from the checkpoint, not from the start of the feed
    assert second.status(SOURCE).records_out == head - rewound
    # the re-read page was published again with the same event ids and recognised as such
    assert stack.worker.counters.duplicates - duplicates_before == PAGE
    found = _vendor_ids(_tasks(stack, patient["id"]))
    assert {i: found[i] for i in ids} == dict.fromkeys(ids, 1)
    assert second.status(SOURCE).dead_lettered == 0
    assert stack.worker.counters.dead_lettered == stack.base_dead


def test_the_school_source_is_retried_through_500s_and_timeouts_and_catches_up(
    stack: Stack, tmp_path: Path
) -> None:
    """The same for the school system, whose OAuth token endpoint is faulted too."""
    directory = stack.stafett(SCHOOL)
    created = directory.post(
        "/Organization",
        json={
            "resourceType": "Organization",
            "identifier": [{"system": ORGNR_SYSTEM, "value": SCHOOL}],
            "name": "Fjellvik skole",
        },
        headers=fhir_headers(),
    )
    assert created.status_code == 201, created.text
    # Ola's family (his father's parental responsibility, which the school's records cannot
    # tell) is in Stafett, sharing with the school only: nothing is delivered elsewhere
    family = directory.post(
        "",
        json=family_bundle(
            child=OLA,
            child_name=("Ola", "Nordmann"),
            birth_date="2019-05-12",
            guardian=FATHER,
            custodian=SCHOOL,
            recipients=[SCHOOL],
        ),
        headers=fhir_headers(),
    )
    assert family.status_code == 200, family.text
    app = create_school_app(SchoolConfig(data_dir=None, fault_seed=20261122))
    with running(app) as school_url, httpx.Client(base_url=school_url) as vendor:

        def staff(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = vendor.post(f"/_sim/{path}", json=body)
            assert response.status_code == 201, response.text
            data: dict[str, Any] = response.json()
            return data

        pupil = staff(
            "elever",
            {
                "personnummer": OLA,
                "navn": {"fornavn": "Ola", "etternavn": "Nordmann"},
                "trinn": 1,
                "skole": SCHOOL,
                "stafettlogg": {
                    "nivaa": 1,
                    "kontaktlaerer": {"ansattnr": "L-3", "navn": "Per Lærer"},
                    "aktiv": True,
                    "bekymring": "Ola trenger en fast voksen i overgangene.",
                },
            },
        )
        staff(
            "samtykker",
            {
                "elevId": pupil["elevId"],
                "foresatt": [FATHER],
                "signert": "2026-08-17",
                "utloper": "2027-08-16",
                "mottakere": [SCHOOL],
                "trukket": False,
                "vedlegg": {"pdf": "JVBERi0xLjQK"},
            },
        )
        config = ConnectorConfig.model_validate(
            {
                "name": "skole-inn",
                "kind": "source",
                "system": "school",
                "organization": SCHOOL,
                "operator": OPERATOR,
                "source_system": "skolesystem",
                "poll_interval_s": 0.1,
                "retry": {"backoff_s": 0.05, "max_backoff_s": 0.4},
                "settings": {
                    "base_url": school_url,
                    "client_id": "stafett",
                    "client_secret": "skole-dev-secret",
                    "timeout_s": CLIENT_TIMEOUT_S,
                    "state_file": str(tmp_path / "skole-lenker.json"),
                },
            }
        )
        school = _runtime(stack.bus, config, tmp_path / "checkpoints")
        school.start()
        try:
            patient = _wait(lambda: _patient_of(stack, OLA))
            _wait(
                lambda: (
                    directory.get("/CarePlan", params={"subject": f"Patient/{patient['id']}"})
                    .json()
                    .get("total")
                )
            )
            before = school.status("skole-inn")
            vendor.post(
                "/_sim/faults", json={"error_rate": 0.3, "timeout_rate": 0.1, "timeout_s": 2}
            ).raise_for_status()
            try:
                ids = [
                    str(
                        staff(
                            "tiltak",
                            {
                                "elevId": pupil["elevId"],
                                "tittel": f"Feiltest skole {i}",
                                "beskrivelse": "En fast voksen tar imot Ola om morgenen.",
                                "ansvarligEnhet": SCHOOL,
                                "status": "AKTIV",
                                "fra": "2026-08-17",
                                "evaluerDato": "2026-11-30",
                                "evaluering": None,
                            },
                        )["tiltakId"]
                    )
                    for i in range(SCHOOL_MEASURES)
                ]
                _errors_while_faulty(
                    stack,
                    school,
                    "skole-inn",
                    kinds=("500 Internal Server Error", "Timeout"),
                    least=4,
                )
            finally:
                vendor.delete("/_sim/faults").raise_for_status()

            def caught_up() -> Counter[str] | None:
                found = _vendor_ids(_tasks(stack, patient["id"], SCHOOL), f"{SCHOOL_SID}/tiltak")
                return found if found.keys() >= set(ids) else None

            found = _wait(caught_up)
            assert {i: found[i] for i in ids} == dict.fromkeys(ids, 1)
            time.sleep(1.0)  # a late duplicate would have time to arrive
            found = _vendor_ids(_tasks(stack, patient["id"], SCHOOL), f"{SCHOOL_SID}/tiltak")
            assert {i: found[i] for i in ids} == dict.fromkeys(ids, 1)
            after = school.status("skole-inn")
            assert after.records_out - before.records_out == SCHOOL_MEASURES
            assert after.dead_lettered == 0
        finally:
            school.stop()
            stack.retired_out += school.status("skole-inn").records_out


def _patient_of(stack: Stack, fnr: str) -> dict[str, Any] | None:
    found = stack.stafett(SCHOOL).get("/Patient", params={"identifier": f"{FNR}|{fnr}"})
    entries = found.json().get("entry", []) if found.status_code == 200 else []
    return entries[0]["resource"] if entries else None
