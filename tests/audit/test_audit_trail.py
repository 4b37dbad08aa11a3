"""AuditTrail on SQLite and PostgreSQL: transactions, group commit, failures, shutdown, search."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.audit import AuditRecord, AuditTrail, AuditUnavailable
from service.search.extract import ResourceIndexer
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from tests.audit.audit_support import (
    BASE_URL,
    HPR,
    ControlledStore,
    audit_count,
    events_of_patient,
    make_record,
    request_id_of,
    search_count,
)

THREADS = 16


@dataclass
class Env:
    db: Database
    store: ControlledStore


@pytest.fixture(scope="module")
def env(database_url: str) -> Iterator[Env]:
    """Open the module's database, migrated, with a store whose writes tests can control."""
    db = Database(database_url)
    upgrade_database(db.engine)
    yield Env(db=db, store=ControlledStore(indexer=ResourceIndexer(base_url=BASE_URL)))
    db.dispose()


@pytest.fixture
def trail(env: Env) -> Iterator[AuditTrail]:
    """Run an audit trail with one committer (deterministic batches) and stop it afterwards."""
    audit = AuditTrail(database=env.db, store=env.store, server_url=BASE_URL, committers=1)
    yield audit
    audit.close()


def _patient() -> str:
    return f"child-{uuid.uuid4().hex[:12]}"


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


class Caller(threading.Thread):
    """Calls AuditTrail.record once in its own thread and keeps what happened."""

    def __init__(self, trail: AuditTrail, records: list[AuditRecord]) -> None:
        super().__init__(daemon=True)
        self.trail = trail
        self.records = records
        self.error: BaseException | None = None
        self.done = False

    def run(self) -> None:
        try:
            self.trail.record(self.records)
        except BaseException as exc:
            self.error = exc
        self.done = True


def _stored_request_ids(env: Env, patient: str) -> list[str | None]:
    return sorted(request_id_of(event) for event in events_of_patient(env.db, patient))


# -- record_in_transaction -------------------------------------------------------------------------
def test_record_in_transaction_commits_with_the_callers_transaction(
    env: Env, trail: AuditTrail
) -> None:
    patient = _patient()
    records = [make_record(patient_id=patient), make_record(patient_id=patient, permitted=False)]
    with env.db.write() as conn:
        trail.record_in_transaction(conn, records)
    assert _stored_request_ids(env, patient) == sorted(r.request_id for r in records)
    assert search_count(env.db, env.store, [("patient", f"Patient/{patient}")]) == 2


def test_record_in_transaction_rolls_back_with_the_callers_transaction(
    env: Env, trail: AuditTrail
) -> None:
    patient = _patient()
    before = audit_count(env.db)

    def write_then_fail() -> None:
        with env.db.write() as conn:
            trail.record_in_transaction(conn, [make_record(patient_id=patient)] * 3)
            raise RuntimeError("the write failed")

    with pytest.raises(RuntimeError, match="the write failed"):
        write_then_fail()
    assert audit_count(env.db) == before
    assert events_of_patient(env.db, patient) == []
    with env.db.read() as conn:
        leftovers = conn.execute(
            text("SELECT count(*) FROM search_reference WHERE target_id = :p"), {"p": patient}
        ).scalar_one()
    assert leftovers == 0


# -- record: group commit --------------------------------------------------------------------------
@pytest.mark.parametrize("committers", [1, 3])
def test_record_from_16_threads_stores_every_event_exactly_once(env: Env, committers: int) -> None:
    trail = AuditTrail(database=env.db, store=env.store, committers=committers)
    try:
        _record_from_16_threads(env, trail)
    finally:
        trail.close()


def _record_from_16_threads(env: Env, trail: AuditTrail) -> None:
    patient = _patient()
    per_thread = 15
    before = audit_count(env.db)
    expected: list[str] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(index: int) -> None:
        for call in range(per_thread):
            # some requests carry two decisions (e.g. an entry and its _include)
            records = [make_record(patient_id=patient) for _ in range(1 + (index + call) % 2)]
            try:
                trail.record(records)
            except BaseException as exc:
                errors.append(exc)
                return
            with lock:
                expected.extend(r.request_id for r in records)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    calls = THREADS * per_thread
    assert audit_count(env.db) - before == len(expected)
    assert _stored_request_ids(env, patient) == sorted(expected)
    assert search_count(env.db, env.store, [("patient", f"Patient/{patient}")]) == len(expected)
    stats = trail.stats()
    assert stats.events_committed == len(expected)
    assert stats.batches_failed == 0
    # concurrent callers share commits
    assert stats.batches_committed < calls
    assert stats.largest_batch > 1


