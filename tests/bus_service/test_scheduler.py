"""The time-event scheduler: each evaluation date and Consent end is told once, on both databases.

Logs are written through the repository (scopes only, as the seed loader does) and the
scheduler runs on a controllable clock; what it emitted is read back from the outbox.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from sqlalchemy import Connection, delete, insert, select, text
from sqlalchemy.exc import OperationalError

from bus import Envelope, EventType, topics
from service.access import RequestContext, ScopeAccessPolicy
from service.bundles import process_bundle
from service.config import Settings
from service.errors import ServiceUnavailable
from service.repository import FhirRepository, RepositoryConfig
from service.scheduler import TimeEventScheduler, time_event_key
from service.search.extract import OPEN_EVALUATION_PARAM, ResourceIndexer
from service.search.values import parse_date_range
from service.seed import seed_principal
from service.storage.database import Database
from service.storage.migrations import alembic_config, upgrade_database
from service.storage.schema import metadata, outbox, search_date, time_events
from service.storage.store import SqlStore
from tests.conftest import new_postgres_database
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, synthetic_fnr

BASE_URL = "http://stafett.test/fhir"
KINDERGARTEN = "912837467"  # Solsikken barnehage (docs/stafettlogg-fhir.md §17)
DEMO = Path(__file__).resolve().parents[2] / "examples" / "stafettlogg" / "demo-transaction.json"
TASK_TYPE = "https://stafett.no/fhir/CodeSystem/task-type"
CLOSED = ("completed", "cancelled", "failed", "entered-in-error", "rejected", "draft")
OPEN = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")
_rng = random.Random(20261122)


def at(value: str) -> datetime:
    """Return an aware instant from ISO text (UTC when no offset is given)."""
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: str) -> None:
        self.now = at(now)

    def set(self, now: str) -> None:
        self.now = at(now)

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Log:
    """A child's log as the tests need it: the Patient and CarePlan ids."""

    patient: str
    careplan: str


@dataclass(frozen=True)
class Emitted:
    """One outbox row of the scheduler."""

    topic: str
    key: str
    envelope: Envelope


class Seeder:
    """Writes stafettlogg resources through the repository, as the seed loader does."""

    def __init__(self, repo: FhirRepository) -> None:
        self.repo = repo

    def create(self, resource: dict[str, Any]) -> str:
        return self.repo.create(resource=resource).stored.id

    def change(self, resource_type: str, id: str, **changes: Any) -> None:
        data = self.repo.read(resource_type=resource_type, id=id).data
        self.repo.update(resource_type=resource_type, id=id, resource={**data, **changes})

    def organization(self, orgnr: str) -> str:
        return self.create(
            {
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": orgnr}],
                "active": True,
                "name": f"Tjeneste {orgnr}",
            }
        )

    def log(self, *, stafettholder_at: str | None = KINDERGARTEN) -> Log:
        patient = self.create(
            {
                "resourceType": "Patient",
                "identifier": [{"system": FNR_SYSTEM, "value": synthetic_fnr(_rng)}],
                "name": [{"family": "Eksempelsen", "given": ["Nora"]}],
                "birthDate": "2021-03-15",
            }
        )
        careplan = self.create(
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "https://stafett.no/fhir/CodeSystem/log-category",
                                "code": "stafettlogg",
                            }
                        ]
                    }
                ],
                "subject": {"reference": f"Patient/{patient}"},
                "description": "Oppmerksomhet: sier lite i grupper.",
            }
        )
        if stafettholder_at is not None:
            organization = self.organization(stafettholder_at)
            role = self.create(
                {
                    "resourceType": "PractitionerRole",
                    "active": True,
                    "organization": {"reference": f"Organization/{organization}"},
                }
            )
            self.create(
                {
                    "resourceType": "CareTeam",
                    "status": "active",
                    "subject": {"reference": f"Patient/{patient}"},
                    "participant": [
                        {
                            "role": [
                                {
                                    "coding": [
                                        {
                                            "system": "https://stafett.no/fhir/CodeSystem/"
                                            "careteam-role",
                                            "code": "stafettholder",
                                        }
                                    ]
                                }
                            ],
                            "member": {"reference": f"PractitionerRole/{role}"},
                            "period": {"start": "2026-08-31"},
                        }
                    ],
                    "managingOrganization": [{"reference": f"Organization/{organization}"}],
                }
            )
        return Log(patient=patient, careplan=careplan)

    def task(self, log: Log, *, end: str, status: str = "in-progress") -> str:
        return self.create(
            {
                "resourceType": "Task",
                "basedOn": [{"reference": f"CarePlan/{log.careplan}"}],
                "status": status,
                "intent": "plan",
                "code": {"coding": [{"system": TASK_TYPE, "code": "measure", "display": "Tiltak"}]},
                "description": "Språkgruppe i barnehagen, 20 minutter fire dager i uken.",
                "for": {"reference": f"Patient/{log.patient}"},
                "restriction": {"period": {"start": "2026-09-07", "end": end}},
            }
        )

    def consent(self, log: Log, *, end: str, status: str = "active") -> str:
        return self.create(
            {
                "resourceType": "Consent",
                "status": status,
                "scope": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                            "code": "patient-privacy",
                        }
                    ]
                },
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": f"Patient/{log.patient}"},
                "policyRule": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                            "code": "OPTIN",
                        }
                    ]
                },
                "provision": {"type": "permit", "period": {"start": "2026-08-31", "end": end}},
            }
        )


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def database(database_url: str) -> Iterator[Database]:
    """Return the module's migrated database (one per backend)."""
    db = Database(database_url, pool_size=4)
    upgrade_database(db.engine)
    yield db
    db.dispose()


