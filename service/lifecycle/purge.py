"""Deletion after retention: everything about a child whose logs closed long enough ago.

A child is due when every one of their logs (CarePlans) is closed (`completed`, `revoked` or
`entered-in-error`), the last close (`CarePlan.period.end`, else the version that closed it)
lies `retention_years` back, and (unless switched off) the log was archived after that close.
Purging a child removes, in one transaction: the current rows and every history version of the
child's resources, their search-index rows, the AuditEvents about the child, the outbox rows
keyed by the child, the told time events and delivery states, and the archive bookkeeping; and
writes one deletion record (an AuditEvent without personal data) in their place.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, func, or_, select, tuple_

from service.audit.chain import redact
from service.lifecycle.compartment import ChildData, Key, child_data, chunks, ghost_patients
from service.lifecycle.records import deletion_record
from service.lifecycle.tables import lifecycle_archives
from service.search.values import InvalidDate, now_micros, parse_date_range
from service.storage.database import Database
from service.storage.schema import (
    INDEX_TABLES,
    delivery_state,
    outbox,
    resource_history,
    resources,
    search_reference,
    search_token,
    time_events,
)
from service.storage.store import NewResource, SqlStore

__all__ = ["CLOSED_STATUSES", "DueChild", "PurgeReport", "Purger", "add_years"]

_log = logging.getLogger("stafett.lifecycle")
CLOSED_STATUSES = frozenset({"completed", "revoked", "entered-in-error"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def add_years(moment: datetime, years: int) -> datetime:
    """Return the same calendar moment `years` later (29 February becomes 28 February)."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def _to_datetime(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class DueChild:
    """A child whose logs are all closed, with when the last one closed and whether it is due."""

    patient_id: str
    careplans: tuple[str, ...]
    closed_at: int  # microseconds since the epoch: the start of the last close
    due_at: int
    archived: bool
    archive_sha256: str | None


@dataclass
class PurgeReport:
    """What one purge run found and did (counts only: no personal data)."""

    dry_run: bool
    checked: int = 0
    waiting_for_archive: list[str] = field(default_factory=list)
    purged: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return {
            "dryRun": self.dry_run,
            "checked": self.checked,
            "waitingForArchive": self.waiting_for_archive,
            "purged": self.purged,
        }


def closed_at(plan: dict[str, Any], last_updated: int) -> int:
    """Return when a closed CarePlan closed: the end of `period.end`, else its version time."""
    period = plan.get("period")
    end = period.get("end") if isinstance(period, dict) else None
    if isinstance(end, str):
        try:
            # the start of the closing day: an export made that same day counts as after it
            return parse_date_range(end)[0]
        except InvalidDate:
            pass
    return last_updated


