"""The audit trail: stores AuditEvents with a write's transaction, or group-committed for reads.

An audited read is a write. One-row commits are bound by the commit itself (WAL flush and
round trips), so ``record`` hands events to committer threads that write whatever concurrent
callers have queued in one transaction and then wake them all: the callers pay one commit and
one connection between them, as in PostgreSQL's own group commit.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from sqlalchemy import Connection

from service.audit.events import AuditRecord, build_audit_event
from service.errors import ServiceUnavailable
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.store import NewResource, SqlStore

__all__ = ["AuditTrail", "AuditTrailStats", "AuditUnavailable"]

_log = logging.getLogger("stafett.audit")


class AuditUnavailable(ServiceUnavailable):
    """Audit events could not be stored, so the audited request must fail (503)."""


@dataclass(frozen=True, slots=True)
class AuditTrailStats:
    """Counters of the group committer since start."""

    batches_committed: int
    events_committed: int
    batches_failed: int
    largest_batch: int  # events in the largest committed batch


@dataclass(frozen=True, slots=True)
class _Pending:
    events: list[NewResource]
    future: Future[None]


class AuditTrail:
    """Stores consent decisions as AuditEvent resources; two ways in.

    ``record_in_transaction`` writes with the caller's transaction, so a write and its audit
    commit or roll back together. ``record`` blocks the calling thread (never call it on the
    event loop) until a background committer has committed the events: each committer takes
    what concurrent callers have queued, at most ``max_batch`` events, waiting up to
    ``max_wait_ms`` for as many callers as its last batch carried, and writes them in one
    transaction. ``record`` raises ``AuditUnavailable`` when they cannot be stored within
    ``timeout_s``, and the caller then fails the read rather than answer unrecorded. Several
    committers (default: 2 on PostgreSQL, 1 on SQLite) let the database work on batches in
    parallel. Events are ordinary AuditEvent resources (version 1, POST), indexed for FHIR
    search (https://hl7.org/fhir/R4/auditevent.html#search).
    """

    def __init__(
        self,
        *,
        database: Database,
        store: SqlStore,
        max_batch: int = 200,
        max_wait_ms: float = 2.0,
        timeout_s: float = 10.0,
        committers: int | None = None,
        server_url: str | None = None,
    ) -> None:
        if max_batch < 1 or max_wait_ms < 0 or timeout_s <= 0:
            raise ValueError("max_batch must be >= 1, max_wait_ms >= 0 and timeout_s > 0")
        if committers is None:
            # SQLite takes one writer at a time; PostgreSQL spreads batches over its CPUs
            committers = 1 if database.is_sqlite else 2
        if committers < 1:
            raise ValueError("committers must be >= 1")
        self._database = database
        self._store = store
        self._max_batch = max_batch
        self._max_wait_s = max_wait_ms / 1000
        self._timeout_s = timeout_s
        self._server_url = server_url
        # Imported here, not at the top: service.repository imports this package, so a top-level
        # import would make whichever of the two is imported first fail.
        from service.repository import finalise  # noqa: PLC0415

        self._finalise = finalise
        self._cond = threading.Condition()
        self._queue: deque[_Pending] = deque()
        self._queued_events = 0
        self._closed = False
        # callers in the last committed batch: how many to wait for before the next one
        self._last_callers = 1
        self._batches_committed = 0
        self._events_committed = 0
        self._batches_failed = 0
        self._largest_batch = 0
        self._threads = [
            threading.Thread(target=self._run, name=f"stafett-audit-committer-{n}", daemon=True)
            for n in range(committers)
        ]
        for thread in self._threads:
            thread.start()

    # -- the two ways in ------------------------------------------------------------------
    def record_in_transaction(self, conn: Connection, records: Sequence[AuditRecord]) -> None:
        """Write audit events with the caller's transaction (they commit or roll back together)."""
        self._write(conn, self._prepare(records))

    def record(self, records: Sequence[AuditRecord]) -> None:
        """Block until these events are committed; raise AuditUnavailable if they cannot be."""
        if not records:
            return
        pending = _Pending(self._prepare(records), Future())
        with self._cond:
            if self._closed:
                raise AuditUnavailable("The audit trail is shut down; the request is refused")
            self._queue.append(pending)
            self._queued_events += len(pending.events)
            self._cond.notify()
        try:
            pending.future.result(timeout=self._timeout_s)
        except TimeoutError as exc:
            # if the batch has not started, it never will: nothing is recorded for a request
            # that is refused; if it has, the event may still land, which errs on the safe side
            if not pending.future.cancel() and pending.future.done():
                failure = pending.future.exception()
                if failure is None:
                    return  # committed just as the wait ran out
                raise failure from None
            raise AuditUnavailable(
                f"The audit trail did not confirm within {self._timeout_s:g} s; try again"
            ) from exc

    def close(self, timeout_s: float | None = 30.0) -> None:
        """Commit what is queued, then stop the committer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                _log.error("the audit committer did not finish within %s s", timeout_s)
                return

    # -- introspection --------------------------------------------------------------------
    def stats(self) -> AuditTrailStats:
        """Return the committer's counters."""
        with self._cond:
            return AuditTrailStats(
                batches_committed=self._batches_committed,
                events_committed=self._events_committed,
                batches_failed=self._batches_failed,
                largest_batch=self._largest_batch,
            )

    @property
    def closed(self) -> bool:
        """Return whether close() has begun (record() then refuses)."""
        with self._cond:
            return self._closed

    @property
    def queued_events(self) -> int:
        """Return how many events wait for the committer."""
        with self._cond:
            return self._queued_events

    # -- internals --------------------------------------------------------------------------
    def _prepare(self, records: Sequence[AuditRecord]) -> list[NewResource]:
        # Built in the caller's thread: the committer is the serial part, so it only writes.
        last_updated = now_micros()
        prepared: list[NewResource] = []
        for record in records:
            audit_id = str(uuid.uuid4())
            data = build_audit_event(record, audit_id=audit_id, server_url=self._server_url)
            content = self._finalise(data, id=audit_id, version_id=1, last_updated=last_updated)
            prepared.append(NewResource(audit_id, last_updated, content, data))
        return prepared

    def _write(self, conn: Connection, events: Sequence[NewResource]) -> None:
        self._store.create_many(conn, "AuditEvent", events)

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._commit(batch)

    def _next_batch(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            # Linger (at most max_wait) only until as many callers are queued as the last batch
            # carried: a lone caller is never delayed, while concurrent callers, who come back
            # at slightly different moments, share one commit instead of two.
            deadline = time.monotonic() + self._max_wait_s
            while (
                not self._closed
                and len(self._queue) < self._last_callers
                and self._queued_events < self._max_batch
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch: list[_Pending] = []
            size = 0
            while self._queue:
                events = len(self._queue[0].events)
                # a caller's events are never split; an oversized request goes alone
                if batch and size + events > self._max_batch:
                    break
                batch.append(self._queue.popleft())
                self._queued_events -= events
                size += events
            return batch

    def _commit(self, batch: list[_Pending]) -> None:
        # a caller that gave up waiting cancelled its future: do not record it
        live = [pending for pending in batch if pending.future.set_running_or_notify_cancel()]
        if not live:
            return
        events = sum(len(pending.events) for pending in live)
        try:
            events_of_batch = [event for pending in live for event in pending.events]
            # PostgreSQL: one multi-row statement on an autocommit connection is the whole
            # transaction, one round trip; SQLite writes row by row inside BEGIN/COMMIT.
            with (
                self._database.write() if self._database.is_sqlite else self._database.autocommit()
            ) as conn:
                self._write(conn, events_of_batch)
        except Exception as exc:
            _log.exception("could not store %d audit events; %d requests fail", events, len(live))
            with self._cond:
                self._batches_failed += 1
            for pending in live:
                # one exception per caller: each is raised (and given a traceback) in its thread
                error = AuditUnavailable("The audit trail cannot store events; try again shortly")
                error.__cause__ = exc
                pending.future.set_exception(error)
            return
        with self._cond:
            self._batches_committed += 1
            self._events_committed += events
            self._largest_batch = max(self._largest_batch, events)
            self._last_callers = len(live)
        for pending in live:
            pending.future.set_result(None)
