"""The broker dies and comes back while writes keep arriving over HTTP: the outbox holds them.

tests/bus_service/test_faults.py kills the broker in the middle of a relay batch with writes
made in-process through the repository. Here the writes come over HTTP to
``stafett serve --workers 2`` (consent on) the whole time, and ``stafett worker --only relay``
runs as its own process: the API keeps answering 201 while the broker is down (the outbox
decouples them), the backlog grows, and after a new broker starts on the same port it drains.

This Tansu build keeps records in memory, so a new broker starts empty. To reconcile exactly
anyway, the worker is frozen (SIGSTOP) at the kill: the test notes which outbox rows the relay
had marked sent, makes sure a consumer has read everything the old broker holds, kills it, and
lets the worker go on. Reconciled: what was read from the old and the new broker together is
exactly the outbox; everything marked sent before the kill was read from the old broker; the
events read from both are only events the old broker had stored but the relay had not yet
marked sent when it was frozen (the batch in flight): the only legitimate duplicates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from bus import topics
from tests.bus_service.faults_support import (
    MARKER,
    KillableBroker,
    Tap,
    mark_partitions,
    wait_until,
)
from tests.faults.support import Service, bench_load, service
from tests.support import FHIR_JSON

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow, pytest.mark.e2e]

OUTAGE_S = 6.0
RELAY_BATCH = 20
MAX_DRAIN_S = 60.0


@pytest.fixture(scope="module")
def broker() -> Iterator[KillableBroker]:
    """A broker of this module's own (it gets killed)."""
    broker = KillableBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture(scope="module")
def running(
    postgres_admin_url: str, broker: KillableBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service with only the relay in its worker, and 6 children's logs."""
    from tests.conftest import new_postgres_database  # noqa: PLC0415

    tmp: Path = tmp_path_factory.mktemp("broker-restart")
    with service(
        new_postgres_database(postgres_admin_url),
        broker.bootstrap,
        tmp,
        children=6,
        only=("relay",),
        relay_batch_size=str(RELAY_BATCH),
    ) as live:
        yield live


def _sent(url: str) -> set[str]:
    with psycopg.connect(bench_load._libpq(url), autocommit=True) as conn:
        rows = conn.execute("SELECT event_id FROM outbox WHERE sent_at IS NOT NULL").fetchall()
    return {r[0] for r in rows}


def _ids(tap: Tap) -> list[str]:
    return [s.envelope.event_id for s in tap.records() if s.envelope.event_type != MARKER]


def test_broker_restart_under_http_writes_loses_nothing(
    running: Service, broker: KillableBroker
) -> None:
    """Kill the broker for 6 s while Tasks are POSTed; the backlog grows, drains, reconciles."""
    live = running
    system, _ = bench_load.dev_tokens(live.server.data_dir, 3600)
    statuses: list[int] = []
    backlog: list[tuple[float, int]] = []
    stop = threading.Event()
    lock = threading.Lock()

    def write(k: int) -> None:
        child = live.data.children[k]
        headers = {
            "Authorization": f"Bearer {system(child.owner[1])}",
            "Accept": FHIR_JSON,
            "Content-Type": FHIR_JSON,
        }
        body = orjson.dumps(
            {
                "resourceType": "Task",
                "status": "in-progress",
                "intent": "plan",
                "for": {"reference": f"Patient/{child.patient_id}"},
                "owner": {"reference": f"Organization/{child.owner[0]}"},
                "description": "Tiltak under broker-omstart",
            }
        )
        with httpx.Client(base_url=live.server.fhir, headers=headers, timeout=30) as c:
            while not stop.is_set():
                try:
                    status = c.post("Task", content=body).status_code
                except httpx.HTTPError:
                    status = 0
                with lock:
                    statuses.append(status)
                time.sleep(0.04)

    tap1 = Tap(broker.bootstrap, [topics.CHANGES]).start()
    taps = [tap1]
    writers = [threading.Thread(target=write, args=(k,), daemon=True) for k in range(3)]
    try:
        for thread in writers:
            thread.start()
        time.sleep(5)

        # -- freeze the relay, make sure the old broker's records are read, kill it
        live.freeze_worker()
        sent_before = _sent(live.url)
        marker = mark_partitions(broker.bootstrap, topics.CHANGES)
        wait_until(lambda: tap1.read_through(marker, topics.CHANGES), 30, "the old broker read")
        broker.kill()
        tap1.stop()
        killed_at = time.monotonic()
        live.thaw_worker()
        while time.monotonic() - killed_at < OUTAGE_S:
            backlog.append((time.monotonic() - killed_at, bench_load.counts(live.url)["backlog"]))
            time.sleep(0.5)
        with lock:
            during = len(statuses)

        # -- a new broker on the same port, its topics made before the relay publishes again
        live.freeze_worker()
        broker.start()
        broker.create_topics(topics.ALL_FIXED)
        tap2 = Tap(broker.bootstrap, [topics.CHANGES]).start()
        taps.append(tap2)
        live.thaw_worker()
        restarted_at = time.monotonic()
        wait_until(
            lambda: bench_load.counts(live.url)["backlog"] == 0,
            MAX_DRAIN_S,
            "the backlog to drain",
            every=0.1,
        )
        drain_s = time.monotonic() - restarted_at
        time.sleep(3)  # writes go on after the drain
        stop.set()
        for thread in writers:
            thread.join(30)
        assert bench_load.wait_for_backlog(live.url, MAX_DRAIN_S) >= 0
        marker = mark_partitions(broker.bootstrap, topics.CHANGES)
        wait_until(lambda: tap2.read_through(marker, topics.CHANGES), 30, "the new broker read")
    finally:
        stop.set()
        live.thaw_worker()  # never leave it frozen
        for tap in taps:
            tap.stop()

    # -- the API never noticed: every write answered 201, during the outage too
    assert statuses
    assert set(statuses) == {201}, {s: statuses.count(s) for s in set(statuses)}
    grown = [n for _, n in backlog]
    print(
        f"{len(statuses)} writes ({during} before the restart); backlog during the outage "
        f"{grown}; drained {drain_s:.1f} s after the restart"
    )
    assert grown[-1] > grown[0] > 0 or grown[-1] > 0  # it grew while the broker was down
    assert grown == sorted(grown)

    # -- nothing lost, duplicates only from the batch in flight at the kill
    outbox = {e.event_id for e in bench_load.outbox_envelopes(live.url, live.server.data_dir)}
    old, new = _ids(tap1), _ids(tap2)
    assert len(old) == len(set(old))
    assert len(new) == len(set(new))
    assert set(old) | set(new) == outbox, (len(outbox - set(old) - set(new)), len(outbox))
    assert sent_before <= set(old)
    in_flight = set(old) - sent_before
    duplicates = set(old) & set(new)
    print(
        f"outbox {len(outbox)}: {len(old)} read from the old broker ({len(in_flight)} stored "
        f"but not yet marked sent at the kill), {len(new)} from the new one, "
        f"{len(duplicates)} on both"
    )
    assert duplicates <= in_flight
    assert len(in_flight) <= RELAY_BATCH
    checks = bench_load.consistency(live.url, live.server.data_dir)
    assert not any(checks.values()), checks
    assert live.worker_alive()
