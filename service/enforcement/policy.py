"""The consent access policy: the family's Consents decide every read, search hit and write.

Plugs into the enforcement seam (service/access.py). Type-level checks use SMART scopes; the
rest asks the pure decision point (`consent`) with the caller's log loaded from the database,
and returns each decision for the repository to audit.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, false, not_, or_, select, tuple_

from consent import (
    AccessRequest,
    Action,
    Actor,
    ActorKind,
    ChildLog,
    ConsentPolicy,
    Decision,
    TypeAccess,
    check_consent_write,
    consent_status,
    decide,
    readable_types,
)
from service.access import BATCH_LOG_VERSIONS, AccessDecision, RequestContext, require_scope
from service.auth import Interaction
from service.enforcement.compartment import (
    DIRECTORY_TYPES,
)
from service.enforcement.loading import (
    LogCache,
    actor_for,
    child_of,
    consented_patients,
    family_patients,
    organization_ids,
)
from service.errors import Forbidden, NotFound
from service.storage.database import Database
from service.storage.lists import one_of, uses_arrays
from service.storage.schema import resources, search_reference, search_token
from service.storage.store import StoredResource

__all__ = ["ConsentAccessPolicy"]

_NOT_IN_LOG = "The resource belongs to no child's log; Stafett keeps log content only."


class _RequestState:
    """Per-request caches: the caller's Actor and the logs loaded so far."""

    def __init__(self) -> None:
        self.actor: Actor | None = None
        self.logs: dict[str, ChildLog | None] = {}
        # the request's write count when each log was loaded (see `writes_made`)
        self.loaded_at: dict[str, int] = {}
        self.now = datetime.now(UTC)


