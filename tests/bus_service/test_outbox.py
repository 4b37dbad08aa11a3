"""The transactional outbox and its relay, on both databases, with the in-process bus."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select

from bus import BusError, Envelope, EventType, InMemoryBus, PublishError, Record, topics
from service.access import RequestContext, ScopeAccessPolicy
from service.bundles import process_bundle
from service.errors import FhirError
from service.outbox import Outbox, OutboxRelay, backlog
from service.repository import FhirRepository, RepositoryConfig
from service.search.extract import ResourceIndexer
from service.seed import seed_principal
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.schema import outbox
from service.storage.store import SqlStore

BASE = "http://test/fhir"


@dataclass
class Env:
    database: Database
    config: RepositoryConfig

    def repo(self) -> FhirRepository:
        return FhirRepository(
            self.config, RequestContext(principal=seed_principal(), request_id="req-1")
        )

    def rows(self) -> list[Envelope]:
        with self.database.read() as conn:
            values = conn.execute(select(outbox.c.value).order_by(outbox.c.seq)).scalars()
            return [Envelope.from_json(v.encode()) for v in values]


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    database = Database(database_url, pool_size=4)
    upgrade_database(database.engine)
    with database.write() as conn:
        conn.execute(outbox.delete())
    config = RepositoryConfig(
        database=database,
        store=SqlStore(indexer=ResourceIndexer(base_url=BASE)),
        policy=ScopeAccessPolicy(),
        base_url=BASE,
        default_page_size=20,
        max_page_size=100,
        outbox=Outbox(database),
    )
    yield Env(database, config)
    database.dispose()


def _patient(env: Env) -> str:
    return env.repo().create(resource={"resourceType": "Patient", "gender": "female"}).stored.id


def _task(patient: str, text: str = "Tiltak") -> dict[str, object]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "for": {"reference": f"Patient/{patient}"},
        "description": text,
    }


def test_each_write_of_a_log_stores_one_event_in_its_transaction(env: Env) -> None:
    patient = _patient(env)
    repo = env.repo()
    task = repo.create(resource=_task(patient)).stored
    updated = repo.update(
        resource_type="Task", id=task.id, resource={**task.data, "status": "in-progress"}
    ).stored
    repo.delete(resource_type="Task", id=task.id)
    repo.create(resource={"resourceType": "Organization", "name": "Ikke i en logg"})
    events = env.rows()
    assert [(e.event_type, e.resource_type, e.version_id) for e in events] == [
        (EventType.RESOURCE_CHANGED, "Patient", "1"),
        (EventType.RESOURCE_CHANGED, "Task", "1"),
        (EventType.RESOURCE_CHANGED, "Task", "2"),
        (EventType.RESOURCE_DELETED, "Task", "3"),
    ]
    assert {e.subject_key for e in events} == {patient}
    assert events[2].payload == updated.data
    # a deletion carries the last live version, so the router can decide who may hear of it
    assert events[3].payload is not None
    assert events[3].payload["status"] == "in-progress"
    assert events[1].correlation_id == "req-1"
    assert len({e.event_id for e in events}) == 4


def test_a_failed_transaction_leaves_no_event(env: Env) -> None:
    patient = _patient(env)
    before = len(env.rows())
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _task(patient), "request": {"method": "POST", "url": "Task"}},
            {
                "resource": {**_task(patient), "status": "dragon"},
                "request": {"method": "POST", "url": "Task"},
            },
        ],
    }
    with pytest.raises(FhirError):
        process_bundle(env.repo(), bundle, BASE)
    assert len(env.rows()) == before


class FlakyBus(InMemoryBus):
    """An in-process bus whose broker can be taken down."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def publish_many(self, records: Sequence[Record]) -> None:
        if self.down:
            raise PublishError("broker unreachable", failed=list(range(len(records))))
        super().publish_many(records)


def _drain(bus: InMemoryBus, count: int) -> list[Envelope]:
    with bus.consumer([topics.CHANGES], "test") as consumer:
        got: list[Envelope] = []
        while len(got) < count:
            batch = consumer.poll(2.0)
            if not batch:
                break
            got.extend(m.envelope() for m in batch)
        return got


def test_the_relay_publishes_in_order_and_survives_an_outage(env: Env) -> None:
    bus = FlakyBus()
    relay = OutboxRelay(database=env.database, bus=bus, batch_size=7)
    patient = _patient(env)
    repo = env.repo()
    for n in range(20):
        repo.create(resource=_task(patient, f"Tiltak {n}"))
    bus.down = True
    with pytest.raises(BusError):
        relay.relay_once()
    with env.database.read() as conn:
        assert backlog(conn) == 21  # nothing marked sent while the broker is down
    bus.down = False
    while relay.relay_once():
        pass
    with env.database.read() as conn:
        assert backlog(conn) == 0
    published = _drain(bus, 21)
    assert [e.event_id for e in published] == [e.event_id for e in env.rows()]
    assert relay.stats().published == 21


def test_the_relay_loop_drains_the_backlog_after_the_broker_returns(env: Env) -> None:
    bus = FlakyBus()
    bus.down = True
    relay = OutboxRelay(database=env.database, bus=bus, poll_interval_s=0.01, max_backoff_s=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=relay.run, args=(stop,), daemon=True)
    thread.start()
    try:
        patient = _patient(env)
        for n in range(10):
            env.repo().create(resource=_task(patient, f"Tiltak {n}"))
        stop.wait(0.3)
        with env.database.read() as conn:
            assert backlog(conn) == 11
        assert relay.stats().failures > 0
        bus.down = False
        got = _drain(bus, 11)
        assert len(got) == 11
    finally:
        stop.set()
        thread.join(5)
    with env.database.read() as conn:
        assert backlog(conn) == 0
        assert conn.execute(select(func.count()).select_from(outbox)).scalar_one() == 11


@pytest.mark.postgres
def test_only_one_relay_publishes_at_a_time(env: Env) -> None:
    if env.database.is_sqlite:
        pytest.skip("SQLite has one process")
    bus = InMemoryBus()
    relays = [OutboxRelay(database=env.database, bus=bus, poll_interval_s=0.005) for _ in range(3)]
    stop = threading.Event()
    threads = [threading.Thread(target=r.run, args=(stop,), daemon=True) for r in relays]
    for thread in threads:
        thread.start()
    try:
        patient = _patient(env)
        for n in range(30):
            env.repo().create(resource=_task(patient, f"Tiltak {n}"))
        got = _drain(bus, 31)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert [e.event_id for e in got] == [e.event_id for e in env.rows()]
    assert sum(1 for r in relays if r.stats().published) == 1
