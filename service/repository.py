"""The per-request FHIR repository: every interaction, validated and passed through the policy.

Routes and bundle processing call only this class, so no path can skip validation or the
access policy (service/access.py). Interactions follow https://hl7.org/fhir/R4/http.html.
"""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import jsonpatch
import orjson
from sqlalchemy import Connection, and_, or_, select
from sqlalchemy.exc import IntegrityError

from bus import Record, topics
from service.access import AccessDecision, AccessPolicy, RequestContext
from service.audit import AuditRecord, AuditTrail, AuditUnavailable
from service.auth import Interaction
from service.enforcement.compartment import LOG_TYPES, patient_in
from service.enforcement.loading import child_of
from service.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    InvalidResource,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
)
from service.fhir.primitives import is_valid_id
from service.fhir.spec import SUPPORTED_RESOURCE_TYPES
from service.fhir.validation import WRITABLE_TYPES, validate_resource
from service.metrics import CONSENT_DECISIONS
from service.outbox import Outbox, change_event
from service.prefetch import conditional_query, token_key
from service.search import sql as search_sql
from service.search.extract import CompiledParam, IndexRows, parse_reference
from service.search.query import Criterion, Include, SearchQuery, parse_search
from service.search.values import micros_to_instant, now_micros
from service.storage.database import Database
from service.storage.schema import search_reference, search_token
from service.storage.store import HistoryPage, SqlStore, StoredResource, VersionMismatch
from service.write_batch import WriteBatch

__all__ = ["FhirRepository", "RepositoryConfig", "SearchResult", "WriteResult"]

_MAX_INCLUDES = 1000
_MAX_AUDITED_RESOURCES = 50


@dataclass(frozen=True, slots=True)
class _PendingWrite:
    """A write made in the open transaction, decided just before it commits."""

    interaction: Interaction
    subtype: str
    resource_type: str
    id: str
    current: Mapping[str, Any] | None
    proposed: Mapping[str, Any] | None
    version_id: int


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Outcome of a write: the stored version and whether it was newly created."""

    stored: StoredResource
    created: bool
    changed: bool = True


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One page of matches, the included resources and the total (None if not counted)."""

    query: SearchQuery
    matches: list[StoredResource]
    included: list[StoredResource]
    total: int | None


@dataclass(frozen=True, slots=True)
class RepositoryConfig:
    """What the repository shares across requests: database, store, policy and limits."""

    database: Database
    store: SqlStore
    policy: AccessPolicy
    base_url: str
    default_page_size: int
    max_page_size: int
    audit: AuditTrail | None = None
    outbox: Outbox | None = None

    def search_params(self) -> Mapping[str, Mapping[str, CompiledParam]]:
        """Return indexed search parameters by type and code."""
        return self.store.indexer.all_params()


def _check_type(resource_type: str) -> None:
    if resource_type not in SUPPORTED_RESOURCE_TYPES:
        raise NotFound(f"Resource type '{resource_type}' is not supported by this server")


def _check_id(id: str) -> None:
    if not is_valid_id(id):
        raise BadRequest(f"'{id}' is not a valid FHIR id (1-64 characters of A-Z a-z 0-9 - .)")


def finalise(data: dict[str, Any], *, id: str, version_id: int, last_updated: int) -> str:
    """Set id and meta on a validated resource and return its stored JSON text."""
    meta = dict(data.get("meta") or {})
    meta["versionId"] = str(version_id)
    meta["lastUpdated"] = micros_to_instant(last_updated)
    ordered: dict[str, Any] = {"resourceType": data["resourceType"], "id": id, "meta": meta}
    for key, value in data.items():
        if key not in ordered:
            ordered[key] = value
    data.clear()
    data.update(ordered)
    return orjson.dumps(ordered).decode()


