"""The consent router: each change goes to the organisations the family permitted, only.

For every change event it asks the decision point, per organisation that takes part in the
child's log (CareTeam members, Task owners, configured subscribers), whether that
organisation may read the changed resource now, and publishes a delivery on the
organisation's own topic (`stafett.out.<orgnr>`) or audits the refused delivery. It also
keeps, per child and organisation, whether the organisation may see the log at all: when that
turns from yes to no (a Consent withdrawn or expired), the organisation gets a revocation
notice so its system can hide or remove the log; when it turns to yes, a grant notice so its
system can fetch the log.

Deliveries have event ids derived from the change and the organisation, so processing a
change again after a crash publishes the same ids and receivers drop the duplicates.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, select

from bus import Envelope, EventType, Record, topics
from consent import (
    AccessRequest,
    Action,
    Actor,
    ActorKind,
    ChildLog,
    ConsentPolicy,
    Decision,
    consent_status,
    decide,
)
from service.audit import AuditRecord, AuditTrail
from service.auth import Principal, PrincipalKind
from service.auth.scopes import ScopeSet
from service.delivery.participants import DirectoryCache, OrgnrResolver, logs_organisations
from service.enforcement.loading import LogCache
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.schema import delivery_state
from service.tracing import message_scope, trace_headers

__all__ = ["ConsentRouter", "RouteResult"]

_log = logging.getLogger("stafett.delivery")
_NAMESPACE = uuid.UUID("0f6b7c52-6a43-4a3e-9f0e-3f4a1c2b9d10")
_CHANGES = (EventType.RESOURCE_CHANGED, EventType.RESOURCE_DELETED)
# events that only ask "who may still see this log" (from the scheduler)
_REEVALUATE = (EventType.CONSENT_EXPIRED,)


@dataclass
class RouteResult:
    """What routing a batch of change events produced."""

    records: list[Record] = field(default_factory=list)
    delivered: int = 0
    refused: int = 0
    revoked: int = 0
    granted: int = 0
    ignored: int = 0


def derived_id(event_id: str, *parts: str) -> str:
    """Return a stable event id for something derived from `event_id` (same input, same id)."""
    return str(uuid.uuid5(_NAMESPACE, "|".join((event_id, *parts))))


def _recipient(orgnr: str) -> Principal:
    return Principal(
        kind=PrincipalKind.SYSTEM,
        issuer="urn:stafett:consent-router",
        subject=orgnr,
        scopes=ScopeSet(),
        expires_at=0,
        organization=orgnr,
        client_id=f"stafett.out.{orgnr}",
    )


class ConsentRouter:
    """Decides and builds the deliveries of change events; the worker publishes and commits."""

    def __init__(
        self,
        *,
        database: Database,
        policy: ConsentPolicy,
        base_url: str,
        audit: AuditTrail | None,
        subscribers: Iterable[str] = (),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._database = database
        self._policy = policy
        self._base_url = base_url
        self._audit = audit
        self._subscribers = frozenset(subscribers)
        self._clock = clock
        self._pending_states: list[dict[str, object]] = []
        self._pending_audit: list[AuditRecord] = []
        # states decided earlier in the same batch, not yet stored
        self._overlay: dict[tuple[str, str], bool] = {}
        self._participants: dict[str, set[str]] = {}
        self._stored_states: dict[str, dict[str, bool]] = {}
        self._org_ids: dict[str, frozenset[str]] = {}
        # Across batches: logs whose Patient, RelatedPersons and Consents are unchanged are
        # reused (checked by version in every batch, so a withdrawal is seen at once), and the
        # directory's answers for a few seconds.
        self._logs = LogCache()
        self._directory = DirectoryCache()

    def route(self, events: Sequence[Envelope]) -> RouteResult:
        """Decide the deliveries of these events; record the decisions and the new states.

        Call `commit_states` after the records are published: the states and audit are
        written only then, so a crash in between routes the same events again.
        """
        result = RouteResult()
        self._pending_states = []
        self._pending_audit = []
        self._overlay = {}
        # per batch: each child's participants and states, each organisation's ids are read
        # once however many of the child's events the batch holds
        self._participants = {}
        self._stored_states = {}
        self._org_ids = {}
        now = self._clock()
        with self._database.read() as conn:
            children = sorted({e.subject_key for e in events})
            logs = self._logs.logs(conn, children)
            # every child's participants and delivery states in a few statements per batch
            resolver = OrgnrResolver(conn, self._base_url, directory=self._directory)
            self._participants = logs_organisations(
                conn, children, self._base_url, today=now.date(), resolver=resolver
            )
            self._stored_states = _states(conn, children)
            for event in events:
                if event.event_type not in _CHANGES + _REEVALUATE:
                    result.ignored += 1
                    continue
                log = logs.get(event.subject_key)
                if log is None:
                    result.ignored += 1  # the child is gone: nobody may learn anything
                    continue
                # log lines (and the span) carry the event id and the write's correlation id
                with message_scope("route", event, topics.CHANGES):
                    self._route_one(conn, event, log, now, result, resolver=resolver)
        return result

    def commit_states(self) -> None:
        """Store the new delivery states and the audit of the last `route` (one transaction)."""
        states, self._pending_states = self._pending_states, []
        audit, self._pending_audit = self._pending_audit, []
        if not states and not audit:
            return
        with self._database.write() as conn:
            for state in states:
                _upsert_state(conn, state)
            if self._audit is not None and audit:
                self._audit.record_in_transaction(conn, audit)

    # -- one event --------------------------------------------------------------------------
    def _route_one(
        self,
        conn: Connection,
        event: Envelope,
        log: ChildLog,
        now: datetime,
        result: RouteResult,
        *,
        resolver: OrgnrResolver,
    ) -> None:
        child = event.subject_key
        previous = dict(self._stored_states.get(child, {}))
        previous.update({org: v for (c, org), v in self._overlay.items() if c == child})
        if event.resource_type == "CareTeam":
            # the team changed: read it as it is now (a service may have left)
            self._participants[child] = logs_organisations(
                conn, [child], self._base_url, today=now.date(), resolver=resolver
            )[child]
        elif event.resource_type == "Task" and event.payload:
            # a Task changed later in the batch may name a new owner: add it from the event
            owner = resolver.orgnr(event.payload.get("owner"))
            if owner is not None:
                self._participants.setdefault(child, set()).add(owner)
        candidates = (
            self._participants.get(child, set())
            | self._subscribers
            | {org for org, permitted in previous.items() if permitted}
        )
        for orgnr in sorted(candidates):
            if orgnr not in self._org_ids:
                self._org_ids[orgnr] = self._directory.organization_ids(conn, orgnr)
            actor = Actor(
                kind=ActorKind.SYSTEM,
                organization_number=orgnr,
                organization_ids=self._org_ids[orgnr],
            )
            sees_log = consent_status(
                actor=actor, log=log, policy=self._policy, now=now, decision_id=uuid.uuid4().hex
            )
            if previous.get(orgnr) is not sees_log.permitted or orgnr not in previous:
                self._overlay[(child, orgnr)] = sees_log.permitted
                self._pending_states.append(
                    {
                        "patient_id": child,
                        "organization": orgnr,
                        "permitted": sees_log.permitted,
                        "consent_id": sees_log.consent_id,
                        "updated_at": now_micros(),
                    }
                )
            if previous.get(orgnr) and not sees_log.permitted:
                result.records.append(
                    self._notice(event, orgnr, EventType.CONSENT_REVOKED, sees_log)
                )
                result.revoked += 1
                _log.info("revoked", extra={"organization": orgnr, "reason": sees_log.reason})
            elif sees_log.permitted and not previous.get(orgnr):
                # a new permission: the organisation's system may now fetch the log (over
                # REST) instead of waiting for its next change
                result.records.append(
                    self._notice(event, orgnr, EventType.CONSENT_GRANTED, sees_log)
                )
                result.granted += 1
                _log.info("granted", extra={"organization": orgnr})
            if event.event_type not in _CHANGES or orgnr == event.sender:
                continue  # a re-evaluation delivers nothing; a sender does not get its own write
            resource = dict(event.payload or {})
            decision = decide(
                actor=actor,
                log=log,
                request=AccessRequest(
                    action=Action.READ,
                    resource_type=event.resource_type or "",
                    resource=resource,
                ),
                policy=self._policy,
                now=now,
                decision_id=uuid.uuid4().hex,
            )
            self._pending_audit.append(
                AuditRecord(
                    request_id=event.correlation_id or event.event_id,
                    decision_id=decision.decision_id,
                    recorded=now_micros(),
                    interaction="delivery",
                    permitted=decision.permitted,
                    principal=_recipient(orgnr),
                    patient_id=child,
                    resources=(f"{event.resource_type}/{event.resource_id}",),
                    consent_id=decision.consent_id,
                    basis=decision.basis.value,
                    reason=decision.reason,
                    outcome_detail=None if decision.permitted else "not delivered",
                )
            )
            if decision.permitted:
                result.records.append(self._delivery(event, orgnr))
                result.delivered += 1
                _log.debug("delivered", extra={"organization": orgnr})
            else:
                result.refused += 1
                _log.info("refused", extra={"organization": orgnr, "reason": decision.reason})

    def _delivery(self, event: Envelope, orgnr: str) -> Record:
        deleted = event.event_type == EventType.RESOURCE_DELETED
        delivery = Envelope.new(
            event_id=derived_id(event.event_id, orgnr),
            event_type=EventType.RESOURCE_DELETED if deleted else EventType.DELIVERY,
            subject_key=event.subject_key,
            resource_type=event.resource_type,
            resource_id=event.resource_id,
            version_id=event.version_id,
            correlation_id=event.correlation_id,
            sender=event.sender,
            payload=None if deleted else event.payload,
            occurred_at=event.occurred_at,
        )
        return Record.of(topics.outbound(orgnr), delivery, trace_headers())

    def _notice(self, event: Envelope, orgnr: str, event_type: str, why: Decision) -> Record:
        notice = Envelope.new(
            event_id=derived_id(event.event_id, orgnr, event_type),
            event_type=event_type,
            subject_key=event.subject_key,
            resource_type="Patient",
            resource_id=event.subject_key,
            correlation_id=event.correlation_id,
            payload={"reason": why.reason, "consent": why.consent_id},
            occurred_at=event.occurred_at,
        )
        return Record.of(topics.outbound(orgnr), notice, trace_headers())


def _states(conn: Connection, patient_ids: Sequence[str]) -> dict[str, dict[str, bool]]:
    """Return, per child, whether each organisation could see the log when last routed."""
    states: dict[str, dict[str, bool]] = {}
    for start in range(0, len(patient_ids), 500):
        rows = conn.execute(
            select(
                delivery_state.c.patient_id,
                delivery_state.c.organization,
                delivery_state.c.permitted,
            ).where(delivery_state.c.patient_id.in_(patient_ids[start : start + 500]))
        )
        for child, org, permitted in rows:
            states.setdefault(child, {})[org] = bool(permitted)
    return states


def _upsert_state(conn: Connection, state: dict[str, object]) -> None:
    table = delivery_state
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        stmt = pg_insert(table).values(**state)
        stmt = stmt.on_conflict_do_update(
            index_elements=[table.c.patient_id, table.c.organization],
            set_={k: stmt.excluded[k] for k in ("permitted", "consent_id", "updated_at")},
        )
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

        stmt_sqlite = sqlite_insert(table).values(**state)
        stmt = stmt_sqlite.on_conflict_do_update(  # type: ignore[assignment]
            index_elements=[table.c.patient_id, table.c.organization],
            set_={k: stmt_sqlite.excluded[k] for k in ("permitted", "consent_id", "updated_at")},
        )
    conn.execute(stmt)