@pytest.fixture(scope="module")
def indexer() -> ResourceIndexer:
    """Return the indexer (compiling the search parameters once per module)."""
    return ResourceIndexer(base_url=BASE_URL)


@pytest.fixture
def seed(database: Database, indexer: ResourceIndexer) -> Seeder:
    """Empty every table, then return a seeder writing through the repository."""
    with database.write() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(delete(table))
    config = RepositoryConfig(
        database=database,
        store=SqlStore(indexer=indexer),
        policy=ScopeAccessPolicy(),
        base_url=BASE_URL,
        default_page_size=20,
        max_page_size=100,
    )
    return Seeder(
        FhirRepository(config, RequestContext(principal=seed_principal(), request_id="t"))
    )


def scheduler(database: Database, clock: Clock) -> TimeEventScheduler:
    """Return a new scheduler instance (a new instance is what a restarted worker has)."""
    return TimeEventScheduler(database=database, base_url=BASE_URL, notice_days=30, clock=clock)


def emitted(database: Database) -> list[Emitted]:
    """Return the scheduler's outbox rows in order."""
    with database.read() as conn:
        rows = conn.execute(
            select(outbox.c.topic, outbox.c.key, outbox.c.value).order_by(outbox.c.seq)
        ).all()
    return [Emitted(topic, key, Envelope.from_json(value)) for topic, key, value in rows]


def pg_only(database: Database) -> None:
    """Skip on SQLite, whose writers never run at the same time (one process-wide lock)."""
    if database.is_sqlite:
        pytest.skip("needs concurrent writers: PostgreSQL")


# -- evaluation.due ------------------------------------------------------------------------------


