"""Write outbox rows inside the transaction of the change they report."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from sqlalchemy import Connection, func, insert, select, text

from bus import Record
from service.crypto.envelope import Envelope
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.schema import outbox

__all__ = ["Outbox", "backlog", "outbox_context"]


def outbox_context(event_id: str) -> str:
    """Return the encryption context of an outbox row's value."""
    return f"outbox/{event_id}"


_PG_LOCK_AND_INSERT = text(
    """
WITH locked AS (
  SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) AS n
  FROM (SELECT unnest(CAST(:keys AS text[])) AS k ORDER BY 1) AS sorted_keys
)
INSERT INTO outbox (event_id, topic, key, value, created_at)
SELECT r.event_id, r.topic, r.key, r.value, r.created_at
FROM locked, ROWS FROM (
  jsonb_to_recordset(CAST(:rows AS jsonb))
    AS (event_id text, topic text, key text, value text, created_at bigint)
) WITH ORDINALITY AS r(event_id, topic, key, value, created_at, n)
ORDER BY r.n"""
)


class Outbox:
    """Adds events to the outbox with the caller's transaction, in commit order per key."""

    def __init__(self, database: Database, *, envelope: Envelope | None = None) -> None:
        self._database = database
        # change events carry the resource, sealed fields included: encrypted at rest here,
        # opened by the relay just before publishing to the (permitted) consumers
        self._envelope = envelope

    def add(self, conn: Connection, records: Sequence[tuple[str, Record]]) -> None:
        """Store (event id, record) pairs; they commit or roll back with the transaction.

        On PostgreSQL each key (a child) is locked until commit first, so two transactions
        writing the same child's log take their sequence numbers in commit order, and the
        relay, which publishes by sequence, keeps each child's events in order.
        """
        if not records:
            return
        created = now_micros()
        envelope = self._envelope
        rows = [
            {
                "event_id": event_id,
                "topic": record.topic,
                "key": record.key,
                "value": record.value.decode()
                if envelope is None
                else envelope.seal_text(record.value, context=outbox_context(event_id)),
                "created_at": created,
            }
            for event_id, record in records
        ]
        if conn.dialect.name == "postgresql":
            # one round trip: lock the children (sorted, so transactions never deadlock on
            # each other's keys), then insert, in one statement
            keys = sorted({f"stafett-outbox:{record.key}" for _, record in records})
            conn.execute(_PG_LOCK_AND_INSERT, {"keys": keys, "rows": orjson.dumps(rows).decode()})
            return
        conn.execute(insert(outbox), rows)  # SQLite: writers are serialised already


def backlog(conn: Connection) -> int:
    """Return how many outbox rows wait to be published."""
    return int(
        conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
        ).scalar_one()
    )