class ConsentAccessPolicy:
    """Decide with the family's Consents; push what can be decided per child into SQL."""

    def __init__(
        self,
        *,
        policy: ConsentPolicy,
        base_url: str,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.policy = policy
        self._base_url = base_url.rstrip("/")
        self._clock = clock
        self._cache = LogCache()
        # Which Organization/Practitioner resources a token's org.nr/HPR/fnr resolve to changes
        # rarely; a short cache spares two queries per request. Consents are never cached.
        self._actors: dict[tuple[Any, ...], tuple[float, Actor]] = {}
        self._actor_ttl = 30.0
        self._types: dict[tuple[int, Actor, datetime, str], tuple[ChildLog, TypeAccess]] = {}
        self._types_second: datetime | None = None

    # -- state ------------------------------------------------------------------------------
    def _state(self, ctx: RequestContext) -> _RequestState:
        state = ctx.state.get("consent")
        if not isinstance(state, _RequestState):
            state = _RequestState()
            # Whole seconds: requests within the same second share the decision point's
            # memoised view of each log (validity of its consents at that instant). Periods
            # are dates, so this never delays an expiry in practice; a withdrawal is a new
            # version of the Consent and is seen at the next request regardless.
            state.now = self._clock().replace(microsecond=0)
            ctx.state["consent"] = state
        return state

    def _actor(self, ctx: RequestContext, conn: Connection) -> Actor:
        state = self._state(ctx)
        if state.actor is None:
            principal = ctx.principal
            key = (
                principal.kind,
                principal.organization,
                principal.hpr,
                principal.pid,
                principal.is_dpo,
            )
            cached = self._actors.get(key)
            now = time.monotonic()
            if cached is not None and cached[0] > now:
                state.actor = cached[1]
            else:
                state.actor = actor_for(conn, principal)
                if len(self._actors) > 10_000:
                    self._actors.clear()
                self._actors[key] = (now + self._actor_ttl, state.actor)
        return state.actor

    def _logs(
        self, ctx: RequestContext, conn: Connection, patient_ids: set[str], *, fresh: bool
    ) -> dict[str, ChildLog | None]:
        state = self._state(ctx)
        if fresh:
            # loaded since the request's last write: still the state that write left
            writes = ctx.writes_made()
            wanted = {p for p in patient_ids if state.loaded_at.get(p) != writes}
        else:
            wanted = {p for p in patient_ids if p not in state.logs}
        if wanted:
            # a batch of the ingest worker shares what it read of its logs' versions
            loaded = self._cache.logs(conn, wanted, known=ctx.state.get(BATCH_LOG_VERSIONS))
            for patient_id in wanted:
                state.logs[patient_id] = loaded.get(patient_id)
                state.loaded_at[patient_id] = ctx.writes_made()
        return {p: state.logs.get(p) for p in patient_ids}

    # -- the seam ---------------------------------------------------------------------------
    def check_interaction(
        self, ctx: RequestContext, interaction: Interaction, resource_type: str
    ) -> None:
        """Refuse what the token's scopes or the caller's role cannot do on a type at all."""
        require_scope(ctx, interaction, resource_type)
        principal = ctx.principal
        if resource_type == "AuditEvent" and not principal.is_dpo:
            raise Forbidden("Only a data protection officer reads the audit trail")
        if principal.is_dpo and interaction not in (Interaction.READ, Interaction.SEARCH):
            raise Forbidden("A data protection officer reads the audit trail and consents only")

    def can_read(
        self, ctx: RequestContext, resource: StoredResource, *, conn: Connection
    ) -> AccessDecision:
        """Decide one read or search hit."""
        rtype = resource.resource_type
        if rtype in DIRECTORY_TYPES:
            return AccessDecision(permitted=True, decision_id="", audited=False)
        if rtype == "AuditEvent":
            return _plain(ctx.principal.is_dpo, "Only a data protection officer reads audits")
        data = resource.data
        patient_id = self._patient(ctx, conn, rtype, data)
        if patient_id is None:
            return _plain(False, _NOT_IN_LOG)
        log = self._logs(ctx, conn, {patient_id}, fresh=False)[patient_id]
        if log is None:
            return _plain(False, _NOT_IN_LOG, patient_id=patient_id)
        decision = decide(
            actor=self._actor(ctx, conn),
            log=log,
            request=AccessRequest(action=Action.READ, resource_type=rtype, resource=data),
            policy=self.policy,
            now=self._state(ctx).now,
            decision_id=uuid.uuid4().hex,
        )
        return _from_decision(decision, patient_id)

    def check_write(
        self,
        ctx: RequestContext,
        *,
        conn: Connection,
        interaction: Interaction,
        resource_type: str,
        current: Mapping[str, Any] | None,
        proposed: Mapping[str, Any] | None,
    ) -> AccessDecision:
        """Decide a write on the state it leaves behind (pending Bundle entries included)."""
        principal = ctx.principal
        if resource_type in DIRECTORY_TYPES:
            allowed = principal.kind.value in ("practitioner", "system") and not principal.is_dpo
            return AccessDecision(
                permitted=allowed,
                decision_id="",
                audited=not allowed,
                reason="" if allowed else "Only services maintain the directory of services",
            )
        actor = self._actor(ctx, conn)
        # An update is decided on both versions: moving an entry to another child's log
        # needs the right to write in both logs.
        items: list[tuple[Mapping[str, Any], str]] = []
        for data in (current, proposed):
            if data is not None:
                patient_id = self._patient(ctx, conn, resource_type, data)
                if patient_id is None:
                    return _plain(False, _NOT_IN_LOG)
                items.append((data, patient_id))
        logs = self._logs(ctx, conn, {patient_id for _, patient_id in items}, fresh=True)
        now = self._state(ctx).now
        result = _plain(False, _NOT_IN_LOG)
        for data, patient_id in items:
            if resource_type == "Consent" and proposed is not None and data is not proposed:
                continue  # a Consent change is decided once, by check_consent_write below
            log = logs.get(patient_id)
            if log is None:
                return _plain(False, _NOT_IN_LOG, patient_id=patient_id)
            if resource_type == "Consent" and data is proposed:
                decision = check_consent_write(
                    actor=actor,
                    # the change is judged against the Consent as it was before this write
                    log=_with_stored_consent(log, data.get("id"), current),
                    consent=data,
                    policy=self.policy,
                    now=now,
                    decision_id=uuid.uuid4().hex,
                )
            else:
                action = Action.DELETE if proposed is None else Action.WRITE
                decision = decide(
                    actor=actor,
                    log=log,
                    request=AccessRequest(
                        action=action, resource_type=resource_type, resource=data
                    ),
                    policy=self.policy,
                    now=now,
                    decision_id=uuid.uuid4().hex,
                )
            result = _from_decision(decision, patient_id)
            if not decision.permitted:
                return result
        return result

    def search_filter(
        self,
        ctx: RequestContext,
        resource_type: str,
        *,
        conn: Connection,
        patients: frozenset[str] | None = None,
        confined: bool = False,
    ) -> ColumnElement[bool] | None:
        """Return the SQL condition that keeps only children whose logs the caller may read."""
        if resource_type in DIRECTORY_TYPES:
            return None
        actor = self._actor(ctx, conn)
        if resource_type == "AuditEvent":
            return None if actor.kind is ActorKind.DPO else false()
        if actor.kind is ActorKind.DPO:
            return None if resource_type == "Consent" else false()
        if patients is not None:
            # the search names its children: deciding those is exact and far cheaper than
            # evaluating every child the caller has consents for
            candidates = patients
        elif actor.kind is ActorKind.CITIZEN:
            candidates = family_patients(conn, actor.pid) if actor.pid else frozenset()
        else:
            with Database.planned_for_values(conn):
                candidates = consented_patients(conn, actor)
        logs = self._logs(ctx, conn, set(candidates), fresh=False)
        now = self._state(ctx).now
        plain: list[str] = []
        hiding: dict[frozenset[tuple[str, str]], list[str]] = {}
        for patient_id, log in logs.items():
            if log is None:
                continue
            access = self._readable_types(actor, log, now, resource_type)
            if resource_type not in access.types:
                continue
            if access.excluded_labels:
                hiding.setdefault(frozenset(access.excluded_labels), []).append(patient_id)
            else:
                plain.append(patient_id)
        if confined and patients is not None and len(plain) == len(patients):
            # Every match is in the log of a named child, and the caller reads this type in
            # all of those logs without exceptions: the SQL condition would be a no-op, only
            # costing planning and a join. Each hit is still decided one by one.
            return None
        clauses = []
        arrays = uses_arrays(conn)
        if plain:
            clauses.append(_in_logs(resource_type, sorted(plain), arrays=arrays))
        for labels, patient_ids in hiding.items():
            clauses.append(
                and_(
                    _in_logs(resource_type, sorted(patient_ids), arrays=arrays),
                    not_(_labelled(labels)),
                )
            )
        return or_(*clauses) if clauses else false()

    def consent_status(
        self,
        ctx: RequestContext,
        *,
        conn: Connection,
        patient_id: str,
        organization_number: str | None,
    ) -> AccessDecision:
        """Answer "may this organisation (or the caller) see this log, and by which Consent"."""
        caller = self._actor(ctx, conn)
        log = self._logs(ctx, conn, {patient_id}, fresh=False)[patient_id]
        if log is None:
            raise NotFound(f"Patient/{patient_id} is not known")
        asker_may = (
            caller.kind is ActorKind.DPO
            or decide(
                actor=caller,
                log=log,
                request=AccessRequest(
                    action=Action.READ,
                    resource_type="Patient",
                    resource=log.patient,
                ),
                policy=self.policy,
                now=self._state(ctx).now,
                decision_id=uuid.uuid4().hex,
            ).permitted
        )
        if not asker_may:
            # existence is hidden from those who may not see the child at all
            raise NotFound(f"Patient/{patient_id} is not known")
        subject = caller
        if organization_number is not None:
            subject = Actor(
                kind=ActorKind.SYSTEM,
                organization_number=organization_number,
                organization_ids=organization_ids(conn, organization_number),
            )
        decision = consent_status(
            actor=subject,
            log=log,
            policy=self.policy,
            now=self._state(ctx).now,
            decision_id=uuid.uuid4().hex,
        )
        return _from_decision(decision, patient_id)

    # -- helpers ----------------------------------------------------------------------------
    def _readable_types(
        self, actor: Actor, log: ChildLog, now: datetime, resource_type: str
    ) -> TypeAccess:
        # Keyed by the log object (the log cache gives a new one for every new version), the
        # caller, the searched type and the second: a search over a service's hundreds of
        # children reuses it. Only the searched type is judged, a ninth of the work of all.
        # Only the current second is kept: entries of past seconds are never asked for again,
        # and keeping them (up to 50,000, each holding a log) grew the API's memory by 13 MB a
        # minute under bench/bench_load.py.
        if self._types_second is None or now > self._types_second:
            self._types = {}
            self._types_second = now
        key = (id(log), actor, now, resource_type)
        cached = self._types.get(key)
        if cached is not None and cached[0] is log:
            return cached[1]
        access = readable_types(
            actor=actor, log=log, policy=self.policy, now=now, among=(resource_type,)
        )
        if now == self._types_second and len(self._types) < 50_000:
            self._types[key] = (log, access)
        return access

    def _patient(
        self, ctx: RequestContext, conn: Connection, resource_type: str, data: Mapping[str, Any]
    ) -> str | None:
        return child_of(conn, resource_type, data, self._base_url, ctx.written_children())


def _with_stored_consent(
    log: ChildLog, consent_id: Any, stored: Mapping[str, Any] | None
) -> ChildLog:
    others = tuple(c for c in log.consents if c.get("id") != consent_id)
    return replace(log, consents=(*others, stored) if stored is not None else others)


def _plain(permitted: bool, reason: str, *, patient_id: str | None = None) -> AccessDecision:
    return AccessDecision(
        permitted=permitted,
        decision_id=uuid.uuid4().hex,
        patient_id=patient_id,
        basis="role" if permitted else "not-in-log",
        reason=reason,
    )


def _from_decision(decision: Decision, patient_id: str) -> AccessDecision:
    return AccessDecision(
        permitted=decision.permitted,
        decision_id=decision.decision_id,
        patient_id=patient_id,
        consent_id=decision.consent_id,
        basis=decision.basis.value,
        reason=decision.reason,
        provision=decision.provision,
    )


def _in_logs(resource_type: str, patient_ids: list[str], *, arrays: bool) -> ColumnElement[bool]:
    if resource_type == "Patient":
        return one_of(resources.c.id, patient_ids, arrays=arrays)
    direct = select(search_reference.c.resource_id).where(
        search_reference.c.resource_type == resource_type,
        search_reference.c.param == "patient",
        search_reference.c.target_type == "Patient",
        one_of(search_reference.c.target_id, patient_ids, arrays=arrays),
    )
    if resource_type != "Provenance":
        return resources.c.id.in_(direct)
    # Provenance belongs to the log of what it is about: its targets' child
    in_log = select(search_reference.c.resource_type, search_reference.c.resource_id).where(
        search_reference.c.param == "patient",
        search_reference.c.target_type == "Patient",
        one_of(search_reference.c.target_id, patient_ids, arrays=arrays),
    )
    via_target = select(search_reference.c.resource_id).where(
        search_reference.c.resource_type == "Provenance",
        search_reference.c.param == "target",
        tuple_(search_reference.c.target_type, search_reference.c.target_id).in_(in_log),
    )
    return or_(resources.c.id.in_(direct), resources.c.id.in_(via_target))


def _labelled(labels: frozenset[tuple[str, str]]) -> ColumnElement[bool]:
    return resources.c.id.in_(
        select(search_token.c.resource_id).where(
            search_token.c.resource_type == resources.c.resource_type,
            search_token.c.param == "_security",
            or_(
                *(
                    and_(search_token.c.system == system, search_token.c.code == code)
                    for system, code in sorted(labels)
                )
            ),
        )
    )