def test_evaluation_due_is_told_once_when_the_date_arrives(
    database: Database, seed: Seeder
) -> None:
    log = seed.log()
    task = seed.task(log, end="2027-03-01")
    clock = Clock("2027-02-28T23:59:59.999999")
    first = scheduler(database, clock)

    assert first.scan() == 0
    assert emitted(database) == []

    clock.set("2027-03-01T00:00:00")
    assert first.scan() == 1
    rows = emitted(database)
    assert [row.topic for row in rows] == [topics.outbound(KINDERGARTEN), topics.FAMILY]
    assert {row.key for row in rows} == {log.patient}
    for row in rows:
        envelope = row.envelope
        assert envelope.event_type == EventType.EVALUATION_DUE
        assert envelope.subject_key == log.patient
        assert (envelope.resource_type, envelope.resource_id, envelope.version_id) == (
            "Task",
            task,
            "1",
        )
        assert envelope.occurred_at == clock.now
        assert envelope.payload == {
            "evaluationDate": "2027-03-01",
            "code": {"system": TASK_TYPE, "code": "measure", "display": "Tiltak"},
            "basedOn": f"CarePlan/{log.careplan}",
        }
    # one id per copy (the outbox needs unique ids), one correlation id for the event
    assert len({row.envelope.event_id for row in rows}) == 2
    assert len({row.envelope.correlation_id for row in rows}) == 1

    clock.set("2027-03-02T12:00:00")
    assert first.scan() == 0
    assert scheduler(database, clock).scan() == 0  # a restarted worker repeats nothing
    assert len(emitted(database)) == 2
    with database.read() as conn:
        keys = conn.execute(select(time_events.c.key)).scalars().all()
    assert keys == [
        time_event_key("evaluation.due", "Task", task, parse_date_range("2027-03-01")[0])
    ]


def test_a_moved_evaluation_date_is_told_again_when_it_arrives(
    database: Database, seed: Seeder
) -> None:
    log = seed.log()
    task = seed.task(log, end="2027-03-01")
    clock = Clock("2027-03-01T08:00:00")
    assert scheduler(database, clock).scan() == 1

    # evaluated, and continued with a new planned evaluation (§11: outcome b)
    seed.change("Task", task, restriction={"period": {"start": "2026-09-07", "end": "2027-04-01"}})
    clock.set("2027-03-31T23:59:59")
    assert scheduler(database, clock).scan() == 0
    clock.set("2027-04-01T00:00:01")
    assert scheduler(database, clock).scan() == 1
    assert scheduler(database, clock).scan() == 0

    family = [row.envelope for row in emitted(database) if row.topic == topics.FAMILY]
    assert [(e.payload or {}).get("evaluationDate") for e in family] == [
        "2027-03-01",
        "2027-04-01",
    ]
    assert [e.version_id for e in family] == ["1", "2"]


def test_only_open_tasks_are_due(database: Database, seed: Seeder) -> None:
    log = seed.log()
    tasks = {status: seed.task(log, end="2027-03-01", status=status) for status in OPEN + CLOSED}
    # completed before its date arrives: never due
    early = seed.task(log, end="2027-03-01")
    seed.change("Task", early, status="completed")

    assert scheduler(database, Clock("2027-03-05T00:00:00")).scan() == len(OPEN)
    told = {row.envelope.resource_id for row in emitted(database) if row.topic == topics.FAMILY}
    assert told == {tasks[status] for status in OPEN}


def test_an_evaluation_time_with_an_offset_is_due_at_that_instant(
    database: Database, seed: Seeder
) -> None:
    log = seed.log()
    seed.task(log, end="2027-03-01T10:00:00+01:00")
    clock = Clock("2027-03-01T08:59:59")
    assert scheduler(database, clock).scan() == 0
    clock.set("2027-03-01T09:00:00")
    assert scheduler(database, clock).scan() == 1


def test_a_child_without_stafettholder_still_gets_the_family_event(
    database: Database, seed: Seeder
) -> None:
    log = seed.log(stafettholder_at=None)
    seed.task(log, end="2027-03-01")
    seed.consent(log, end="2027-03-01")

    assert scheduler(database, Clock("2027-03-02T00:00:00")).scan() == 2
    rows = emitted(database)
    assert sorted((row.envelope.event_type, row.topic) for row in rows) == [
        (EventType.CONSENT_EXPIRED, topics.CHANGES),
        (EventType.CONSENT_EXPIRED, topics.FAMILY),
        (EventType.EVALUATION_DUE, topics.FAMILY),
    ]
    assert {row.key for row in rows} == {log.patient}