def _without_meta(data: Mapping[str, Any]) -> dict[str, Any]:
    meta = dict(data.get("meta") or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    stripped = {k: v for k, v in data.items() if k != "meta"}
    if meta:
        stripped["meta"] = meta
    return stripped


class FhirRepository:
    """FHIR interactions for one caller, each checked by the access policy."""

    def __init__(
        self, config: RepositoryConfig, ctx: RequestContext, *, batch: WriteBatch | None = None
    ) -> None:
        self.config = config
        self.ctx = ctx
        # with a batch, `transaction` joins the batch's transaction instead of opening one
        self._batch = batch
        self._db = config.database
        self._store = config.store
        self._policy = config.policy
        self._audit_records: list[AuditRecord] = []
        self._pending: list[_PendingWrite] = []
        # conditional matches (references, If-None-Exist, conditional update) found inside a
        # transaction; their visibility is decided on the state the transaction leaves
        # with, in a batch, the batch's count of writes to the match when it was found
        self._deferred_matches: list[tuple[str, StoredResource, int]] = []
        self._transaction_conn: Connection | None = None
        # (type, id) this repository made up for a conditional update that matched nothing:
        # nothing can be stored under them yet, so the update need not read them first
        self._minted: set[tuple[str, str]] = set()
        # run inside every write transaction of this repository, just before it commits (the
        # ingest worker records the message it applies, so that it is applied once)
        self.before_commit: list[Callable[[Connection], None]] = []

    # -- transactions and audit -------------------------------------------------------------
    @contextlib.contextmanager
    def _tx(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn  # the owner of the transaction verifies and audits at its end
            return
        with self.transaction() as new_conn:
            yield new_conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """Open one transaction; writes are decided on the state they leave, then audited.

        Every write's decision is taken just before commit, on the connection of the
        transaction, so a transaction Bundle that opens a log is decided as a whole with the
        Consent it carries. Permitted decisions are stored with the transaction; a denial
        rolls everything back and is stored on its own.
        """
        batch = self._batch
        try:
            with (
                contextlib.nullcontext(batch.conn) if batch is not None else self._db.write()
            ) as conn:
                self._transaction_conn = conn
                try:
                    yield conn
                finally:
                    self._transaction_conn = None
                writes = self._verify_writes(conn)
                self._verify_matches(conn)
                self._publish_changes(conn, writes)
                for hook in self.before_commit:
                    hook(conn)
                self._flush_audit(conn)
        except BaseException:
            self._pending.clear()
            self._deferred_matches.clear()
            self.ctx.forget_writes()
            if batch is not None:
                # the whole batch rolls back and its messages are applied again one by one,
                # which records these decisions (a denial included) once
                self._audit_records.clear()
            else:
                self._flush_audit(None, failing=True)
            raise

    def _verify_matches(self, conn: Connection) -> None:
        """Check, on the state the transaction leaves, that every conditional match is visible.

        A service joining a child's log names itself in a Consent in the same transaction that
        refers to the child by identifier; that Consent must count, so the check waits until
        the transaction's writes are in place (and decided).
        """
        deferred, self._deferred_matches = self._deferred_matches, []
        batch, caller = self._batch, self.ctx.principal.subject
        for criteria, match, seen in deferred:
            if batch is not None and batch.writes_to(match.resource_type, match.id) == seen:
                # Found (searched, or kept by the batch only while no write concerned it) in
                # this transaction, and not written since: still the current version, as a
                # read now would return it.
                fresh: StoredResource | None = match
            else:
                fresh = self._store.read(conn, resource_type=match.resource_type, id=match.id)
            decision = (
                batch.cached_decision(caller, fresh)
                if batch is not None and fresh is not None
                else None
            )
            if decision is not None:
                # decided earlier in the batch on the same version and the same consents;
                # audited again, as this message's own look at the match
                decision = dataclasses.replace(decision, decision_id=uuid.uuid4().hex)
                self._record(
                    decision,
                    interaction="search-type",
                    resources=(f"{match.resource_type}/{match.id}",),
                    outcome_detail=None if decision.permitted else "404",
                )
            elif fresh is not None:
                decision = self._decide_read(conn, fresh, interaction="search-type")
                if batch is not None:
                    batch.remember_decision(caller, fresh, decision)
            if decision is None or not decision.permitted:
                raise PreconditionFailed(
                    f"'{criteria}' matches a {match.resource_type} you may not see"
                )

    @contextlib.contextmanager
    def _ro(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        try:
            with self._db.read() as new_conn:
                yield new_conn
        except BaseException:
            self._flush_audit(None, failing=True)
            raise
        # a read whose audit cannot be stored fails rather than goes unrecorded
        self._flush_audit(None)

    def _flush_audit(self, conn: Connection | None, *, failing: bool = False) -> None:
        records, self._audit_records = self._audit_records, []
        trail = self.config.audit
        if not records or trail is None:
            return
        if self._batch is not None and conn is self._batch.conn:
            self._batch.audit.extend(records)  # stored once, just before the batch commits
            return
        if conn is not None:
            trail.record_in_transaction(conn, records)
            return
        try:
            trail.record(records)
        except AuditUnavailable:
            if not failing:
                raise
            # the request fails anyway; its own error says more than the audit's

    def _record(
        self,
        decision: AccessDecision,
        *,
        interaction: str,
        resources: tuple[str, ...],
        query: str | None = None,
        outcome_detail: str | None = None,
    ) -> None:
        if not decision.audited:
            return
        CONSENT_DECISIONS.labels(
            "permit" if decision.permitted else "deny", decision.basis or "none"
        ).inc()
        self._audit_records.append(
            AuditRecord(
                request_id=self.ctx.request_id,
                decision_id=decision.decision_id or uuid.uuid4().hex,
                recorded=now_micros(),
                interaction=interaction,
                permitted=decision.permitted,
                principal=self.ctx.principal,
                patient_id=decision.patient_id,
                resources=resources[:_MAX_AUDITED_RESOURCES],
                query=query,
                consent_id=decision.consent_id,
                basis=decision.basis,
                reason=decision.reason,
                outcome_detail=outcome_detail,
            )
        )

    def _decide_read(
        self, conn: Connection, stored: StoredResource, *, interaction: str
    ) -> AccessDecision:
        decision = self._policy.can_read(self.ctx, stored, conn=conn)
        self._record(
            decision,
            interaction=interaction,
            resources=(f"{stored.resource_type}/{stored.id}",),
            outcome_detail=None if decision.permitted else "404",
        )
        return decision

    def _visible(
        self,
        conn: Connection,
        candidates: Sequence[StoredResource],
        *,
        interaction: str,
        query: str | None,
    ) -> list[StoredResource]:
        """Decide every hit; audit the permitted ones per child and each denial."""
        shown: list[StoredResource] = []
        by_patient: dict[str | None, tuple[AccessDecision, list[str]]] = {}
        for stored in candidates:
            decision = self._policy.can_read(self.ctx, stored, conn=conn)
            reference = f"{stored.resource_type}/{stored.id}"
            if decision.permitted:
                shown.append(stored)
                if decision.audited:
                    entry = by_patient.setdefault(decision.patient_id, (decision, []))
                    entry[1].append(reference)
            else:
                self._record(
                    decision,
                    interaction=interaction,
                    resources=(reference,),
                    query=query,
                    outcome_detail="filtered",
                )
        for decision, references in by_patient.values():
            self._record(
                decision, interaction=interaction, resources=tuple(references), query=query
            )
        return shown

    def _pend(
        self,
        interaction: Interaction,
        resource_type: str,
        id: str,
        *,
        current: Mapping[str, Any] | None,
        proposed: Mapping[str, Any] | None,
        subtype: str,
        version_id: int,
        index: IndexRows | None = None,
    ) -> None:
        self._pending.append(
            _PendingWrite(interaction, subtype, resource_type, id, current, proposed, version_id)
        )
        child = (
            patient_in(resource_type, proposed, self.config.base_url)
            if proposed is not None and resource_type in LOG_TYPES
            else None
        )
        self.ctx.note_write(resource_type, id, child)
        if self._batch is not None:
            # the token rows the written version is indexed under (none once deleted)
            tokens = frozenset(index.tokens) if index is not None else None
            self._batch.changed(resource_type, id, frozenset() if proposed is None else tokens)

    def _verify_writes(self, conn: Connection) -> list[_PendingWrite]:
        pending, self._pending = self._pending, []
        for write in pending:
            decision = self._policy.check_write(
                self.ctx,
                conn=conn,
                interaction=write.interaction,
                resource_type=write.resource_type,
                current=write.current,
                proposed=write.proposed,
            )
            self._record(
                decision,
                interaction=write.subtype,
                resources=(f"{write.resource_type}/{write.id}",),
                outcome_detail=None if decision.permitted else "403",
            )
            if not decision.permitted:
                raise Forbidden(
                    f"{write.subtype} of {write.resource_type} refused: {decision.reason}"
                )
        return pending

    def _publish_changes(self, conn: Connection, writes: Sequence[_PendingWrite]) -> None:
        """Store a change event per write of a child's log in the outbox (same transaction)."""
        outbox = self.config.outbox
        if outbox is None or not writes:
            return
        occurred = datetime.now(UTC)
        records: list[tuple[str, Record]] = []
        for write in writes:
            data = write.proposed if write.proposed is not None else write.current
            if data is None:
                continue
            subject = child_of(
                conn, write.resource_type, data, self.config.base_url, self.ctx.written_children()
            )
            if subject is None:
                continue  # directory entries and resources outside any log are not events
            event = change_event(
                resource_type=write.resource_type,
                resource_id=write.id,
                version_id=write.version_id,
                subject=subject,
                resource=data,
                deleted=write.proposed is None,
                occurred_at=occurred,
                correlation_id=self.ctx.correlation_id or self.ctx.request_id or None,
                sender=self.ctx.principal.organization,
            )
            records.append((event.event_id, Record.of(topics.CHANGES, event)))
        if self._batch is not None:
            self._batch.outbox.extend(records)  # stored once, just before the batch commits
            return
        outbox.add(conn, records)

    # -- read -----------------------------------------------------------------------------
    def read(
        self, *, resource_type: str, id: str, conn: Connection | None = None
    ) -> StoredResource:
        """Read the current version ([read](https://hl7.org/fhir/R4/http.html#read))."""
        _check_type(resource_type)
        self._policy.check_interaction(self.ctx, Interaction.READ, resource_type)
        with self._ro(conn) as c:
            stored = self._store.read(c, resource_type=resource_type, id=id)
            # existence is hidden: a resource the caller may not see is "not known"
            if stored is None or not self._decide_read(c, stored, interaction="read").permitted:
                raise NotFound(f"{resource_type}/{id} is not known")
        if stored.deleted:
            raise Gone(f"{resource_type}/{id} was deleted (version {stored.version_id})")
        return stored

    def vread(
        self, *, resource_type: str, id: str, version_id: str, conn: Connection | None = None
    ) -> StoredResource:
        """Read one version ([vread](https://hl7.org/fhir/R4/http.html#vread))."""
        _check_type(resource_type)
        self._policy.check_interaction(self.ctx, Interaction.READ, resource_type)
        if not version_id.isdigit():
            raise NotFound(f"{resource_type}/{id} has no version '{version_id}'")
        with self._ro(conn) as c:
            stored = self._store.vread(
                c, resource_type=resource_type, id=id, version_id=int(version_id)
            )
            current = self._store.read(c, resource_type=resource_type, id=id)
            # decided on the current content (a tombstone row keeps the last live JSON)
            if (
                stored is None
                or current is None
                or not self._decide_read(c, current, interaction="vread").permitted
            ):
                raise NotFound(f"{resource_type}/{id} has no version '{version_id}'")
        if stored.deleted:
            raise Gone(f"{resource_type}/{id} version {version_id} is a deletion")
        return stored

    # -- create ---------------------------------------------------------------------------
    def create(
        self,
        *,
        resource: Any,
        resource_type: str | None = None,
        if_none_exist: str | None = None,
        id: str | None = None,
        conn: Connection | None = None,
    ) -> WriteResult:
        """Create with a server id, or find the match of If-None-Exist (conditional create)."""
        if resource_type is not None:
            _check_type(resource_type)
        self._check_writable(resource_type or _type_of(resource))
        resource_type = validate_resource(resource, expected_type=resource_type)
        self._policy.check_interaction(self.ctx, Interaction.CREATE, resource_type)
        data: dict[str, Any] = dict(resource)
        with self._tx(conn) as c:
            if if_none_exist:
                # two concurrent conditional creates with the same criteria must not both create
                self._db.lock_key(c, f"{resource_type}?{if_none_exist}")
                existing = self.find_conditional(
                    resource_type=resource_type, criteria=if_none_exist, conn=c
                )
                if existing is not None:
                    return WriteResult(stored=existing, created=False, changed=False)
            new_id = id or str(uuid.uuid4())
            stored, index = self._insert_new(c, resource_type, new_id, data, method="POST")
            self._pend(
                Interaction.CREATE,
                resource_type,
                new_id,
                current=None,
                proposed=data,
                subtype="create",
                version_id=1,
                index=index,
            )
        return WriteResult(stored=stored, created=True)

    def find_conditional(
        self, *, resource_type: str, criteria: str, conn: Connection | None
    ) -> StoredResource | None:
        """Return the one resource matching conditional criteria, None, or raise 412."""
        _check_type(resource_type)
        self._policy.check_interaction(self.ctx, Interaction.SEARCH, resource_type)
        batch = self._batch if conn is not None and conn is self._transaction_conn else None
        # cached only after these very criteria parsed, so a hit needs no parsing again
        cached = batch.cached_matches(resource_type, criteria) if batch is not None else None
        query = (
            None
            if cached is not None
            else conditional_query(self.config.search_params(), resource_type, criteria)
        )
        with self._ro(conn) as c:
            # unfiltered on purpose: a match the caller may not see must block a duplicate
            if cached is not None:
                matches = cached
            else:
                assert query is not None
                matches, _ = self._search_rows(c, query, None)
                if batch is not None:
                    depends_on = {resource_type}
                    for criterion in query.criteria:
                        depends_on.update(criterion.chain_targets)
                    batch.remember_matches(
                        resource_type,
                        criteria,
                        matches,
                        depends_on,
                        token=token_key(query, criteria),
                    )
            if len(matches) > 1:
                raise PreconditionFailed(
                    f"'{resource_type}?{criteria}' matches more than one {resource_type}"
                )
            if matches and conn is not None and conn is self._transaction_conn:
                match = matches[0]
                seen = batch.writes_to(match.resource_type, match.id) if batch is not None else 0
                self._deferred_matches.append((f"{resource_type}?{criteria}", match, seen))
            elif (
                matches
                and not self._decide_read(c, matches[0], interaction="search-type").permitted
            ):
                raise PreconditionFailed(
                    f"'{resource_type}?{criteria}' matches a {resource_type} you may not see"
                )
        return matches[0] if matches else None

    def _insert_new(
        self, conn: Connection, resource_type: str, id: str, data: dict[str, Any], *, method: str
    ) -> tuple[StoredResource, IndexRows]:
        last_updated = now_micros()
        content = finalise(data, id=id, version_id=1, last_updated=last_updated)
        try:
            index = self._store.write(
                conn,
                resource_type=resource_type,
                id=id,
                version_id=1,
                last_updated=last_updated,
                content=content,
                data=data,
                method=method,
                previous_version=None,
            )
        except IntegrityError as exc:
            # only a client-chosen id can collide (update-as-create racing another); the
            # transaction is rolled back as a whole
            raise Conflict(f"{resource_type}/{id} was created concurrently; retry") from exc
        return StoredResource(resource_type, id, 1, last_updated, False, content), index

    # -- update ---------------------------------------------------------------------------
    def update_conditional(
        self,
        *,
        resource_type: str,
        criteria: str,
        resource: Any,
        conn: Connection | None = None,
    ) -> WriteResult:
        """Update the one match of the criteria, or create if none ([conditional update](https://hl7.org/fhir/R4/http.html#cond-update)).

        Concurrent conditional updates with the same criteria are serialised (PostgreSQL
        advisory lock), so two deliveries of the same vendor record never create two resources.
        """
        _check_type(resource_type)
        with self._tx(conn) as c:
            target = self.resolve_conditional_target(
                resource_type=resource_type, criteria=criteria, resource=resource, conn=c
            )
            body = dict(resource) if isinstance(resource, Mapping) else resource
            if isinstance(body, dict):
                body["id"] = target
            return self.update(resource_type=resource_type, id=target, resource=body, conn=c)

    def resolve_conditional_target(
        self, *, resource_type: str, criteria: str, resource: Any, conn: Connection
    ) -> str:
        """Return the id a conditional update writes to: the one match, or a new id."""
        self.lock_conditional(conn, f"{resource_type}?{criteria}")
        match = self.find_conditional(resource_type=resource_type, criteria=criteria, conn=conn)
        body_id = resource.get("id") if isinstance(resource, Mapping) else None
        if match is not None:
            if body_id is not None and body_id != match.id:
                raise BadRequest(
                    f"The resource id '{body_id}' is not the id of the match, {match.id}"
                )
            return match.id
        if isinstance(body_id, str):
            return body_id
        minted = str(uuid.uuid4())
        self._minted.add((resource_type, minted))
        return minted

    def lock_conditional(self, conn: Connection, key: str) -> None:
        """Serialise conditional writes with these criteria until the transaction ends.

        In a batch, a key the batch's transaction holds already (the ingest worker takes all
        of a batch's keys with one statement first) costs no round trip.
        """
        batch = self._batch
        if batch is not None and conn is batch.conn:
            if key in batch.locked:
                return
            batch.locked.add(key)
        self._db.lock_key(conn, key)

    def update(
        self,
        *,
        resource_type: str,
        id: str,
        resource: Any,
        if_match: str | None = None,
        conn: Connection | None = None,
        method: str = "PUT",
    ) -> WriteResult:
        """Update, or create with the client's id ([update](https://hl7.org/fhir/R4/http.html#update))."""
        _check_type(resource_type)
        self._check_writable(resource_type)
        _check_id(id)
        validate_resource(resource, expected_type=resource_type)
        body_id = resource.get("id")
        if body_id is None:
            raise BadRequest("The resource in an update must carry its id")
        if body_id != id:
            raise BadRequest(f"The resource id '{body_id}' does not match the URL id '{id}'")
        self._policy.check_interaction(self.ctx, Interaction.UPDATE, resource_type)
        expected = _parse_if_match(if_match)
        data: dict[str, Any] = dict(resource)
        with self._tx(conn) as c:
            if (resource_type, id) in self._minted:
                # an id made up moments ago in this transaction (its conditional update matched
                # nothing, under the criteria's lock): there is no row to lock; a collision
                # still fails the insert below as a conflict
                self._minted.discard((resource_type, id))
                current = None
            else:
                current = self._store.lock_current(c, resource_type=resource_type, id=id)
            if current is None:
                if expected is not None:
                    raise PreconditionFailed(
                        f"If-Match names version {expected} but {resource_type}/{id} does not exist"
                    )
                self._policy.check_interaction(self.ctx, Interaction.CREATE, resource_type)
                stored, index = self._insert_new(c, resource_type, id, data, method=method)
                self._pend(
                    Interaction.CREATE,
                    resource_type,
                    id,
                    current=None,
                    proposed=data,
                    subtype="update",
                    version_id=1,
                    index=index,
                )
                return WriteResult(stored=stored, created=True)
            if (
                not current.deleted
                and not self._decide_read(c, current, interaction="read").permitted
            ):
                raise NotFound(f"{resource_type}/{id} is not known")
            if expected is not None and expected != current.version_id:
                raise PreconditionFailed(
                    f"{resource_type}/{id} is at version {current.version_id}, "
                    f"not {expected} as If-Match requires"
                )
            if not current.deleted and _without_meta(current.data) == _without_meta(data):
                # no change: keep the version, as clients retrying an update expect
                return WriteResult(stored=current, created=False, changed=False)
            version_id = current.version_id + 1
            last_updated = max(now_micros(), current.last_updated + 1)
            content = finalise(data, id=id, version_id=version_id, last_updated=last_updated)
            try:
                index = self._store.write(
                    c,
                    resource_type=resource_type,
                    id=id,
                    version_id=version_id,
                    last_updated=last_updated,
                    content=content,
                    data=data,
                    method=method,
                    previous_version=current.version_id,
                )
            except VersionMismatch as exc:
                raise Conflict(f"{resource_type}/{id} was changed concurrently; retry") from exc
            self._pend(
                Interaction.UPDATE,
                resource_type,
                id,
                current=None if current.deleted else current.data,
                proposed=data,
                subtype="patch" if method == "PATCH" else "update",
                version_id=version_id,
                index=index,
            )
            stored = StoredResource(resource_type, id, version_id, last_updated, False, content)
            return WriteResult(stored=stored, created=current.deleted)

    def patch(
        self,
        *,
        resource_type: str,
        id: str,
        operations: Any,
        if_match: str | None = None,
        conn: Connection | None = None,
    ) -> WriteResult:
        """Apply a JSON Patch ([patch](https://hl7.org/fhir/R4/http.html#patch))."""
        _check_type(resource_type)
        self._check_writable(resource_type)
        if not isinstance(operations, list):
            raise BadRequest("A JSON Patch document must be a JSON array of operations")
        with self._tx(conn) as c:
            current = self.read(resource_type=resource_type, id=id, conn=c)
            expected = _parse_if_match(if_match)
            if expected is not None and expected != current.version_id:
                raise PreconditionFailed(
                    f"{resource_type}/{id} is at version {current.version_id}, not {expected}"
                )
            try:
                patched = jsonpatch.apply_patch(current.data, operations)
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                raise InvalidResource(f"The JSON Patch cannot be applied: {exc}") from exc
            except (TypeError, ValueError, KeyError) as exc:
                raise BadRequest(f"The JSON Patch is malformed: {exc}") from exc
            if not isinstance(patched, dict):
                raise InvalidResource("The JSON Patch must leave a resource object")
            if patched.get("resourceType") != resource_type or patched.get("id") != id:
                raise InvalidResource("A patch may not change the resourceType or the id")
            return self.update(
                resource_type=resource_type,
                id=id,
                resource=patched,
                if_match=str(current.version_id),
                conn=c,
                method="PATCH",
            )

    # -- delete ---------------------------------------------------------------------------
    def delete(
        self, *, resource_type: str, id: str, conn: Connection | None = None
    ) -> StoredResource | None:
        """Delete as a new versioned tombstone; return it, or None if nothing was live."""
        _check_type(resource_type)
        _check_id(id)  # as read and update do (REST and Bundle entries alike)
        self._check_writable(resource_type)
        self._policy.check_interaction(self.ctx, Interaction.DELETE, resource_type)
        with self._tx(conn) as c:
            current = self._store.lock_current(c, resource_type=resource_type, id=id)
            if current is None or current.deleted:
                return None
            if not self._decide_read(c, current, interaction="read").permitted:
                raise NotFound(f"{resource_type}/{id} is not known")
            last_updated = max(now_micros(), current.last_updated + 1)
            try:
                version_id = self._store.write_tombstone(
                    c, current=current, last_updated=last_updated
                )
            except VersionMismatch as exc:
                raise Conflict(f"{resource_type}/{id} was changed concurrently; retry") from exc
            self._pend(
                Interaction.DELETE,
                resource_type,
                id,
                current=current.data,
                proposed=None,
                subtype="delete",
                version_id=version_id,
            )
            return StoredResource(resource_type, id, version_id, last_updated, True, None)

    # -- history --------------------------------------------------------------------------
    def history(
        self,
        *,
        resource_type: str,
        id: str | None,
        since: int | None,
        before: int | None,
        count: int,
        offset: int,
    ) -> HistoryPage:
        """Return instance or type history, newest first, hiding what the caller may not see."""
        _check_type(resource_type)
        self._policy.check_interaction(
            self.ctx, Interaction.READ if id else Interaction.SEARCH, resource_type
        )
        interaction = "history-instance" if id else "history-type"
        with self._ro(None) as c:
            id_filter = None
            if id is not None:
                current = self._store.read(c, resource_type=resource_type, id=id)
                if (
                    current is None
                    or not self._decide_read(c, current, interaction=interaction).permitted
                ):
                    raise NotFound(f"{resource_type}/{id} is not known")
            else:
                # the total and the pages count only resources the caller may see now
                id_filter = self._policy.search_filter(self.ctx, resource_type, conn=c)
            with self._db.planned_for_values(c):
                page = self._store.history(
                    c,
                    resource_type=resource_type,
                    id=id,
                    since=since,
                    before=before,
                    count=count,
                    offset=offset,
                    visible=id_filter,
                )
            if id is not None:
                return page
            keys = sorted({(e.resource_type, e.id) for e in page.entries})
            current_versions = self._store.read_many(c, keys, include_deleted=True)
            readable = {
                (r.resource_type, r.id)
                for r in self._visible(c, current_versions, interaction=interaction, query=None)
            }
        entries = [e for e in page.entries if (e.resource_type, e.id) in readable]
        return HistoryPage(entries=entries, total=page.total)

    # -- search ---------------------------------------------------------------------------
    def parse_search(
        self, resource_type: str, params: Sequence[tuple[str, str]], *, strict: bool = False
    ) -> SearchQuery:
        """Parse search parameters for a type."""
        _check_type(resource_type)
        return parse_search(
            resource_type,
            params,
            known=self.config.search_params(),
            default_count=self.config.default_page_size,
            max_count=self.config.max_page_size,
            strict=strict,
        )

    def search(self, query: SearchQuery, *, conn: Connection | None = None) -> SearchResult:
        """Run a search ([search](https://hl7.org/fhir/R4/search.html)) with includes."""
        self._policy.check_interaction(self.ctx, Interaction.SEARCH, query.resource_type)
        with self._ro(conn) as c:
            patients, confined = self._named_patients(c, query)
            extra = self._policy.search_filter(
                self.ctx, query.resource_type, conn=c, patients=patients, confined=confined
            )
            total: int | None = None
            rows: list[StoredResource] = []
            wants_total = query.summary == "count" or query.total != "none"
            if query.summary != "count" and query.count > 0:
                rows, total = self._search_rows(c, query, extra, with_total=wants_total)
            if wants_total and total is None:
                if query.summary != "count" and query.count > len(rows) and query.offset == 0:
                    total = len(rows)  # an empty first page: nothing matches
                else:
                    with self._db.planned_for_values(c):
                        total = int(
                            c.execute(
                                search_sql.count_statement(
                                    query, base_url=self.config.base_url, extra=extra
                                )
                            ).scalar_one()
                        )
            if query.summary == "count" or query.count == 0:
                return SearchResult(query=query, matches=[], included=[], total=total)
            query_text = urlencode(query.used)
            matches = self._visible(c, rows, interaction="search-type", query=query_text)
            included = self._includes(c, query, matches, query_text)
        return SearchResult(query=query, matches=matches, included=included, total=total)

    def _search_rows(
        self, conn: Connection, query: SearchQuery, extra: Any = None, *, with_total: bool = False
    ) -> tuple[list[StoredResource], int | None]:
        """Return a page of matches and, if asked and the page is not empty, their total."""
        stmt = search_sql.page_statement(
            query, base_url=self.config.base_url, extra=extra, with_total=with_total
        )
        with self._db.planned_for_values(conn):
            result = conn.execute(stmt).all()
        load = self._store.load  # decrypts the versions that have sealed fields
        if not with_total:
            return [load(row) for row in result], None
        total = int(result[0][7]) if result else None
        return [load(row) for row in result], total

    def _includes(
        self,
        conn: Connection,
        query: SearchQuery,
        matches: list[StoredResource],
        query_text: str,
    ) -> list[StoredResource]:
        if not matches or not (query.includes or query.revincludes):
            return []
        seen = {(m.resource_type, m.id) for m in matches}
        found: list[StoredResource] = []
        frontier = matches
        for iteration in range(3):
            keys: set[tuple[str, str]] = set()
            for include in query.includes:
                if iteration and not include.iterate:
                    continue
                keys |= self._include_targets(conn, include, frontier)
            for include in query.revincludes:
                if iteration and not include.iterate:
                    continue
                keys |= self._revinclude_sources(conn, include, frontier)
            keys -= seen
            if not keys:
                break
            candidates = [
                stored
                for stored in self._store.read_many(conn, sorted(keys)[:_MAX_INCLUDES])
                if self._may_read_type(stored.resource_type)
            ]
            batch = self._visible(conn, candidates, interaction="search-type", query=query_text)
            seen |= keys
            found.extend(batch)
            frontier = batch
            if len(found) >= _MAX_INCLUDES:
                break
        return found[:_MAX_INCLUDES]

    def _include_targets(
        self, conn: Connection, include: Include, sources: list[StoredResource]
    ) -> set[tuple[str, str]]:
        ids = [s.id for s in sources if s.resource_type == include.source_type]
        if not ids:
            return set()
        stmt = select(search_reference.c.target_type, search_reference.c.target_id).where(
            search_reference.c.resource_type == include.source_type,
            search_reference.c.resource_id.in_(ids),
            search_reference.c.target_type.is_not(None),
        )
        if include.param != "*":
            stmt = stmt.where(search_reference.c.param == include.param)
        if include.target_type:
            stmt = stmt.where(search_reference.c.target_type == include.target_type)
        return {(t, i) for t, i in conn.execute(stmt) if t in SUPPORTED_RESOURCE_TYPES}

    def _revinclude_sources(
        self, conn: Connection, include: Include, targets: list[StoredResource]
    ) -> set[tuple[str, str]]:
        by_type: dict[str, list[str]] = {}
        for target in targets:
            by_type.setdefault(target.resource_type, []).append(target.id)
        keys: set[tuple[str, str]] = set()
        for target_type, ids in by_type.items():
            if include.target_type and include.target_type != target_type:
                continue
            stmt = select(search_reference.c.resource_type, search_reference.c.resource_id).where(
                search_reference.c.resource_type == include.source_type,
                search_reference.c.target_type == target_type,
                search_reference.c.target_id.in_(ids),
            )
            if include.param != "*":
                stmt = stmt.where(search_reference.c.param == include.param)
            keys |= {(t, i) for t, i in conn.execute(stmt)}
        return keys

    def _named_patients(
        self, conn: Connection, query: SearchQuery
    ) -> tuple[frozenset[str] | None, bool]:
        """Return the children a search can only match, when its criteria name them.

        The flag tells whether every match is sure to lie in one of their logs: true when each
        naming criterion restricts the reference that makes a resource part of a log (the
        Patient's own id or identifier, `patient`, or `subject` pointing at a Patient).
        """
        named: frozenset[str] | None = None
        confined = True
        for criterion in query.criteria:
            found = self._patients_of_criterion(conn, query.resource_type, criterion)
            if found is not None:
                ids, exact = found
                named = ids if named is None else named & ids
                confined = confined and exact
        return named, named is not None and confined and query.resource_type != "Provenance"

    def _patients_of_criterion(
        self, conn: Connection, resource_type: str, criterion: Criterion
    ) -> tuple[frozenset[str], bool] | None:
        if criterion.modifier is not None:
            return None
        if resource_type == "Patient" and criterion.code == "_id":
            return frozenset(criterion.values), True
        if resource_type == "Patient" and criterion.code == "identifier":
            found = self._patients_by_identifier(conn, criterion.values)
            return None if found is None else (found, True)
        if criterion.code not in ("patient", "subject") or criterion.type != "reference":
            return None
        if criterion.chain is not None:
            # a resource is in a child's log only through its Patient, so the children named by
            # identifier are the only ones whose logs this search can show
            inner = criterion.chain
            if inner.code != "identifier" or inner.modifier is not None:
                return None
            found = self._patients_by_identifier(conn, inner.values)
            # `subject` may point at something else with that identifier (not in any log)
            exact = criterion.code == "patient" or criterion.target_type == "Patient"
            return None if found is None else (found, exact)
        if criterion.target_type not in (None, "Patient"):
            return None
        ids: set[str] = set()
        for value in criterion.values:
            target_type, target_id, _url = parse_reference(value, self.config.base_url)
            if target_type == "Patient" and target_id:
                ids.add(target_id)
            elif (
                "/" not in value
                and ":" not in value
                and (criterion.code == "patient" or criterion.target_type == "Patient")
            ):
                ids.add(value)
            else:
                return None
        return frozenset(ids), True

    def _patients_by_identifier(
        self, conn: Connection, values: Sequence[str]
    ) -> frozenset[str] | None:
        conditions = []
        for value in values:
            system, bar, code = value.partition("|")
            if not bar or not system or not code:
                return None
            conditions.append(and_(search_token.c.system == system, search_token.c.code == code))
        rows = conn.execute(
            select(search_token.c.resource_id).where(
                search_token.c.resource_type == "Patient",
                search_token.c.param == "identifier",
                or_(*conditions),
            )
        )
        return frozenset(row[0] for row in rows)

    # -- operations -------------------------------------------------------------------------
    def consent_status(self, *, patient_id: str, organization: str | None) -> AccessDecision:
        """Answer $consent-status: may this organisation (or the caller) see the child's log."""
        status = getattr(self._policy, "consent_status", None)
        if status is None:
            raise MethodNotAllowed("$consent-status needs the consent policy")
        self._policy.check_interaction(self.ctx, Interaction.READ, "Consent")
        with self._ro(None) as c:
            decision: AccessDecision = status(
                self.ctx, conn=c, patient_id=patient_id, organization_number=organization
            )
            self._record(
                decision,
                interaction="operation",
                resources=(f"Patient/{patient_id}",),
                query=f"$consent-status?organization={organization or ''}",
            )
        return decision

    # -- helpers --------------------------------------------------------------------------
    def _may_read_type(self, resource_type: str) -> bool:
        try:
            self._policy.check_interaction(self.ctx, Interaction.READ, resource_type)
        except Forbidden:
            return False
        return True

    def _check_writable(self, resource_type: str) -> None:
        if resource_type in SUPPORTED_RESOURCE_TYPES and resource_type not in WRITABLE_TYPES:
            raise MethodNotAllowed(f"{resource_type} is read-only: Stafett writes it itself")


def _type_of(resource: Any) -> str:
    if isinstance(resource, Mapping) and isinstance(resource.get("resourceType"), str):
        return str(resource["resourceType"])
    return ""


def _parse_if_match(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise BadRequest(f"If-Match must be an ETag like W/\"3\", not '{value}'")
    return int(text)
