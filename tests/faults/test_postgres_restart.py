"""PostgreSQL crashes under load and comes back: clear 503s, self-recovery, nothing torn or lost.

A PostgreSQL server of this test's own is stopped with ``pg_ctl stop -m immediate`` (every
backend killed, no checkpoint: a crash) while writer threads create Tasks over HTTP with
``If-None-Exist`` on a unique identifier and reader threads search and read; after a few
seconds it is started again on the same data folder (crash recovery from the WAL). Stafett
(``stafett serve --workers 2``, consent on) and ``stafett worker`` are not touched.

Reconciled exactly: every 201 is one complete Task (history, index, outbox and audit rows);
every 503'd write is there completely or not at all, and retrying it with the same identifier
creates it at most once; every change event in the outbox reaches the broker, and a consumer
deduplicating by event id sees exactly the outbox.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from bus import topics
from tests.bus_service.faults_support import MARKER, Tap, mark_partitions, wait_until
from tests.faults.support import KillablePostgres, Service, bench_load, service
from tests.support import FHIR_JSON

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow, pytest.mark.e2e]

IDENTIFIER_SYSTEM = "https://stafett.no/fhir/sid/fault-test/tiltak"
OUTAGE_S = 5.0
MAX_REQUEST_S = 10.0  # no request may hang longer than this, outage or not
MAX_RECOVERY_S = 20.0  # from PostgreSQL ready again to the first 201
RELAY_BATCH = 20


@dataclass
class Answer:
    """One request's outcome."""

    kind: str  # "write" or "read"
    at: float  # monotonic time when sent
    seconds: float
    status: int
    body: bytes
    identifier: str = ""


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[KillablePostgres]:
    """A PostgreSQL server of this module's own (it gets crashed)."""
    server = KillablePostgres()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def running(
    postgres_server: KillablePostgres,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """The service on the killable server, with 6 children's logs."""
    tmp: Path = tmp_path_factory.mktemp("pg-restart")
    with service(
        postgres_server.new_database(),
        kafka_bootstrap,
        tmp,
        children=6,
        relay_batch_size=str(RELAY_BATCH),
    ) as live:
        yield live


def _task(live: Service, n: int, identifier: str) -> bytes:
    child = live.data.children[n % len(live.data.children)]
    return orjson.dumps(
        {
            "resourceType": "Task",
            "identifier": [{"system": IDENTIFIER_SYSTEM, "value": identifier}],
            "status": "in-progress",
            "intent": "plan",
            "for": {"reference": f"Patient/{child.patient_id}"},
            "basedOn": [{"reference": f"CarePlan/{child.careplan_id}"}],
            "owner": {"reference": f"Organization/{child.owner[0]}"},
            "description": f"Tiltak {identifier}",
        }
    )


def _create(client: httpx.Client, live: Service, n: int, identifier: str) -> Answer:
    started = time.monotonic()
    status, body = 0, b""
    try:
        response = client.post(
            "Task",
            content=_task(live, n, identifier),
            headers={"If-None-Exist": f"identifier={IDENTIFIER_SYSTEM}|{identifier}"},
        )
        status, body = response.status_code, response.content
    except httpx.HTTPError as exc:
        body = repr(exc).encode()
    return Answer("write", started, time.monotonic() - started, status, body, identifier)


def _tasks_by_identifier(url: str) -> dict[str, list[str]]:
    with psycopg.connect(bench_load._libpq(url), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT t.code, r.id FROM search_token t JOIN resources r"
            " ON r.resource_type = t.resource_type AND r.id = t.resource_id"
            " WHERE t.resource_type = 'Task' AND t.param = 'identifier' AND t.system = %s",
            (IDENTIFIER_SYSTEM,),
        ).fetchall()
    out: dict[str, list[str]] = {}
    for code, id_ in rows:
        out.setdefault(code, []).append(id_)
    return out


def test_postgres_crash_under_load_gives_503_recovers_and_tears_nothing(
    running: Service, postgres_server: KillablePostgres, kafka_bootstrap: str
) -> None:
    """Crash PostgreSQL for 5 s under writes and reads; reconcile every write afterwards."""
    live = running
    fhir = live.server.fhir
    owners = sorted({c.owner[1] for c in live.data.children})
    system, _ = bench_load.dev_tokens(live.server.data_dir, 3600)
    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()
    tap = Tap(kafka_bootstrap, [topics.CHANGES]).start()

    def client(orgnr: str) -> httpx.Client:
        headers = {
            "Authorization": f"Bearer {system(orgnr)}",
            "Accept": FHIR_JSON,
            "Content-Type": FHIR_JSON,
        }
        return httpx.Client(base_url=fhir, headers=headers, timeout=MAX_REQUEST_S + 20)

    def write(k: int) -> None:
        # writer k writes to child k's log, as the system of the log's owner
        with client(live.data.children[k].owner[1]) as c:
            n = 0
            while not stop.is_set():
                answer = _create(c, live, k, f"w{k}-{n}")
                with lock:
                    answers.append(answer)
                n += 1
                time.sleep(0.05)

    def read(k: int) -> None:
        child = live.data.children[3 + k]
        with client(child.owner[1]) as c:
            n = 0
            while not stop.is_set():
                path = (
                    f"Task?patient={child.patient_id}"
                    if n % 2
                    else f"Task/{child.task_ids[n % len(child.task_ids)]}"
                )
                started = time.monotonic()
                status, body = 0, b""
                try:
                    response = c.get(path)
                    status, body = response.status_code, response.content
                except httpx.HTTPError as exc:
                    body = repr(exc).encode()
                with lock:
                    answers.append(
                        Answer("read", started, time.monotonic() - started, status, body)
                    )
                n += 1
                time.sleep(0.05)

    threads = [threading.Thread(target=write, args=(k,), daemon=True) for k in range(3)]
    threads += [threading.Thread(target=read, args=(k,), daemon=True) for k in range(2)]
    readiness: list[tuple[float, int]] = []
    try:
        for thread in threads:
            thread.start()
        time.sleep(6)  # steady load first
        assert owners, "no logs"

        crashed_at = time.monotonic()
        postgres_server.crash()
        while time.monotonic() - crashed_at < OUTAGE_S:
            readiness.append((time.monotonic(), live.server.ready()[0]))
            time.sleep(0.25)
        restarting_at = time.monotonic()
        restart_s = postgres_server.start()
        ready_at = time.monotonic()

        def recovered() -> bool:
            with lock:
                return any(a.status == 201 and a.at > ready_at for a in answers)

        wait_until(recovered, MAX_RECOVERY_S, "the first 201 after the restart", every=0.05)
        recovery_s = time.monotonic() - ready_at
        while live.server.ready()[0] != 200:
            assert time.monotonic() - ready_at < MAX_RECOVERY_S, "/readyz did not recover"
            time.sleep(0.1)
        time.sleep(6)  # steady load after
    finally:
        stop.set()
        for thread in threads:
            thread.join(MAX_REQUEST_S + 30)

    with lock:
        done = list(answers)
    writes = [a for a in done if a.kind == "write"]
    reads = [a for a in done if a.kind == "read"]
    statuses = {a.status for a in done}
    print(
        f"crash at +{crashed_at - done[0].at:.1f} s, outage {restarting_at - crashed_at:.1f} s, "
        f"PostgreSQL start {restart_s:.1f} s, first 201 {recovery_s:.2f} s after; "
        f"{len(writes)} writes {_count(writes)}, {len(reads)} reads {_count(reads)}"
    )

    # -- the outage: 503 with a transient OperationOutcome, nothing else, nothing hanging
    assert statuses <= {200, 201, 503}, _count(done)
    unavailable = [a for a in done if a.status == 503]
    assert unavailable, "no request failed during the outage"
    for a in unavailable:
        outcome = orjson.loads(a.body)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "transient"
        assert crashed_at - 1 <= a.at <= ready_at + MAX_RECOVERY_S
    assert max(a.seconds for a in done) < MAX_REQUEST_S
    during = [status for at, status in readiness if at > crashed_at + 0.5]
    assert during
    assert set(during) == {503}, readiness
    assert live.server.ready()[0] == 200
    # the last seconds: everything succeeds again
    tail = [a for a in done if a.at > ready_at + recovery_s + 2]
    assert tail
    assert all(a.status in (200, 201) for a in tail), _count(tail)

    # -- every write: 201 is there exactly once; 503 is there once or not at all
    stored = _tasks_by_identifier(live.url)
    created = {a.identifier for a in writes if a.status == 201}
    failed = {a.identifier for a in writes if a.status == 503}
    assert all(len(stored.get(i, [])) == 1 for i in created)
    assert all(len(stored.get(i, [])) <= 1 for i in failed)
    assert set(stored) == created | (failed & set(stored))
    checks = bench_load.consistency(live.url, live.server.data_dir)
    assert not any(checks.values()), checks
    committed_anyway = failed & set(stored)  # committed, but the answer was lost

    # -- retrying the 503'd writes with the same identifier creates each at most once
    retried = {}
    for k in range(3):
        with client(live.data.children[k].owner[1]) as c:
            for a in writes:
                if a.status == 503 and a.identifier.startswith(f"w{k}-"):
                    retried[a.identifier] = _create(c, live, k, a.identifier).status
    assert all(retried[i] == 200 for i in committed_anyway), retried  # found, not created
    assert all(retried[i] == 201 for i in failed - committed_anyway), retried
    answered = {s: list(retried.values()).count(s) for s in set(retried.values())}
    print(f"503'd writes {len(failed)}: {len(committed_anyway)} had committed; retries {answered}")
    stored = _tasks_by_identifier(live.url)
    assert set(stored) == created | failed
    assert all(len(ids) == 1 for ids in stored.values())

    # -- the worker survived; every change event reached the broker, none lost
    assert live.worker_alive()
    assert bench_load.wait_for_backlog(live.url, 60) >= 0, "the outbox did not drain"
    outbox = {e.event_id for e in bench_load.outbox_envelopes(live.url, live.server.data_dir)}
    marker = mark_partitions(kafka_bootstrap, topics.CHANGES)
    wait_until(lambda: tap.read_through(marker, topics.CHANGES), 30, "the marker")
    tap.stop()
    seen = [s.envelope.event_id for s in tap.records() if s.envelope.event_type != MARKER]
    assert set(seen) == outbox, (len(set(seen) - outbox), len(outbox - set(seen)))
    # at-least-once: a batch published while PostgreSQL went down could not be marked sent,
    # so it is published again; at most one relay batch
    duplicates = len(seen) - len(set(seen))
    print(f"outbox {len(outbox)} events, read {len(seen)}, duplicates {duplicates}")
    assert duplicates <= RELAY_BATCH


def _count(answers: list[Answer]) -> dict[int, int]:
    out: dict[int, int] = {}
    for a in answers:
        out[a.status] = out.get(a.status, 0) + 1
    return dict(sorted(out.items()))
