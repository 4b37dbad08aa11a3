"""The time-event scheduler: evaluation dates falling due and Consents ending, each told once.

Three events come from the clock rather than from a write (docs/stafettlogg-fhir.md §11, §13):

- `evaluation.due`: an open Task's planned evaluation date (`restriction.period.end`, and
  nowhere else) has arrived; once per Task and date, so a date moved later gives a new one.
- `consent.expires-soon`: an active Consent's `provision.period.end` lies within the notice
  days and has not passed; once per Consent and end.
- `consent.expired`: an active Consent's `provision.period.end` has passed; once per Consent
  and end. It also goes to `stafett.changes`, where the consent router re-evaluates who may
  still see the log and sends revocation notices.

Each event goes to the current stafettholder's organisation (`stafett.out.<orgnr>`, if the
log has one) and to `stafett.family`, through the outbox: the `time_events` row that marks it
told and its outbox rows commit in one transaction, so it is published once however often and
by how many workers the scan runs. Every copy has its own event id (the outbox requires unique
ids), derived from the event and the topic, and all copies carry the same `correlation_id`,
the id of the event itself.

Candidates come from the search index, never from reading every Task: the internal parameter
`stafett-open-evaluation-date` (open Tasks only) and the R4 Consent `period` parameter
(`Consent.provision.period`) joined with `status`, minus what `time_events` already holds.
Only candidates are read, and each is decided again on its current content.

Payloads carry dates, codes and ids, never free text. The stafettholder's organisation gets
its copy only while the family's Consents let it see the log (checked here, as the consent
router would); the family always gets theirs.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Connection, String, cast, exists, literal, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import OperationalError

from bus import Envelope, EventType, Record, topics
from consent import Actor, ActorKind, ConsentPolicy, consent_status

# The decision point's own reading of provision.period, so that "expired" here is exactly the
# moment it stops granting (consent exports no public helper for this yet).
from consent._internal.consents import compile_consent
from consent._internal.fhir import not_passed, reached
from service.delivery.participants import stafettholder_organisation
from service.enforcement.compartment import patient_in
from service.enforcement.loading import load_logs, organization_ids
from service.errors import ServiceUnavailable
from service.outbox import Outbox
from service.search.extract import OPEN_EVALUATION_PARAM, OPEN_TASK_STATUSES
from service.search.values import InvalidDate, now_micros, parse_date_range
from service.storage.database import Database
from service.storage.schema import resources, search_date, search_token, time_events

__all__ = ["TimeEventScheduler", "time_event_key"]

_log = logging.getLogger("stafett.scheduler")
_NAMESPACE = uuid.UUID("5b0d6a0e-2f57-4c1e-8a43-9d3b7e61c2f4")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# An end's index `high` lies at most a day after the instant the decision point compares
# (the last microsecond of a date-only end); candidates are chosen with this slack and then
# decided exactly.
_SLACK_US = 86_400_000_000


def time_event_key(event_type: str, resource_type: str, resource_id: str, micros: int) -> str:
    """Return the `time_events` key of one event: what it is about and the date it concerns.

    `micros` is the date's place in the search index: the start of a Task's evaluation date,
    the last instant of a Consent's end (`parse_date_range`), so the key can be computed in
    SQL as well.
    """
    return f"{event_type}:{resource_type}/{resource_id}:{micros}"


def _key_in_sql(
    event_type: str, resource_type: str, micros: ColumnElement[Any]
) -> ColumnElement[str]:
    return (
        literal(f"{event_type}:{resource_type}/", String)
        + search_date.c.resource_id
        + literal(":", String)
        + cast(micros, String)
    )


def _not_told(key: ColumnElement[str]) -> ColumnElement[bool]:
    return ~exists().where(time_events.c.key == key)


def _micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


@dataclass(frozen=True, slots=True)
class _Due:
    """One event that is due, decided on the resource's current content."""

    event_type: str
    key: str
    resource_type: str
    resource_id: str
    version_id: int
    patient_id: str | None
    payload: dict[str, Any]