class Purger:
    """Finds children past retention and deletes everything about them, one transaction each."""

    def __init__(
        self,
        *,
        database: Database,
        store: SqlStore,
        base_url: str,
        retention_years: int,
        require_archive: bool = True,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        actor: str = "stafett-worker",
    ) -> None:
        self._database = database
        self._store = store
        self._base_url = base_url.rstrip("/")
        self._years = retention_years
        self._require_archive = require_archive
        self._clock = clock
        self._actor = actor

    # -- finding --------------------------------------------------------------------------
    def closed_children(self, conn: Connection, patient_id: str | None = None) -> list[DueChild]:
        """Return every child (or this one) whose logs are all closed, with retention dates."""
        plans = select(
            search_reference.c.target_id.label("patient_id"),
            search_reference.c.resource_id.label("plan_id"),
        ).where(
            search_reference.c.resource_type == "CarePlan",
            search_reference.c.param == "patient",
            search_reference.c.target_type == "Patient",
        )
        if patient_id is not None:
            plans = plans.where(search_reference.c.target_id == patient_id)
        open_plans = select(search_token.c.resource_id).where(
            search_token.c.resource_type == "CarePlan",
            search_token.c.param == "status",
            search_token.c.code.not_in(sorted(CLOSED_STATUSES)),
        )
        by_child: dict[str, list[str]] = {}
        has_open: set[str] = set()
        open_ids = {row[0] for row in conn.execute(open_plans)}
        for child_id, plan_id in conn.execute(plans):
            by_child.setdefault(child_id, []).append(plan_id)
            if plan_id in open_ids:
                has_open.add(child_id)
        result: list[DueChild] = []
        for child_id in sorted(set(by_child) - has_open):
            plan_ids = sorted(by_child[child_id])
            stored = self._store.read_many(conn, [("CarePlan", p) for p in plan_ids])
            if not stored or any(s.data.get("status") not in CLOSED_STATUSES for s in stored):
                continue
            closed = max(closed_at(s.data, s.last_updated) for s in stored)
            archive = conn.execute(
                select(lifecycle_archives.c.manifest_sha256)
                .where(
                    lifecycle_archives.c.patient_id == child_id,
                    lifecycle_archives.c.archived_at >= closed,
                )
                .order_by(lifecycle_archives.c.archived_at.desc())
            ).first()
            due = _micros(add_years(_to_datetime(closed), self._years))
            result.append(
                DueChild(
                    patient_id=child_id,
                    careplans=tuple(plan_ids),
                    closed_at=closed,
                    due_at=due,
                    archived=archive is not None,
                    archive_sha256=archive[0] if archive is not None else None,
                )
            )
        return result

    # -- the run --------------------------------------------------------------------------
    def run(self, *, dry_run: bool = False, stop: threading.Event | None = None) -> PurgeReport:
        """Purge every child past retention (and leftovers no log shares any more)."""
        now = _micros(self._clock().astimezone(UTC))
        report = PurgeReport(dry_run=dry_run)
        with self._database.read() as conn:
            children = self.closed_children(conn)
            ghosts = ghost_patients(conn)
        report.checked = len(children)
        for child in children:
            if stop is not None and stop.is_set():
                return report
            if child.due_at > now:
                continue
            if self._require_archive and not child.archived:
                report.waiting_for_archive.append(child.patient_id)
                continue
            report.purged.append(self._purge(child, now=now, dry_run=dry_run))
        for patient_id in ghosts:
            if stop is not None and stop.is_set():
                break
            report.purged.append(self._purge_leftovers(patient_id, now=now, dry_run=dry_run))
        report.purged = [entry for entry in report.purged if entry]
        return report

    def _purge(self, child: DueChild, *, now: int, dry_run: bool) -> dict[str, Any]:
        with self._database.write() as conn:
            # two workers never purge the same child at once; the state is decided again here
            self._database.lock_key(conn, f"lifecycle:{child.patient_id}")
            fresh = self.closed_children(conn, child.patient_id)
            current = fresh[0] if fresh else None
            if current is None or current.due_at > now:
                return {}
            if self._require_archive and not current.archived:
                return {}
            data = child_data(conn, child.patient_id, self._base_url)
            record_id = str(uuid.uuid4())
            summary = self._delete(conn, data, dry_run=dry_run, record_id=record_id)
            if not dry_run:
                self._record(
                    conn, data, summary, reason="retention", child=current, record_id=record_id
                )
        _log.info("purged a child's log after retention", extra={"deletion_record": record_id})
        return {
            **summary,
            "reason": "retention",
            "deletionRecord": None if dry_run else record_id,
        }

    def _purge_leftovers(self, patient_id: str, *, now: int, dry_run: bool) -> dict[str, Any]:
        with self._database.write() as conn:
            self._database.lock_key(conn, f"lifecycle:{patient_id}")
            data = child_data(conn, patient_id, self._base_url)
            if not data.keys:
                return {}
            record_id = str(uuid.uuid4())
            summary = self._delete(conn, data, dry_run=dry_run, record_id=record_id)
            if not dry_run:
                self._record(
                    conn, data, summary, reason="leftover", child=None, record_id=record_id
                )
        return {**summary, "reason": "leftover", "deletionRecord": None if dry_run else record_id}

    # -- deleting -------------------------------------------------------------------------
    def _delete(
        self, conn: Connection, data: ChildData, *, dry_run: bool, record_id: str
    ) -> dict[str, Any]:
        keys: list[Key] = sorted(data.keys | {("AuditEvent", i) for i in data.audit_events})
        counts: dict[str, Any] = {
            "patient": data.patient_id,
            "resources": data.by_type(),
            "auditEvents": len(data.audit_events),
            "keptShared": len(data.shared),
        }
        versions = index_rows = 0
        for batch in chunks(keys):
            versions += _count(
                conn,
                resource_history,
                tuple_(resource_history.c.resource_type, resource_history.c.id).in_(batch),
            )
            for table in INDEX_TABLES:
                index_rows += _count(
                    conn, table, tuple_(table.c.resource_type, table.c.resource_id).in_(batch)
                )
        time_keys = _time_event_filter(data.keys)
        counts["versions"] = versions
        counts["indexRows"] = index_rows
        counts["outboxRows"] = _count(conn, outbox, outbox.c.key == data.patient_id)
        counts["timeEvents"] = _count(conn, time_events, time_keys) if data.keys else 0
        counts["deliveryStates"] = _count(
            conn, delivery_state, delivery_state.c.patient_id == data.patient_id
        )
        if dry_run:
            return counts
        if data.audit_events:
            # the audit chain keeps a redaction entry per event, so `stafett audit verify`
            # reports a lawful deletion instead of tampering (service/audit/chain.py)
            redact(
                conn,
                resource_ids=sorted(data.audit_events),
                reason=f"retention deletion; deletion record AuditEvent/{record_id}",
            )
        for batch in chunks(keys):
            conn.execute(
                delete(resources).where(
                    tuple_(resources.c.resource_type, resources.c.id).in_(batch)
                )
            )
            conn.execute(
                delete(resource_history).where(
                    tuple_(resource_history.c.resource_type, resource_history.c.id).in_(batch)
                )
            )
            for table in INDEX_TABLES:
                conn.execute(
                    delete(table).where(
                        tuple_(table.c.resource_type, table.c.resource_id).in_(batch)
                    )
                )
        conn.execute(delete(outbox).where(outbox.c.key == data.patient_id))
        if data.keys:
            conn.execute(delete(time_events).where(time_keys))
        conn.execute(delete(delivery_state).where(delivery_state.c.patient_id == data.patient_id))
        conn.execute(
            delete(lifecycle_archives).where(lifecycle_archives.c.patient_id == data.patient_id)
        )
        return counts

    def _record(
        self,
        conn: Connection,
        data: ChildData,
        summary: dict[str, Any],
        *,
        reason: str,
        child: DueChild | None,
        record_id: str,
    ) -> None:
        from service.repository import finalise  # noqa: PLC0415  (repository imports audit)

        event = deletion_record(
            record_id=record_id,
            recorded=now_micros(),
            patient_id=data.patient_id,
            careplans=child.careplans if child is not None else (),
            counts=summary,
            reason=reason,
            closed=_to_datetime(child.closed_at).date() if child is not None else None,
            retention_years=self._years,
            archive_sha256=child.archive_sha256 if child is not None else None,
            actor=self._actor,
        )
        content = finalise(event, id=record_id, version_id=1, last_updated=now_micros())
        self._store.create_many(
            conn, "AuditEvent", [NewResource(record_id, now_micros(), content, event)]
        )


def _count(conn: Connection, table: Any, condition: Any) -> int:
    return int(conn.execute(select(func.count()).select_from(table).where(condition)).scalar_one())


def _time_event_filter(keys: frozenset[Key]) -> Any:
    # keys look like "<event>:<Type>/<id>:<micros>" (service/scheduler.py time_event_key)
    return or_(*(time_events.c.key.like(f"%:{t}/{i}:%") for t, i in sorted(keys)))