def test_the_demo_log_tells_its_stafettholder(database: Database, seed: Seeder) -> None:
    process_bundle(seed.repo, orjson.loads(DEMO.read_bytes()), BASE_URL)
    # the three open Tasks of the demo log are evaluated on 2026-12-08
    assert scheduler(database, Clock("2026-12-07T23:00:00")).scan() == 0
    assert scheduler(database, Clock("2026-12-08T07:00:00")).scan() == 3
    rows = emitted(database)
    assert {row.topic for row in rows} == {topics.outbound(KINDERGARTEN), topics.FAMILY}
    assert len(rows) == 6
    assert {(row.envelope.payload or {})["evaluationDate"] for row in rows} == {"2026-12-08"}


def test_the_index_holds_open_tasks_only(
    database: Database, seed: Seeder, indexer: ResourceIndexer
) -> None:
    log = seed.log()
    task = seed.task(log, end="2027-03-01")

    def indexed() -> list[tuple[int, int]]:
        with database.read() as conn:
            return [
                (row.low, row.high)
                for row in conn.execute(
                    select(search_date.c.low, search_date.c.high).where(
                        search_date.c.resource_id == task,
                        search_date.c.param == OPEN_EVALUATION_PARAM,
                    )
                )
            ]

    assert indexed() == [parse_date_range("2027-03-01")]
    seed.change("Task", task, status="completed")
    assert indexed() == []
    # internal: not a search parameter clients can use or see in the CapabilityStatement
    assert OPEN_EVALUATION_PARAM not in indexer.params("Task")


# -- consent.expires-soon and consent.expired ----------------------------------------------------


def test_a_consent_is_told_expiring_soon_and_then_expired_once_each(
    database: Database, seed: Seeder
) -> None:
    log = seed.log()
    consent = seed.consent(log, end="2027-11-01")
    clock = Clock("2027-10-01T23:59:59")

    assert scheduler(database, clock).scan() == 0
    clock.set("2027-10-02T00:00:00")  # 30 days before the end date
    assert scheduler(database, clock).scan() == 1
    soon = emitted(database)
    assert [row.topic for row in soon] == [topics.outbound(KINDERGARTEN), topics.FAMILY]
    for row in soon:
        assert row.key == log.patient
        assert row.envelope.event_type == EventType.CONSENT_EXPIRES_SOON
        assert (row.envelope.resource_type, row.envelope.resource_id) == ("Consent", consent)
        assert row.envelope.payload == {"periodEnd": "2027-11-01", "consentId": consent}

    for now in ("2027-10-02T00:01:00", "2027-10-31T12:00:00", "2027-11-01T23:59:59"):
        clock.set(now)  # the Consent grants all through its last day
        assert scheduler(database, clock).scan() == 0
    clock.set("2027-11-02T00:00:00")
    assert scheduler(database, clock).scan() == 1
    expired = emitted(database)[len(soon) :]
    assert [row.topic for row in expired] == [
        topics.outbound(KINDERGARTEN),
        topics.FAMILY,
        topics.CHANGES,
    ]
    for row in expired:
        assert row.envelope.event_type == EventType.CONSENT_EXPIRED
        assert row.envelope.payload == {"periodEnd": "2027-11-01", "consentId": consent}

    clock.set("2028-01-01T00:00:00")
    assert scheduler(database, clock).scan() == 0
    assert len(emitted(database)) == 5


def test_a_consent_found_already_expired_is_told_expired_only(
    database: Database, seed: Seeder
) -> None:
    log = seed.log()
    seed.consent(log, end="2027-01-31")
    assert scheduler(database, Clock("2027-06-01T00:00:00")).scan() == 1
    assert {row.envelope.event_type for row in emitted(database)} == {EventType.CONSENT_EXPIRED}


