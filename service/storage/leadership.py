"""One worker at a time: a PostgreSQL session advisory lock held for as long as a block runs.

The outbox relay and the audit sealer must each run in one worker only (order, one chain),
while any number of workers stand by to take over. A session lock on its own connection
does that without a table: it is released when the block ends, and dies with the connection
if the worker does, so a standby gets it within its next try. SQLite has one writer anyway.
"""

from __future__ import annotations

import contextlib

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError, OperationalError

from service.errors import ServiceUnavailable
from service.storage.database import Database

__all__ = ["Leadership"]


class Leadership:
    """Try to take the named lock on entering; `held` says whether this worker leads."""

    def __init__(self, database: Database, *, key: str, role: str) -> None:
        self._database = database
        self._key = key
        self._role = role
        self._conn: Connection | None = None
        self.held = False

    def __enter__(self) -> Leadership:
        if self._database.is_sqlite:
            self.held = True
            return self
        try:
            conn = self._database.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        except OperationalError as exc:
            raise ServiceUnavailable("The database is not reachable") from exc
        got = conn.execute(
            text("SELECT pg_try_advisory_lock(hashtextextended(:key, 0))"), {"key": self._key}
        ).scalar_one()
        if not got:
            conn.close()
            return self
        self._conn = conn
        self.held = True
        return self

    def check(self) -> None:
        """Raise ServiceUnavailable if the lock's connection is gone (so is the lock)."""
        if self._conn is None:
            return
        try:
            self._conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise ServiceUnavailable(f"Lost the {self._role} lock's database connection") from exc

    def __exit__(self, *exc: object) -> None:
        if self._conn is None:
            return
        # the connection goes back to the pool, so release the session lock explicitly; if the
        # connection is dead the lock died with it, and the connection is discarded
        try:
            self._conn.execute(
                text("SELECT pg_advisory_unlock(hashtextextended(:key, 0))"), {"key": self._key}
            )
        except DBAPIError:
            with contextlib.suppress(DBAPIError):
                self._conn.invalidate()
        finally:
            with contextlib.suppress(DBAPIError):
                self._conn.close()