def test_callers_queued_behind_a_commit_share_the_next_one(env: Env, trail: AuditTrail) -> None:
    patient = _patient()
    gate = env.store.hold_next_write()
    first = Caller(trail, [make_record(patient_id=patient)])
    first.start()
    assert env.store.entered.wait(10)
    followers = [Caller(trail, [make_record(patient_id=patient)]) for _ in range(THREADS - 1)]
    for caller in followers:
        caller.start()
    _wait_for(lambda: trail.queued_events == THREADS - 1, "the followers to queue")
    gate.set()
    for caller in [first, *followers]:
        caller.join(10)
        assert caller.done
        assert caller.error is None
    stats = trail.stats()
    assert (stats.batches_committed, stats.events_committed) == (2, THREADS)
    assert stats.largest_batch == THREADS - 1
    assert len(events_of_patient(env.db, patient)) == THREADS


def test_batches_hold_at_most_max_batch_events_and_never_split_a_caller(env: Env) -> None:
    trail = AuditTrail(database=env.db, store=env.store, max_batch=4, committers=1)
    try:
        patient = _patient()
        gate = env.store.hold_next_write()
        first = Caller(trail, [make_record(patient_id=patient)])
        first.start()
        assert env.store.entered.wait(10)
        # 3 + 3 + 6 events: [3], [3], [6 alone: larger than max_batch, never split]
        sizes = (3, 3, 6)
        callers = []
        for queued, size in enumerate(sizes, start=1):
            callers.append(Caller(trail, [make_record(patient_id=patient)] * size))
            callers[-1].start()
            expected = sum(sizes[:queued])
            _wait_for(lambda expected=expected: trail.queued_events == expected, "queueing")
        gate.set()
        for caller in [first, *callers]:
            caller.join(10)
            assert caller.error is None
        stats = trail.stats()
        assert stats.batches_committed == 4
        assert stats.largest_batch == 6
        assert len(events_of_patient(env.db, patient)) == 13
    finally:
        trail.close()


# -- record: failures ------------------------------------------------------------------------------
def test_a_failed_batch_fails_exactly_its_callers_and_later_batches_succeed(
    env: Env, trail: AuditTrail
) -> None:
    patient = _patient()
    gate = env.store.hold_next_write()
    first = Caller(trail, [make_record(patient_id=patient)])
    first.start()
    assert env.store.entered.wait(10)
    doomed = [make_record(patient_id=patient) for _ in range(4)]
    env.store.fail_request_ids.add(doomed[1].request_id)
    batch = [Caller(trail, [record]) for record in doomed]
    for caller in batch:
        caller.start()
    _wait_for(lambda: trail.queued_events == len(doomed), "the doomed batch to queue")
    gate.set()
    for caller in [first, *batch]:
        caller.join(10)
        assert caller.done
    assert first.error is None
    assert all(isinstance(caller.error, AuditUnavailable) for caller in batch)
    assert all(caller.error.status == 503 for caller in batch if caller.error is not None)

    later = make_record(patient_id=patient)
    trail.record([later])
    trail.record([doomed[1]])  # the same events succeed once the store works again
    stored = _stored_request_ids(env, patient)
    assert stored == sorted([first.records[0].request_id, later.request_id, doomed[1].request_id])
    stats = trail.stats()
    assert stats.batches_failed == 1
    assert stats.batches_committed == 3


def test_a_caller_that_times_out_is_refused_and_not_recorded_later(env: Env) -> None:
    trail = AuditTrail(database=env.db, store=env.store, timeout_s=0.3, committers=1)
    try:
        patient = _patient()
        gate = env.store.hold_next_write()
        running = Caller(trail, [make_record(patient_id=patient)])
        running.start()
        assert env.store.entered.wait(10)
        queued = Caller(trail, [make_record(patient_id=patient)])
        queued.start()
        queued.join(10)
        running.join(10)
        assert isinstance(queued.error, AuditUnavailable)
        assert isinstance(running.error, AuditUnavailable)
        gate.set()
        trail.record([make_record(patient_id=patient)])  # the committer is past both batches
        stored = set(_stored_request_ids(env, patient))
        # the running batch could no longer be called off: over-recording is the safe side
        assert running.records[0].request_id in stored
        assert queued.records[0].request_id not in stored
    finally:
        trail.close()