class TimeEventScheduler:
    """Finds the time-based events that are due and writes each to the outbox once."""

    def __init__(
        self,
        *,
        database: Database,
        base_url: str,
        notice_days: int,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        max_backoff_s: float = 30.0,
        policy: ConsentPolicy | None = None,
    ) -> None:
        self._database = database
        # with a policy, the stafettholder's organisation is told only while the family's
        # Consents let it see the log (the family is always told)
        self._policy = policy
        self._base_url = base_url.rstrip("/")
        self._notice = timedelta(days=notice_days)
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._outbox = Outbox(database)
        self._stop: threading.Event | None = None

    # -- one scan ---------------------------------------------------------------------------
    def scan(self) -> int:
        """Emit every time event that is due and not yet emitted; return how many.

        Raises ServiceUnavailable (or OperationalError) while the database is unreachable;
        events already emitted stay emitted, the rest come with the next scan.
        """
        now = self._clock()
        if now.utcoffset() is None:
            raise ValueError("the scheduler's clock must return a timezone-aware datetime")
        now = now.astimezone(UTC)
        with self._database.read() as conn:
            tasks = self._task_candidates(conn, now)
            consents = self._consent_candidates(conn, now)
        emitted = 0
        for resource_type, resource_id in [*tasks, *consents]:
            if self._stop is not None and self._stop.is_set():
                break
            try:
                emitted += self._emit(resource_type, resource_id, now)
            except (ServiceUnavailable, OperationalError):
                raise
            except Exception:
                # one resource the code cannot handle must not hold back everybody else's
                _log.exception("time event for %s/%s failed", resource_type, resource_id)
        return emitted

    def _task_candidates(self, conn: Connection, now: datetime) -> list[tuple[str, str]]:
        key = _key_in_sql(EventType.EVALUATION_DUE, "Task", search_date.c.low)
        stmt = (
            select(search_date.c.resource_id)
            .where(
                search_date.c.resource_type == "Task",
                search_date.c.param == OPEN_EVALUATION_PARAM,
                search_date.c.low <= _micros(now),
                _not_told(key),
            )
            .order_by(search_date.c.low, search_date.c.resource_id)
        )
        return [("Task", row[0]) for row in conn.execute(stmt)]

    def _consent_candidates(self, conn: Connection, now: datetime) -> list[tuple[str, str]]:
        now_us = _micros(now)
        expired = _key_in_sql(EventType.CONSENT_EXPIRED, "Consent", search_date.c.high)
        soon = _key_in_sql(EventType.CONSENT_EXPIRES_SOON, "Consent", search_date.c.high)
        stmt = (
            select(search_date.c.resource_id)
            .join(
                search_token,
                (search_token.c.resource_type == search_date.c.resource_type)
                & (search_token.c.resource_id == search_date.c.resource_id),
            )
            .where(
                search_date.c.resource_type == "Consent",
                # R4 Consent `period` is Consent.provision.period: high = the end's last instant
                search_date.c.param == "period",
                search_date.c.high <= now_us + self._notice // _MICROSECOND + _SLACK_US,
                search_token.c.param == "status",
                search_token.c.code == "active",
                _not_told(expired),
                # told "soon" already: a candidate again only when it may have ended
                or_(search_date.c.high <= now_us + _SLACK_US, _not_told(soon)),
            )
            .order_by(search_date.c.high, search_date.c.resource_id)
        )
        return [("Consent", row[0]) for row in conn.execute(stmt)]

    # -- one event --------------------------------------------------------------------------
    def _emit(self, resource_type: str, resource_id: str, now: datetime) -> int:
        """Decide one candidate on its current content and, if due, emit it; return 0 or 1."""
        with self._database.write() as conn:
            row = conn.execute(
                select(resources.c.version_id, resources.c.content).where(
                    resources.c.resource_type == resource_type,
                    resources.c.id == resource_id,
                    resources.c.deleted.is_(False),
                )
            ).first()
            if row is None:
                return 0
            data: dict[str, Any] = orjson.loads(row[1])
            due = (
                self._task_due(resource_id, row[0], data, now)
                if resource_type == "Task"
                else self._consent_due(resource_id, row[0], data, now)
            )
            if due is None or not _claim(conn, due.key):
                return 0  # not due (any more), or another worker told it first
            if due.patient_id is None:
                # outside any child's log there is nobody to tell; claimed, so not read again
                _log.warning("%s/%s is due but in no child's log", resource_type, resource_id)
                return 0
            self._outbox.add(conn, self._records(conn, due, due.patient_id, now))
        _log.info("%s for %s/%s", due.event_type, resource_type, resource_id)
        return 1

    def _task_due(
        self, task_id: str, version_id: int, task: Mapping[str, Any], now: datetime
    ) -> _Due | None:
        if task.get("status") not in OPEN_TASK_STATUSES:
            return None
        restriction = task.get("restriction")
        period = restriction.get("period") if isinstance(restriction, dict) else None
        end = period.get("end") if isinstance(period, dict) else None
        if not isinstance(end, str):
            return None
        try:
            arrives, _ = parse_date_range(end)
        except InvalidDate:
            return None
        if arrives > _micros(now):
            return None
        payload: dict[str, Any] = {"evaluationDate": end}
        code = _first_coding(task.get("code"))
        if code:
            payload["code"] = code
        plan = _reference(task.get("basedOn"))
        if plan:
            payload["basedOn"] = plan
        return _Due(
            event_type=EventType.EVALUATION_DUE,
            key=time_event_key(EventType.EVALUATION_DUE, "Task", task_id, arrives),
            resource_type="Task",
            resource_id=task_id,
            version_id=version_id,
            patient_id=patient_in("Task", task, self._base_url),
            payload=payload,
        )

    def _consent_due(
        self, consent_id: str, version_id: int, consent: Mapping[str, Any], now: datetime
    ) -> _Due | None:
        compiled = compile_consent(consent)
        end_text = compiled.period_text[1]
        if compiled.status != "active" or compiled.period is None or end_text is None:
            return None
        end = compiled.period[1]
        if end is None:
            return None
        try:
            _, last = parse_date_range(end_text)
        except InvalidDate:
            return None
        if not not_passed(now, end):
            event_type = EventType.CONSENT_EXPIRED
        elif reached(now + self._notice, end):
            event_type = EventType.CONSENT_EXPIRES_SOON
        else:
            return None
        return _Due(
            event_type=event_type,
            key=time_event_key(event_type, "Consent", consent_id, last),
            resource_type="Consent",
            resource_id=consent_id,
            version_id=version_id,
            patient_id=patient_in("Consent", consent, self._base_url),
            payload={"periodEnd": end_text, "consentId": consent_id},
        )

    def _may_see(self, conn: Connection, orgnr: str, patient_id: str, now: datetime) -> bool:
        if self._policy is None:
            return True
        log = load_logs(conn, [patient_id]).get(patient_id)
        if log is None:
            return False
        actor = Actor(
            kind=ActorKind.SYSTEM,
            organization_number=orgnr,
            organization_ids=organization_ids(conn, orgnr),
        )
        return consent_status(
            actor=actor, log=log, policy=self._policy, now=now, decision_id=uuid.uuid4().hex
        ).permitted

    def _records(
        self, conn: Connection, due: _Due, patient_id: str, now: datetime
    ) -> list[tuple[str, Record]]:
        destinations: list[str] = []
        orgnr = stafettholder_organisation(conn, patient_id, self._base_url)
        if orgnr is not None and not self._may_see(conn, orgnr, patient_id, now):
            orgnr = None
        if orgnr is not None:
            try:
                destinations.append(topics.outbound(orgnr))
            except ValueError:
                _log.warning("stafettholder of %s has an invalid org.nr %r", due.key, orgnr)
        destinations.append(topics.FAMILY)
        if due.event_type == EventType.CONSENT_EXPIRED:
            destinations.append(topics.CHANGES)  # the consent router re-evaluates the log
        correlation = str(uuid.uuid5(_NAMESPACE, due.key))
        records: list[tuple[str, Record]] = []
        for topic in destinations:
            envelope = Envelope.new(
                event_id=str(uuid.uuid5(_NAMESPACE, f"{due.key}|{topic}")),
                event_type=due.event_type,
                subject_key=patient_id,
                resource_type=due.resource_type,
                resource_id=due.resource_id,
                version_id=str(due.version_id),
                correlation_id=correlation,
                payload=due.payload,
                occurred_at=now,
            )
            records.append((envelope.event_id, Record.of(topic, envelope)))
        return records

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Scan every `interval_s` seconds until `stop` is set; wait out database outages."""
        self._stop = stop
        backoff = 0.0
        while not stop.is_set():
            try:
                emitted = self.scan()
            except (ServiceUnavailable, OperationalError) as exc:
                backoff = min(self._max_backoff_s, max(0.5, backoff * 2))
                _log.warning("scheduler waits %.1f s for the database: %s", backoff, exc)
                stop.wait(backoff)
                continue
            except Exception:
                backoff = min(self._max_backoff_s, max(0.5, backoff * 2))
                _log.exception("scheduler scan failed; retrying in %.1f s", backoff)
                stop.wait(backoff)
                continue
            backoff = 0.0
            if emitted:
                _log.info("scheduler emitted %d time events", emitted)
            stop.wait(interval_s)


def _claim(conn: Connection, key: str) -> bool:
    """Insert the event's `time_events` row; False if it is there already (told before).

    A concurrent worker's uncommitted insert of the same key makes this wait for its commit
    (PostgreSQL) and then do nothing; SQLite serialises writers anyway.
    """
    values = {"key": key, "emitted_at": now_micros()}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(time_events).values(values).on_conflict_do_nothing()
    # SQLAlchemy reports an INSERT's rowcount only when asked to keep it (-1 otherwise)
    return conn.execute(stmt.execution_options(preserve_rowcount=True)).rowcount == 1


def _first_coding(concept: Any) -> dict[str, str] | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and isinstance(coding.get("code"), str):
            return {
                name: coding[name]
                for name in ("system", "code", "display")
                if isinstance(coding.get(name), str)
            }
    return None


def _reference(references: Any) -> str | None:
    for item in references if isinstance(references, list) else ():
        if isinstance(item, dict) and isinstance(item.get("reference"), str):
            return str(item["reference"])
    return None