@pytest.mark.parametrize("status", ["inactive", "draft", "rejected", "entered-in-error"])
def test_a_consent_that_is_not_active_is_not_told(
    database: Database, seed: Seeder, status: str
) -> None:
    log = seed.log()
    seed.consent(log, end="2027-11-01", status=status)
    assert scheduler(database, Clock("2027-10-15T00:00:00")).scan() == 0
    assert scheduler(database, Clock("2027-12-01T00:00:00")).scan() == 0


def test_a_withdrawn_consent_is_not_told_expired(database: Database, seed: Seeder) -> None:
    log = seed.log()
    consent = seed.consent(log, end="2027-11-01")
    assert scheduler(database, Clock("2027-10-15T00:00:00")).scan() == 1
    seed.change("Consent", consent, status="inactive")
    assert scheduler(database, Clock("2027-12-01T00:00:00")).scan() == 0


# -- several workers -----------------------------------------------------------------------------


def test_concurrent_schedulers_tell_each_event_once(
    database: Database, database_url: str, seed: Seeder, caplog: pytest.LogCaptureFixture
) -> None:
    expected = 0
    for _ in range(4):
        log = seed.log()
        for day in range(1, 6):
            seed.task(log, end=f"2027-03-{day:02d}")
        seed.consent(log, end="2027-02-15")
        expected += 6
    # on PostgreSQL each worker has its own engine and connections, as separate processes do;
    # on SQLite the process-wide write lock is shared, as in the embedded server
    other = database if database.is_sqlite else Database(database_url, pool_size=4)
    barrier = threading.Barrier(2)

    def clock() -> datetime:
        barrier.wait(timeout=30)  # both scan the same candidates at the same moment
        return at("2027-03-10T00:00:00")

    workers = [
        TimeEventScheduler(database=db, base_url=BASE_URL, notice_days=30, clock=clock)
        for db in (database, other)
    ]
    counts: list[int] = []
    errors: list[BaseException] = []

    def run(worker: TimeEventScheduler) -> None:
        try:
            counts.append(worker.scan())
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(worker,)) for worker in workers]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        if other is not database:
            other.dispose()
    assert errors == []
    # the loser skips quietly: no failed insert caught and logged on the way
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert sum(counts) == expected
    rows = emitted(database)
    assert len({row.envelope.event_id for row in rows}) == len(rows)
    assert len({row.envelope.correlation_id for row in rows}) == expected
    # 4 children x (5 Tasks + 1 Consent) to their stafettholder and family; expiry also changes
    assert len(rows) == expected * 2 + 4