def test_the_trail_survives_a_lost_database_connection(env: Env, database_url: str) -> None:
    if env.db.is_sqlite:
        pytest.skip("needs a PostgreSQL server whose connections can be terminated")
    trail = AuditTrail(database=env.db, store=env.store)
    try:
        patient = _patient()
        trail.record([make_record(patient_id=patient)])
        # a database restart, as the pool sees it: every server process of this database ends
        libpq = make_url(database_url).set(drivername="postgresql")
        with psycopg.connect(libpq.render_as_string(hide_password=False), autocommit=True) as c:
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        with pytest.raises(AuditUnavailable):
            trail.record([make_record(patient_id=patient)])
        trail.record([make_record(patient_id=patient)])
        assert len(events_of_patient(env.db, patient)) == 2
        assert trail.stats().batches_failed == 1
    finally:
        trail.close()


# -- shutdown --------------------------------------------------------------------------------------
def test_close_drains_the_queue_then_refuses(env: Env) -> None:
    trail = AuditTrail(database=env.db, store=env.store, committers=1)
    patient = _patient()
    gate = env.store.hold_next_write()
    first = Caller(trail, [make_record(patient_id=patient)])
    first.start()
    assert env.store.entered.wait(10)
    queued = [Caller(trail, [make_record(patient_id=patient)]) for _ in range(5)]
    for caller in queued:
        caller.start()
    _wait_for(lambda: trail.queued_events == 5, "the callers to queue")
    closer = threading.Thread(target=trail.close)
    closer.start()
    _wait_for(lambda: trail.closed, "close() to begin")
    with pytest.raises(AuditUnavailable, match="shut down"):
        trail.record([make_record(patient_id=patient)])
    gate.set()
    closer.join(10)
    assert not closer.is_alive()
    for caller in [first, *queued]:
        caller.join(10)
        assert caller.error is None
    assert len(events_of_patient(env.db, patient)) == 6
    assert trail.stats().events_committed == 6


# -- the index: what the DPO searches by ----------------------------------------------------------
def test_stored_events_are_found_by_patient_agent_date_outcome_and_decision(
    env: Env, trail: AuditTrail
) -> None:
    patient = _patient()
    permit = make_record(patient_id=patient, consent_id=f"consent-{patient}")
    deny = make_record(
        patient_id=patient, permitted=False, consent_id=None, interaction="search-type", query="a=b"
    )
    system = make_record(patient_id=patient, principal="system", interaction="create")
    trail.record([permit, deny])
    with env.db.write() as conn:
        trail.record_in_transaction(conn, [system])

    with env.db.read() as conn:
        ids = [
            row[0]
            for row in conn.execute(
                text(
                    "SELECT resource_id FROM search_reference WHERE param = 'patient'"
                    " AND target_type = 'Patient' AND target_id = :p"
                ),
                {"p": patient},
            )
        ]
        assert len(ids) == 3
        tokens = set(
            conn.execute(
                text(
                    "SELECT param, system, code FROM search_token"
                    " WHERE resource_type = 'AuditEvent' AND resource_id IN (:a, :b, :c)"
                ),
                {"a": ids[0], "b": ids[1], "c": ids[2]},
            ).all()
        )
        dates = conn.execute(
            text(
                "SELECT count(*) FROM search_date WHERE resource_type = 'AuditEvent'"
                " AND param = 'date' AND resource_id IN (:a, :b, :c)"
            ),
            {"a": ids[0], "b": ids[1], "c": ids[2]},
        ).scalar_one()
    assert ("outcome", None, "0") in tokens
    assert ("outcome", None, "8") in tokens
    assert ("action", None, "E") in tokens
    assert ("agent:identifier", "urn:oid:2.16.578.1.12.4.1.4.4", HPR) in tokens
    assert dates == 3

    def count(*params: tuple[str, str]) -> int:
        return search_count(env.db, env.store, [("patient", f"Patient/{patient}"), *params])

    today = datetime.now(UTC).date().isoformat()
    assert count() == 3
    assert count(("outcome", "8")) == 1
    assert count(("outcome", "0")) == 2
    assert count(("date", f"ge{today}")) == 3
    assert count(("date", "lt2020-01-01")) == 0
    assert count(("agent:identifier", f"urn:oid:2.16.578.1.12.4.1.4.4|{HPR}")) == 2
    assert count(("agent:identifier", "urn:stafett:client-id|school-system")) == 1
    assert count(("agent:identifier", "urn:oid:2.16.578.1.12.4.1.4.101|974760673")) == 3
    assert count(("entity", f"Consent/consent-{patient}")) == 1
    assert count(("entity:identifier", f"urn:stafett:consent-decision|{deny.decision_id}")) == 1
    assert count(("subtype", "http://hl7.org/fhir/restful-interaction|create")) == 1
    assert count(("action", "R")) == 1
