"""The outbox relay: publish unsent rows in order, then mark them sent.

Only one relay publishes at a time (a PostgreSQL session advisory lock; other workers wait as
standbys), so rows leave in sequence order and each child's events stay ordered. Publishing
and marking are not atomic: after a crash in between, rows are published again with the same
event ids, and consumers drop what they have seen (at-least-once, idempotent consumers).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from bus import Bus, BusError, Record
from service.crypto.envelope import TEXT_PREFIX, Envelope
from service.crypto.errors import KeyUnavailable
from service.errors import ServiceUnavailable
from service.metrics import WORKER_EVENTS
from service.outbox.writer import outbox_context
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.leadership import Leadership
from service.storage.schema import outbox

__all__ = ["OutboxRelay", "RelayStats"]

_log = logging.getLogger("stafett.outbox")
_RELAY_LOCK = "stafett-outbox-relay"


@dataclass(frozen=True, slots=True)
class RelayStats:
    """Counters of a relay since it started."""

    published: int
    batches: int
    failures: int
    purged: int


class OutboxRelay:
    """Moves outbox rows to the bus; `run` loops until stopped, `relay_once` does one batch."""

    def __init__(
        self,
        *,
        database: Database,
        bus: Bus,
        batch_size: int = 500,
        poll_interval_s: float = 0.02,
        max_backoff_s: float = 5.0,
        retention_s: float = 7 * 24 * 3600,
        envelope: Envelope | None = None,
    ) -> None:
        self._database = database
        self._bus = bus
        self._envelope = envelope  # opens values the writer sealed (encryption at rest)
        self._batch_size = batch_size
        self._poll_s = poll_interval_s
        self._max_backoff_s = max_backoff_s
        self._retention_us = int(retention_s * 1_000_000)
        self._published = 0
        self._batches = 0
        self._failures = 0
        self._purged = 0
        self._lock = threading.Lock()

    def stats(self) -> RelayStats:
        """Return the relay's counters."""
        with self._lock:
            return RelayStats(self._published, self._batches, self._failures, self._purged)

    def relay_once(self) -> int:
        """Publish one batch of unsent rows and mark them sent; return how many."""
        with self._database.read() as conn:
            rows = conn.execute(
                select(
                    outbox.c.seq, outbox.c.topic, outbox.c.key, outbox.c.value, outbox.c.event_id
                )
                .where(outbox.c.sent_at.is_(None))
                .order_by(outbox.c.seq)
                .limit(self._batch_size)
            ).all()
        if not rows:
            return 0
        records = [
            Record(topic, key, self._value(value, event_id))
            for _seq, topic, key, value, event_id in rows
        ]
        self._bus.publish_many(records)  # raises before anything is marked
        with self._database.write() as conn:
            conn.execute(
                update(outbox)
                .where(outbox.c.seq.in_([row[0] for row in rows]))
                .values(sent_at=now_micros())
            )
        with self._lock:
            self._published += len(rows)
            self._batches += 1
        WORKER_EVENTS.labels("published").inc(len(rows))
        return len(rows)

    def _value(self, value: str, event_id: str) -> bytes:
        if not value.startswith(TEXT_PREFIX):
            return value.encode()
        if self._envelope is None:
            raise KeyUnavailable("outbox rows are encrypted but encryption at rest is off")
        return self._envelope.open_text(value, context=outbox_context(event_id))

    def purge(self) -> int:
        """Delete rows sent longer ago than the retention; return how many."""
        cutoff = now_micros() - self._retention_us
        with self._database.write() as conn:
            deleted = conn.execute(
                delete(outbox).where(outbox.c.sent_at.is_not(None), outbox.c.sent_at < cutoff)
            ).rowcount
        with self._lock:
            self._purged += deleted
        return int(deleted)

    def run(self, stop: threading.Event) -> None:
        """Relay until `stop` is set: drain, then poll; back off while the bus or DB is down."""
        backoff = 0.0
        last_purge = 0.0
        while not stop.is_set():
            try:
                with Leadership(self._database, key=_RELAY_LOCK, role="relay") as leader:
                    if not leader.held:
                        stop.wait(1.0)  # another worker relays; take over if it goes away
                        continue
                    checked = time.monotonic()
                    while not stop.is_set():
                        if time.monotonic() - checked > 1.0:
                            leader.check()  # the lock dies with its connection
                            checked = time.monotonic()
                        sent = self.relay_once()
                        backoff = 0.0
                        if time.monotonic() - last_purge > 3600:
                            self.purge()
                            last_purge = time.monotonic()
                        if sent < self._batch_size:
                            stop.wait(self._poll_s)
            except (BusError, ServiceUnavailable) as exc:
                with self._lock:
                    self._failures += 1
                backoff = min(self._max_backoff_s, max(0.05, backoff * 2))
                _log.warning("outbox relay paused %.2f s: %s", backoff, exc)
                stop.wait(backoff)
            except Exception:
                with self._lock:
                    self._failures += 1
                backoff = min(self._max_backoff_s, max(0.05, backoff * 2))
                _log.exception("outbox relay failed; retrying in %.2f s", backoff)
                stop.wait(backoff)
