"""Fault tolerance of the bus, reconciled exactly: nothing lost, nothing applied twice.

Three faults, each on PostgreSQL with a real Kafka-protocol broker (Tansu):

1. the broker is SIGKILLed while the outbox relay publishes, and a new one starts;
2. a `stafett worker --only router` process is SIGKILLed while it routes, and a new one starts;
3. inbound messages come several times, also while the ingest worker is stopped and restarted.

(A poison message going to the dead-letter topic is covered in test_bus_e2e.py.)

Every count is exact. Where a fault may legitimately duplicate something (at-least-once), the
test predicts from the broker's and the database's state exactly how many duplicates there must
be, and checks that the receiver's deduplication by event id leaves one of each.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest
from sqlalchemy import func, select

from bus import (
    DEFAULT_PARTITIONS,
    BrokerUnavailable,
    BusError,
    Consumer,
    Envelope,
    EventType,
    Message,
    PublishError,
    Record,
    topics,
)
from bus.kafka import KafkaBus
from service.config import Settings
from service.delivery.router import derived_id
from service.outbox import backlog
from service.storage.database import Database
from service.storage.schema import delivery_state, inbound_applied, resources
from service.worker import INGEST_GROUP, ROUTER_GROUP, Worker
from tests.bus_service.faults_support import (
    BASE_URL,
    MARKER,
    KillableBroker,
    OutboxRow,
    Tap,
    committed_offsets,
    mark_partitions,
    migrated_database,
    open_child,
    organization,
    outbox_rows,
    repository_config,
    task,
    wait_until,
    worker_env,
    writer,
)
from tests.conftest import new_postgres_database
from tests.support import synthetic_orgnr

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow]

# consumer-group timeouts that make a Tansu group join take seconds, not minutes
GROUP_TIMEOUTS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "max_poll_interval_ms": 20000,
    "fetch_max_wait_ms": 20,
}


@pytest.fixture
def database(postgres_admin_url: str) -> Iterator[Database]:
    """A fresh, migrated PostgreSQL database for one test."""
    database = migrated_database(new_postgres_database(postgres_admin_url))
    try:
        yield database
    finally:
        database.dispose()


def _settings(database: Database, data_dir: Path, **overrides: Any) -> Settings:
    return Settings(
        environment="test",
        database_url=database.url,
        data_dir=data_dir,
        base_url=BASE_URL,
        **overrides,
    )


def _backlog(database: Database) -> int:
    with database.read() as conn:
        return backlog(conn)


# =========================================================================================
# 1. The broker is killed and restarted while the relay publishes
# =========================================================================================
class WitnessedBus:
    """The relay's bus in test 1: a real KafkaBus, plus the two things a test broker lacks.

    *Durability.* Tansu keeps its log in memory only, so records it acknowledged that nobody
    had read yet are gone when it is killed; a durable broker would still have them. So that
    this artefact cannot pass for a loss (or hide one), `publish_many` returns (and the relay
    marks the rows sent) only once the tap of the broker's current incarnation has read every
    record of the batch; if the broker dies first, the batch is reported unacknowledged and
    the relay publishes it again.

    *A kill at the worst moment.* `arm_kill` makes the next batch the broker stores and
    acknowledges the last: once the tap has read it, the broker is SIGKILLed and the relay gets
    the error it would get had the acknowledgement been lost with the broker. That batch is then
    on the old broker and, published again, on the new one: the only legitimate duplicates.

    Everything else is real: the relay's publishing, its failures against the dead broker, its
    backoff and its marking. While the broker is being restarted (its topics not yet created
    again: Tansu would accept records for partitions its metadata does not show), publishing
    fails as if it were still down.
    """

    def __init__(self, inner: KafkaBus) -> None:
        self.inner = inner
        self.generation = 1
        self.taps: dict[int, Tap] = {}
        self.dead: set[int] = set()  # generations whose broker was killed
        self.restarting = False
        self.acked: list[tuple[int, list[str]]] = []  # (generation, event ids) per success
        self.ack_lost: list[str] = []  # the batch stored on the broker that was killed
        self.unwitnessed: list[tuple[int, list[str]]] = []
        self.errors: list[tuple[int, str]] = []  # (generation, error) of the real publishes
        self.killed = threading.Event()
        self._kill: Callable[[], None] | None = None
        self._in_flight = 0
        self._lock = threading.Lock()

    def arm_kill(self, kill: Callable[[], None]) -> None:
        with self._lock:
            self._kill = kill

    def publish_many(self, records: Sequence[Record]) -> None:
        with self._lock:
            if self.restarting:
                raise BrokerUnavailable("the broker is restarting (test)")
            self._in_flight += 1
            generation = self.generation
        try:
            self.inner.publish_many(records)
        except BusError as exc:
            with self._lock:
                self.errors.append((generation, str(exc)))
            raise
        finally:
            with self._lock:
                self._in_flight -= 1
        ids = [Envelope.from_json(r.value).event_id for r in records]
        tap = self.taps[generation]
        deadline = time.monotonic() + 30
        while not tap.has_all(ids):
            if generation in self.dead or time.monotonic() > deadline:
                self.unwitnessed.append((generation, ids))
                raise PublishError(
                    "acknowledged, but the broker died before the records could be read",
                    failed=list(range(len(records))),
                )
            time.sleep(0.002)
        with self._lock:
            kill, self._kill = self._kill, None
        if kill is not None:
            kill()
            self.dead.add(generation)
            self.ack_lost = ids
            self.killed.set()
            raise PublishError(
                "the broker was killed before its acknowledgement reached the relay",
                failed=list(range(len(records))),
            )
        with self._lock:
            self.acked.append((generation, ids))

    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def set_restarting(self, restarting: bool) -> None:
        with self._lock:
            self.restarting = restarting

    def publish(
        self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        self.publish_many([Record(topic, key, value, tuple(headers))])

    def ensure_topics(self, names: Sequence[str], partitions: int = DEFAULT_PARTITIONS) -> None:
        self.inner.ensure_topics(names, partitions)

    def consumer(self, subscribe: Sequence[str], group: str) -> Any:
        return self.inner.consumer(subscribe, group)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PhasedWriter:
    """Writes Tasks through the repository in phases: the first until `until` is set (at
    most 1000), each later one a fixed count once the test releases it."""

    def __init__(
        self,
        database: Database,
        children: list[str],
        until: threading.Event,
        later: Sequence[int],
    ) -> None:
        self.config = repository_config(database)
        self.children = children
        self.until = until
        self.later = list(later)
        self.gates = [threading.Event() for _ in later]
        self.per_phase = [0] * (1 + len(later))
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-writer", daemon=True)

    @property
    def written(self) -> int:
        return sum(self.per_phase)

    def start(self) -> None:
        self._thread.start()

    def _write(self, phase: int) -> None:
        n = self.written
        child = self.children[n % len(self.children)]
        writer(self.config).create(resource=task(child, f"Tiltak {n}"))
        self.per_phase[phase] += 1
        time.sleep(0.004)  # a steady stream, not one burst

    def _run(self) -> None:
        try:
            while not self.until.is_set() and self.per_phase[0] < 1000:
                self._write(0)
            for phase, (gate, count) in enumerate(zip(self.gates, self.later, strict=True), 1):
                if not gate.wait(60):
                    raise TimeoutError("the test did not release the next phase")
                for _ in range(count):
                    self._write(phase)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()

    def join(self) -> None:
        assert self.done.wait(60), "the writer did not finish"
        assert self.error is None, f"the writer failed: {self.error!r}"


RELAY_BATCH = 8


@pytest.mark.parametrize(
    "idempotent",
    [
        pytest.param(False, id="plain-producer"),
        # the production setting: after a restart that lost the producer ids, KafkaBus drops
        # the producer kafka-python left in its fatal state and starts a new one
        pytest.param(True, id="idempotent-producer"),
    ],
)
def test_broker_killed_and_restarted_mid_stream_loses_nothing(
    database: Database, tmp_path: Path, idempotent: bool
) -> None:
    """The broker is SIGKILLed while the relay publishes; a new one starts on the same port.

    A Worker running only the relay (KafkaBus with 2 s timeouts, batches of 8) publishes while a
    writer thread writes Tasks of five children. After 60 rows were relayed the broker is
    killed just after it stored a batch, before the acknowledgement reaches the relay (the
    moment that produces duplicates). 90 writes follow during the outage, while the relay
    fails against the dead broker and backs off, and 60 after the restart; then the test waits
    until the backlog is 0.

    Reconciliation, all exact:

    * the database: every outbox row is marked sent, and the relay counted each row once;
    * the relay's acknowledged batches: together exactly the outbox, no row twice;
    * what consumers read, from the old broker until it died and from the new one to the end:
      together exactly the outbox's event ids; neither broker holds an id twice; the ids read
      on both are exactly the batch whose acknowledgement was lost (at most one relay batch,
      and the first batch the relay published to the new broker); per child, first
      occurrences come in outbox (commit) order.

    This Tansu build keeps records in memory only, so the new broker starts empty (its topics
    are created again at the restart): see `WitnessedBus` for why that does not weaken the
    reconciliation. With the idempotent producer (the production default) the relay never
    recovers from the restart (a failed publish discards the producer).
    """
    broker = KillableBroker()
    broker.start()
    worker: Worker | None = None
    taps: list[Tap] = []
    try:
        broker.create_topics(topics.ALL_FIXED)
        tap1 = Tap(broker.bootstrap, [topics.CHANGES]).start()
        taps.append(tap1)
        bus = WitnessedBus(
            KafkaBus(
                broker.bootstrap,
                connect_timeout_s=2,
                delivery_timeout_s=2,
                idempotent=idempotent,
            )
        )
        bus.taps[1] = tap1
        settings = _settings(
            database,
            tmp_path,
            kafka_bootstrap=broker.bootstrap,
            access_policy="scopes-only",
            relay_batch_size=RELAY_BATCH,
            relay_poll_ms=5,
        )
        worker = Worker(settings, bus=bus, components=("relay",))
        worker.start()
        relay = worker.relay

        repo = writer(repository_config(database))
        children = [
            repo.create(resource={"resourceType": "Patient", "gender": "female"}).stored.id
            for _ in range(5)
        ]
        stream = PhasedWriter(database, children, until=bus.killed, later=(90, 60))
        stream.start()

        # -- kill the broker right after it stored a batch, while rows are written and relayed
        wait_until(lambda: relay.stats().published >= 60, 30, "60 rows relayed")
        bus.arm_kill(broker.kill)
        wait_until(bus.killed.is_set, 30, "the kill")
        assert stream.per_phase[0] < 1000, "the writer stopped before the kill"
        tap1.stop()
        stream.gates[0].set()  # writes go on during the outage
        wait_until(
            lambda: sum(1 for g, _ in bus.errors if g == 1) >= 1,
            30,
            "a publish to the dead broker to fail",
        )
        wait_until(lambda: stream.per_phase[1] >= 45, 30, "writes during the outage")
        published_at_restart = relay.stats().published

        # -- a new broker on the same port, its topics restored before anything is published
        bus.set_restarting(True)
        wait_until(lambda: bus.in_flight() == 0, 30, "the publish to the dead broker to fail")
        broker.start()
        broker.create_topics(topics.ALL_FIXED)
        tap2 = Tap(broker.bootstrap, [topics.CHANGES]).start()
        taps.append(tap2)
        bus.taps[2] = tap2
        bus.generation = 2
        bus.set_restarting(False)
        stream.gates[1].set()  # and after the restart
        stream.join()
        expected_rows = 5 + stream.written
        wait_until(
            lambda: (
                (_backlog(database) == 0 and relay.stats().published == expected_rows)
                or sum(1 for g, _ in bus.errors if g == 2) >= 3
            ),
            40,
            "the relay to drain the outbox after the restart",
        )
        gen2_errors = [e for g, e in bus.errors if g == 2]
        assert _backlog(database) == 0, f"relay stuck after the restart: {gen2_errors[:3]}"
        # the new broker holds nothing the tap has not read
        marker = mark_partitions(broker.bootstrap, topics.CHANGES)
        wait_until(lambda: tap2.read_through(marker, topics.CHANGES), 30, "the marker")
    finally:
        if worker is not None:
            worker.stop(10)
        for tap in taps:
            tap.stop()
        broker.kill()

    # -- the database and the relay
    rows = outbox_rows(database)
    all_ids = [row.event_id for row in rows]
    assert len(rows) == expected_rows
    assert len(set(all_ids)) == expected_rows
    assert all(row.sent for row in rows)
    stats = relay.stats()
    assert stats.published == expected_rows  # each row marked sent exactly once
    assert stats.failures >= 2  # the lost acknowledgement, and the dead broker
    assert published_at_restart < expected_rows
    acked = [event_id for _, ids in bus.acked for event_id in ids]
    assert len(acked) == expected_rows, "a row was acknowledged (and marked) twice"
    assert set(acked) == set(all_ids)
    assert not bus.unwitnessed, "the broker lost records it had acknowledged"

    # -- what the consumers read
    read1 = [s.envelope.event_id for s in tap1.records()]
    read2 = [s.envelope.event_id for s in tap2.before(marker, topics.CHANGES)]
    assert not [i for i, n in Counter(read1).items() if n > 1], "old broker: an id twice"
    assert not [i for i, n in Counter(read2).items() if n > 1], "new broker: an id twice"
    assert set(read1) | set(read2) == set(all_ids), "events lost"
    # the only duplicates: the batch whose acknowledgement died with the broker, which is the
    # first batch the relay publishes to the new one
    twice = set(read1) & set(read2)
    assert 0 < len(bus.ack_lost) <= RELAY_BATCH
    assert twice == set(bus.ack_lost)
    assert len(read1) + len(read2) == expected_rows + len(bus.ack_lost)
    first_after_restart = next(ids for g, ids in bus.acked if g == 2)
    assert set(bus.ack_lost) <= set(first_after_restart)

    # -- per child, in commit order once duplicates are dropped
    for child in children:
        seen: set[str] = set()
        order = []
        for record in [*tap1.records(), *tap2.before(marker, topics.CHANGES)]:
            if record.key == child and record.envelope.event_id not in seen:
                seen.add(record.envelope.event_id)
                order.append(record.envelope.event_id)
        assert order == [row.event_id for row in rows if row.key == child]


# =========================================================================================
# 2. The router process is SIGKILLed while it routes
# =========================================================================================
class WorkerProcess:
    """`stafett worker --only router` as a subprocess, so that it can be SIGKILLed."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from service.cli import main; raise SystemExit(main())",
                *("worker", "--only", "router"),
            ],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    def freeze(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL: no handler runs, nothing is committed or closed
        self.proc.wait(10)
        self._out.close()

    def alive(self) -> bool:
        """Return True while it runs; fail with its output if it has exited."""
        if self.proc.poll() is None:
            return True
        raise AssertionError(f"the worker exited ({self.proc.returncode}):\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def test_router_killed_mid_stream_and_restarted_delivers_each_change_once(
    database: Database, tmp_path: Path, kafka_bootstrap: str
) -> None:
    """A router process is SIGKILLed in the middle of a batch; a new one takes over.

    Changes of six children (whose Consents let the subscribing organisation read the log)
    flow from an in-process relay through `stafett worker --only router` subprocesses to the
    subscriber's topic, while a writer creates and updates Tasks. The first router is frozen
    (SIGSTOP) the moment new outputs of it appear, until it is caught having published a
    batch's outputs without having committed the batch's offsets, and SIGKILLed there: the
    moment that produces duplicates. Writes go on before the kill, while no router runs, and
    after the new one started. Reconciliation, on the subscriber's topic:

    * after dropping duplicates by event id: exactly one delivery per change and one
      `consent.granted` per child, nothing else;
    * duplicates: the new router re-routes every change from the group's committed offsets
      (frozen by the kill), so the duplicates are exactly the old router's outputs derived from
      changes at or after those offsets (a `consent.granted` is not repeated if the old router
      had stored the child's delivery state); the test predicts that number before the restart
      and the raw count must be the distinct count plus exactly that;
    * per child, the deliveries (first occurrences) come in outbox (commit) order, so each
      resource's versions in version order.
    """
    subscriber, sender = synthetic_orgnr(), synthetic_orgnr()
    while sender == subscriber:
        sender = synthetic_orgnr()
    out_topic = topics.outbound(subscriber)
    config = repository_config(database)
    org_ids = {
        "subscriber": organization(writer(config), subscriber),
        "sender": organization(writer(config), sender),
    }
    children = [open_child(writer(config, sender), org_ids, "subscriber") for _ in range(6)]

    admin = KafkaBus(kafka_bootstrap, **GROUP_TIMEOUTS)
    admin.ensure_topics([*topics.ALL_FIXED, out_topic])
    admin.close()
    tap = Tap(kafka_bootstrap, [topics.CHANGES, out_topic])
    settings = _settings(database, tmp_path, relay_batch_size=10, relay_poll_ms=5)
    relay = Worker(settings, bus=KafkaBus(kafka_bootstrap, **GROUP_TIMEOUTS), components=("relay",))
    env = worker_env(
        database_url=database.url,
        kafka_bootstrap=kafka_bootstrap,
        environment="test",
        base_url=BASE_URL,
        data_dir=str(tmp_path),
        subscribers=f'["{subscriber}"]',
        consumer_session_timeout_ms="6000",
        consumer_max_poll_interval_ms="20000",
        log_json="false",
    )
    processes: list[WorkerProcess] = []
    task_ids: dict[str, str] = {}
    stop_writing = threading.Event()

    def write(phase: int, count: int, until: threading.Event | None = None) -> None:
        """Create 12 Tasks, then mostly update them (new versions), spread over the children.

        With `until`, go on (up to `count` writes) only until it is set.
        """
        repo_config = repository_config(database)
        for n in range(count):
            if until is not None and until.is_set():
                return
            repo = writer(repo_config, sender)
            key = f"{phase}-{n % 12}"
            if key in task_ids and n % 3:
                stored = repo.read(resource_type="Task", id=task_ids[key]).data
                repo.update(
                    resource_type="Task",
                    id=task_ids[key],
                    resource={**stored, "description": f"{stored['description']}+"},
                )
            else:
                child = children[n % len(children)]
                task_ids[key] = repo.create(resource=task(child, f"Tiltak {key}")).stored.id
            time.sleep(0.006)  # a steady stream that the router takes in many small batches

    def routed() -> int:
        return sum(1 for s in tap.records(out_topic) if s.envelope.event_type != MARKER)

    def predict_duplicates() -> int:
        """Return how many of a stopped router's outputs a new router will publish again.

        The new router re-routes every change from the group's committed offsets, so it
        repeats each output of the old router derived from a change at or after them, except
        a consent.granted notice when the old router had already stored that the
        organisation sees the child's log. Its outputs are all that the tap read before a
        marker appended now; the pause lets the broker and the database finish requests
        the stopped process had already sent.
        """
        time.sleep(0.3)
        committed = committed_offsets(kafka_bootstrap, ROUTER_GROUP, topics.CHANGES)
        with database.read() as conn:
            stored_state = set(
                conn.execute(
                    select(delivery_state.c.patient_id).where(
                        delivery_state.c.organization == subscriber
                    )
                ).scalars()
            )
        marker = mark_partitions(kafka_bootstrap, out_topic)
        wait_until(lambda: tap.read_through(marker, out_topic), 30, "the marker")
        outputs = tap.before(marker, out_topic)
        mine = {row.event_id for row in outbox_rows(database)}
        source = {derived_id(e, subscriber): e for e in mine} | {
            derived_id(e, subscriber, EventType.CONSENT_GRANTED): e for e in mine
        }
        sources = {source[s.envelope.event_id] for s in outputs}
        wait_until(
            lambda: {s.envelope.event_id for s in tap.records(topics.CHANGES)} >= sources,
            30,
            "the routed changes",
        )
        where = {
            s.envelope.event_id: (s.partition, s.offset)
            for s in tap.records(topics.CHANGES)
            if s.envelope.event_id in sources
        }

        def rerouted(event_id: str) -> bool:
            partition, offset = where[event_id]
            return offset >= committed.get(partition, 0)

        return sum(
            1
            for s in outputs
            if rerouted(source[s.envelope.event_id])
            and not (
                s.envelope.event_type == EventType.CONSENT_GRANTED
                and s.envelope.subject_key in stored_state
            )
        )

    try:
        tap.start()
        relay.start()
        processes.append(WorkerProcess(env, tmp_path / "worker-1.log"))
        # the children's logs were opened: 18 changes, 18 deliveries and 6 consent.granted
        wait_until(
            lambda: processes[0].alive() and routed() >= 24,
            60,
            "the first router to join and route",
        )
        writing = threading.Thread(target=write, args=(1, 1000, stop_writing), daemon=True)
        writing.start()

        # -- kill the router in the middle of a batch: freeze it (SIGSTOP) until it is caught
        # between publishing a batch's outputs and committing the batch's offsets, then
        # SIGKILL it there
        wait_until(lambda: routed() >= 24 + 40, 60, "the first router's deliveries")
        predicted = 0
        for _attempt in range(30):
            # freeze it the moment new outputs appear: most likely before their commit
            seen = routed()
            wait_until(lambda: routed() > seen, 30, "new outputs", every=0.001)  # noqa: B023
            processes[0].freeze()
            predicted = predict_duplicates()
            if predicted:
                break
            processes[0].thaw()
        processes[0].kill()
        killed_while_writing = writing.is_alive()
        stop_writing.set()
        assert predicted, "the router was never caught between publishing and committing"
        # the prediction stands after the kill (the frozen process did nothing more)
        assert predict_duplicates() == predicted
        writing.join(60)
        write(2, 60)  # changes while no router runs

        # -- a new router, while writes go on
        processes.append(WorkerProcess(env, tmp_path / "worker-2.log"))
        write(3, 60)
        wait_until(lambda: _backlog(database) == 0, 30, "the relay")
        rows = outbox_rows(database)
        mine = {row.event_id for row in rows}
        wait_until(
            lambda: {s.envelope.event_id for s in tap.records(topics.CHANGES)} >= mine,
            30,
            "the relayed changes",
        )
        last_change: dict[int, int] = {}
        for s in tap.records(topics.CHANGES):
            if s.envelope.event_id in mine:
                last_change[s.partition] = max(last_change.get(s.partition, 0), s.offset)
        # the new router has committed every change: it published their outputs before
        wait_until(
            lambda: (
                processes[1].alive()
                and all(
                    committed_offsets(kafka_bootstrap, ROUTER_GROUP, topics.CHANGES).get(p, 0) > n
                    for p, n in last_change.items()
                )
            ),
            60,
            "the new router to route and commit everything",
            every=0.2,
        )
        assert processes[1].alive()
        final = mark_partitions(kafka_bootstrap, out_topic)
        wait_until(lambda: tap.read_through(final, out_topic), 30, "the final marker")
    finally:
        stop_writing.set()
        for process in processes:
            process.kill()
        relay.stop(10)
        tap.stop()

    first_of_child: dict[str, str] = {}
    for row in rows:
        first_of_child.setdefault(row.key, row.event_id)
    expected = {derived_id(row.event_id, subscriber) for row in rows} | {
        derived_id(e, subscriber, EventType.CONSENT_GRANTED) for e in first_of_child.values()
    }
    assert killed_while_writing, "the writer had finished when the router was killed"
    received = [s for s in tap.records(out_topic) if s.envelope.event_type != MARKER]
    raw = [s.envelope.event_id for s in received]
    distinct = set(raw)
    assert distinct == expected, (
        f"missing {len(expected - distinct)}, unexpected {len(distinct - expected)}"
    )
    assert len(distinct) == len(rows) + len(children)
    assert len(raw) - len(distinct) == predicted, (
        f"{len(raw)} read, {len(distinct)} distinct, {predicted} duplicates predicted"
    )
    # per child, first occurrences: the consent.granted notice, then every change in order
    for child in children:
        seen: set[str] = set()
        order = []
        for s in received:
            if s.key == child and s.envelope.event_id not in seen:
                seen.add(s.envelope.event_id)
                order.append(s.envelope.event_id)
        child_rows = [row for row in rows if row.key == child]
        assert order == [
            derived_id(child_rows[0].event_id, subscriber, EventType.CONSENT_GRANTED),
            *(derived_id(row.event_id, subscriber) for row in child_rows),
        ]
        _assert_versions_in_order(child_rows)


def _assert_versions_in_order(rows: list[OutboxRow]) -> None:
    last: dict[tuple[str | None, str | None], int] = {}
    for row in rows:
        key = (row.envelope.resource_type, row.envelope.resource_id)
        version = int(row.envelope.version_id or 0)
        assert version == last.get(key, 0) + 1, f"{key}: version {version} after {last.get(key)}"
        last[key] = version


# =========================================================================================
# 3. Inbound duplicates, also across a stopped and restarted ingest worker
# =========================================================================================
class CrashBeforeOffsetCommit(Worker):
    """A worker that dies between applying a batch and committing its offsets, once asked."""

    crash_when: Callable[[], bool] = staticmethod(lambda: False)

    def _commit(self, consumer: Consumer, messages: list[Message]) -> None:
        if self.crash_when():
            # the batch's effects are durable; its offsets never reach the broker
            self._stop.set()
            raise BusError("simulated crash before the offset commit")
        super()._commit(consumer, messages)


def test_inbound_duplicates_and_an_ingest_restart_apply_each_message_once(
    database: Database, tmp_path: Path
) -> None:
    """The same inbound envelope comes several times, interleaved, and across a restart.

    Phase A (new and repeated messages) is applied and committed by the first ingest worker;
    during phase B that worker dies after applying a batch but before committing its offsets
    (so the broker hands the batch to the next worker again); phase C, published while no
    worker runs, repeats messages of A and B and adds new ones. Reconciliation:

    * exactly one Task, one `inbound_applied` row and one change event per distinct event id;
    * the second worker consumed exactly what the group had not committed (the messages
      published minus the committed offsets, taken from the broker: offsets count from 0 on a
      new broker), and
      applied + duplicates, over both workers = messages published + messages redelivered;
    * nothing was dead-lettered.
    """
    sender = synthetic_orgnr()
    broker = KillableBroker()  # its own broker: the group's offsets start from nothing
    broker.start()
    workers: list[Worker] = []
    producer = KafkaBus(broker.bootstrap)
    try:
        broker.create_topics(topics.ALL_FIXED)
        config = repository_config(database)
        org_ids = {"sender": organization(writer(config), sender)}
        children = [open_child(writer(config), org_ids, "sender") for _ in range(3)]
        settings = _settings(database, tmp_path, kafka_bootstrap=broker.bootstrap)
        run = uuid.uuid4().hex[:6]
        made: dict[str, Envelope] = {}

        def message(n: int) -> Envelope:
            key = f"m{n}"
            if key not in made:
                child = children[n % len(children)]
                made[key] = Envelope.new(
                    event_type="resource.submitted",
                    subject_key=child,
                    sender=sender,
                    payload=task(child, f"Innsendt {run} {n}"),
                )
            return made[key]

        published: list[Envelope] = []

        def publish(numbers: list[int]) -> None:
            envelopes = [message(n) for n in numbers]
            producer.publish_many([Record.of(topics.INBOUND, e) for e in envelopes])
            published.extend(envelopes)

        def start_worker(kind: type[Worker] = Worker) -> Worker:
            worker = kind(
                settings, bus=KafkaBus(broker.bootstrap, **GROUP_TIMEOUTS), components=("ingest",)
            )
            workers.append(worker)
            worker.start()
            return worker

        def handled(worker: Worker) -> int:
            return worker.counters.applied + worker.counters.duplicates

        # phase A: 20 new messages, every third repeated twice more, copies interleaved
        phase_a = [n for n in range(20) for _ in range(3 if n % 3 == 0 else 1)]
        phase_a = phase_a[::2] + phase_a[1::2]
        first = start_worker(CrashBeforeOffsetCommit)
        publish(phase_a)
        wait_until(lambda: handled(first) == len(phase_a), 60, "phase A")
        wait_until(
            lambda: (
                sum(committed_offsets(broker.bootstrap, INGEST_GROUP, topics.INBOUND).values())
                == len(phase_a)
            ),
            30,
            "phase A committed",
            every=0.1,
        )
        # phase B: 80 new messages with repeats of A and of B, stopped part-way
        phase_b = []
        for n in range(20, 100):
            phase_b.append(n)
            if n % 4 == 0:
                phase_b += [n - 20, n]
        # it dies after applying its first batch of phase B, before committing its offsets
        assert isinstance(first, CrashBeforeOffsetCommit)
        first.crash_when = lambda: handled(first) > len(phase_a)
        publish(phase_b)
        wait_until(first._stop.is_set, 60, "phase B under way", every=0.01)
        first.stop(15)
        assert handled(first) < len(phase_a) + len(phase_b), "the worker finished phase B"
        committed = sum(committed_offsets(broker.bootstrap, INGEST_GROUP, topics.INBOUND).values())
        redelivered = handled(first) - committed
        assert redelivered > 0, "the worker was not stopped in the middle of a batch"
        # phase C, while no worker runs: repeats of everything so far, and 10 new messages
        phase_c = [*range(0, 100, 7), *range(100, 110), 0, 100]
        publish(phase_c)
        total = len(phase_a) + len(phase_b) + len(phase_c)

        second = start_worker()
        wait_until(lambda: handled(second) >= total - committed, 60, "the second worker")
        wait_until(
            lambda: (
                sum(committed_offsets(broker.bootstrap, INGEST_GROUP, topics.INBOUND).values())
                == total
            ),
            30,
            "the second worker to commit",
            every=0.1,
        )
    finally:
        for worker in workers:
            worker.stop(15)
        producer.close()
        broker.kill()

    distinct = {e.event_id for e in published}
    assert len(distinct) == 110
    assert len(published) == total
    assert handled(second) == total - committed  # exactly the uncommitted rest, once
    applied = first.counters.applied + second.counters.applied
    duplicates = first.counters.duplicates + second.counters.duplicates
    assert applied == len(distinct)
    assert applied + duplicates == total + redelivered
    assert first.counters.dead_lettered == second.counters.dead_lettered == 0

    with database.read() as conn:
        marked = set(conn.execute(select(inbound_applied.c.event_id)).scalars())
        tasks = conn.execute(
            select(func.count()).select_from(resources).where(resources.c.resource_type == "Task")
        ).scalar_one()
    assert marked == distinct
    assert tasks == len(distinct)  # the children's logs had no Tasks before
    descriptions = Counter(
        row.envelope.payload["description"]
        # the worker's service seals outbox values with the data dir's development key
        for row in outbox_rows(database, second.services.repository.store.sealer.envelope)
        if row.envelope.resource_type == "Task" and row.envelope.payload
    )
    assert descriptions == Counter({f"Innsendt {run} {n}": 1 for n in range(110)})
