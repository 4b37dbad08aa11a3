"""Engine construction for PostgreSQL and the embedded SQLite default, plus health checks."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, OperationalError

from service.errors import ServiceUnavailable

__all__ = ["Database"]


class Database:
    """Owns the SQLAlchemy engine and the transaction boundaries of the service."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = url.removeprefix("sqlite:///")
            if path and path != url and not path.startswith(":memory:"):
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            # No pre-ping: it costs every request a round trip. A dead connection fails its
            # request with 503 and is discarded; recycling keeps idle ones from going stale.
            kwargs.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_recycle=1800,
                # autocommit reads have nothing to roll back when returned to the pool
                skip_autocommit_rollback=True,
            )
        self.engine: Engine = create_engine(url, **kwargs)
        # Reads run in autocommit: no BEGIN/ROLLBACK round trips around a single SELECT.
        self._read_engine: Engine = (
            self.engine
            if self.is_sqlite
            else self.engine.execution_options(isolation_level="AUTOCOMMIT")
        )
        # SQLite allows one writer; serialising writes here avoids "database is locked"
        # failures from deferred transactions upgrading their lock under concurrency.
        self._write_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else contextlib.nullcontext()
        )
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            # pysqlite's own transaction handling defers BEGIN and breaks SAVEPOINTs, so a
            # failed transaction Bundle would keep its earlier writes; emit BEGIN ourselves.
            event.listen(self.engine, "begin", _sqlite_begin)

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """Open a connection for reading."""
        try:
            with self._read_engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    @contextlib.contextmanager
    def autocommit(self) -> Iterator[Connection]:
        """Open a connection where each statement commits on its own (PostgreSQL only).

        One statement that writes many rows is atomic by itself; without BEGIN and COMMIT it
        takes one round trip instead of three.
        """
        if self.is_sqlite:
            raise RuntimeError("autocommit() is for PostgreSQL; use write() on SQLite")
        with self.read() as conn:
            yield conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """Open a transaction that commits on success and rolls back on any error."""
        try:
            with self._write_lock, self.engine.connect() as conn:
                if self.is_sqlite:
                    # take SQLite's write lock at BEGIN: a deferred transaction that reads and
                    # then writes fails at once with "database is locked" when another process
                    # (the worker) wrote meanwhile, instead of waiting for the busy timeout
                    conn.info["stafett_begin"] = "BEGIN IMMEDIATE"
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    @staticmethod
    @contextlib.contextmanager
    def planned_for_values(conn: Connection) -> Iterator[None]:
        """Run the statements inside unprepared, so PostgreSQL plans each for its values.

        psycopg prepares a statement after five executions and PostgreSQL may then reuse a
        generic plan that cannot see the values: measured 600 ms instead of 1 ms for
        Task?patient=X&status=Y on 100,000 resources, since search values are skewed (one
        child vs. a third of all Tasks). Simple lookups keep prepared statements and cached
        plans, which saves the planning (about 0.8 ms for a join) on every request.
        """
        driver = conn.connection.driver_connection if not conn.closed else None
        if driver is None or not hasattr(driver, "prepare_threshold"):
            yield
            return
        saved = driver.prepare_threshold
        driver.prepare_threshold = None
        try:
            yield
        finally:
            driver.prepare_threshold = saved

    def lock_key(self, conn: Connection, key: str) -> None:
        """Serialise transactions on a key until this transaction ends (PostgreSQL only).

        SQLite needs nothing: its writes are serialised by the process-wide write lock.
        """
        if not self.is_sqlite:
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": key}
            )

    def lock_keys(self, conn: Connection, keys: Iterable[str]) -> None:
        """Take `lock_key` for several keys with one statement, in sorted order.

        The same locks as one `lock_key` each (they are re-entrant, so taking one again later
        in the transaction is harmless); sorted, so two transactions never wait on each other
        in opposite orders for the keys they take here.
        """
        wanted = sorted(set(keys))
        if wanted and not self.is_sqlite:
            conn.execute(_LOCK_KEYS, {"keys": wanted})

    def ping(self) -> None:
        """Raise ServiceUnavailable unless the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise _unavailable(exc) from exc

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


_LOCK_KEYS = text(
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
    " FROM (SELECT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS sorted_keys"
)


def _unavailable(exc: Exception) -> ServiceUnavailable:
    # The driver's message can carry host names and SQL; keep it for logs, not for clients.
    return ServiceUnavailable("The database is not reachable; try again shortly")


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(conn.info.pop("stafett_begin", "BEGIN"))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # see _sqlite_begin
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
