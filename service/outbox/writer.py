"""Write outbox rows inside the transaction of the change they report."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, func, insert, select

from bus import Record
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.schema import outbox

__all__ = ["Outbox", "backlog"]


class Outbox:
    """Adds events to the outbox with the caller's transaction, in commit order per key."""

    def __init__(self, database: Database) -> None:
        self._database = database

    def add(self, conn: Connection, records: Sequence[tuple[str, Record]]) -> None:
        """Store (event id, record) pairs; they commit or roll back with the transaction.

        On PostgreSQL each key (a child) is locked until commit first, so two transactions
        writing the same child's log take their sequence numbers in commit order, and the
        relay, which publishes by sequence, keeps each child's events in order.
        """
        if not records:
            return
        for key in sorted({record.key for _, record in records}):
            self._database.lock_key(conn, f"stafett-outbox:{key}")
        created = now_micros()
        conn.execute(
            insert(outbox),
            [
                {
                    "event_id": event_id,
                    "topic": record.topic,
                    "key": record.key,
                    "value": record.value.decode(),
                    "created_at": created,
                    "sent_at": None,
                }
                for event_id, record in records
            ],
        )


def backlog(conn: Connection) -> int:
    """Return how many outbox rows wait to be published."""
    return int(
        conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        ).scalar_one()
    )