@pytest.mark.parametrize(("outcome", "expected"), [("commit", 0), ("rollback", 1)])
def test_a_worker_that_loses_the_race_waits_and_skips(
    database: Database,
    seed: Seeder,
    outcome: str,
    expected: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pg_only(database)
    log = seed.log()
    task = seed.task(log, end="2027-03-01")
    key = time_event_key("evaluation.due", "Task", task, parse_date_range("2027-03-01")[0])
    caplog.set_level(logging.INFO, logger="stafett.scheduler")
    result: list[int] = []
    with database.engine.connect() as rival:
        transaction = rival.begin()
        # another worker claimed the event and has not committed yet
        rival.execute(insert(time_events).values(key=key, emitted_at=0))
        thread = threading.Thread(
            target=lambda: result.append(scheduler(database, Clock("2027-03-02")).scan())
        )
        thread.start()
        _wait_for_lock_wait(database)
        if outcome == "commit":
            transaction.commit()
        else:
            transaction.rollback()
        thread.join(timeout=30)
    assert result == [expected]
    assert len(emitted(database)) == 2 * expected
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def _wait_for_lock_wait(database: Database) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with database.read() as conn:
            waiting = conn.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted"))
            if waiting.scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError("the scheduler never waited for the rival's claim")


# -- the loop ------------------------------------------------------------------------------------


class FlakyDatabase(Database):
    """A database that is unreachable for the first reads."""

    def __init__(self, url: str, failures: list[Exception]) -> None:
        super().__init__(url, pool_size=2)
        self.failures = failures

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        if self.failures:
            raise self.failures.pop(0)
        with super().read() as conn:
            yield conn


def test_run_waits_out_database_outages_and_then_emits(
    database: Database, database_url: str, seed: Seeder, caplog: pytest.LogCaptureFixture
) -> None:
    log = seed.log()
    seed.task(log, end="2027-03-01")
    down = [
        ServiceUnavailable("The database is not reachable; try again shortly"),
        OperationalError("SELECT 1", {}, Exception("connection refused")),
    ]
    flaky = FlakyDatabase(database_url, down)
    worker = TimeEventScheduler(
        database=flaky,
        base_url=BASE_URL,
        notice_days=30,
        clock=lambda: at("2027-03-02T00:00:00"),
        max_backoff_s=0.05,
    )
    stop = threading.Event()
    caplog.set_level(logging.INFO, logger="stafett.scheduler")
    thread = threading.Thread(target=worker.run, args=(stop, 0.05))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while len(emitted(database)) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(timeout=10)
        flaky.dispose()
    assert not thread.is_alive()
    assert len(emitted(database)) == 2
    waits = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(waits) == 2
    assert all(r.name == "stafett.scheduler" for r in waits)


# -- migration 0004 ------------------------------------------------------------------------------


def test_migration_0004_backfills_open_tasks(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest, indexer: ResourceIndexer
) -> None:
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'migrate.db'}"
    else:
        url = new_postgres_database(request.getfixturevalue("postgres_admin_url"))
    fresh = Database(url, pool_size=2)
    try:
        upgrade_database(fresh.engine)
        config = RepositoryConfig(
            database=fresh,
            store=SqlStore(indexer=indexer),
            policy=ScopeAccessPolicy(),
            base_url=BASE_URL,
            default_page_size=20,
            max_page_size=100,
        )
        seed = Seeder(
            FhirRepository(config, RequestContext(principal=seed_principal(), request_id="t"))
        )
        log = seed.log()
        due = seed.task(log, end="2027-03-01")
        closed = seed.task(log, end="2027-03-01", status="completed")
        seed.task(log, end="2027-03-01", status="on-hold")
        with fresh.write() as conn:
            # the state before 0004: Tasks without the internal parameter
            conn.execute(delete(search_date).where(search_date.c.param == OPEN_EVALUATION_PARAM))
            _set_revision(conn, "0003")
        # 0004 alone: the later migrations' tables are there already
        upgrade_database(fresh.engine, "0004")
        with fresh.read() as conn:
            rows = conn.execute(
                select(search_date.c.resource_id, search_date.c.low, search_date.c.high).where(
                    search_date.c.param == OPEN_EVALUATION_PARAM
                )
            ).all()
        assert len(rows) == 2
        assert closed not in {row.resource_id for row in rows}
        assert (due, *parse_date_range("2027-03-01")) in [tuple(row) for row in rows]
        assert scheduler(fresh, Clock("2027-03-01T12:00:00")).scan() == 2

        _downgrade(fresh, "0003")
        with fresh.read() as conn:
            left = conn.execute(
                select(search_date.c.resource_id).where(
                    search_date.c.param == OPEN_EVALUATION_PARAM
                )
            ).all()
        assert left == []
    finally:
        fresh.dispose()


def _set_revision(conn: Connection, revision: str) -> None:
    conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": revision})


def _downgrade(database: Database, revision: str) -> None:
    config = alembic_config()
    with database.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def test_with_the_consent_policy_an_unpermitted_stafettholder_hears_nothing(
    database: Database, seed: Seeder
) -> None:
    # the log has no Consent naming the kindergarten: only the family is told
    log = seed.log()
    seed.task(log, end="2027-03-01")
    clock = Clock("2027-03-01T08:00:00")
    guarded = TimeEventScheduler(
        database=database,
        base_url=BASE_URL,
        notice_days=30,
        clock=clock,
        policy=Settings(environment="test").consent_policy(),
    )
    assert guarded.scan() == 1
    assert [row.topic for row in emitted(database)] == [topics.FAMILY]
