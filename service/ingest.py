"""The ingest worker's core: apply a message from stafett.inbound exactly as a REST write.

A connector sends a FHIR resource (created, or updated when it carries an id) or a
transaction Bundle, in an envelope naming the sending organisation. It goes through the same
repository as the REST API: scopes, consent, validation, audit and the outbox. The message's
event id is stored in the transaction of its effect, so a redelivered message is recognised
and not applied twice. Messages that can never succeed (malformed, invalid, refused) are
rejected with an OperationOutcome for the dead-letter topic; a database outage is raised so
that the worker retries the same message later.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from bus import Envelope, EnvelopeError, Message, topics
from service.access import BATCH_LOG_VERSIONS, RequestContext
from service.api.outcomes import operation_outcome
from service.auth import Principal, PrincipalKind
from service.auth.scopes import ScopeSet
from service.bundles import conditional_targets, process_bundle
from service.enforcement.loading import log_versions
from service.errors import BadRequest, FhirError, Issue, ServiceUnavailable
from service.prefetch import prefetch_conditional
from service.repository import FhirRepository, RepositoryConfig
from service.search.values import now_micros
from service.storage.schema import inbound_applied
from service.tracing import message_scope
from service.write_batch import WriteBatch

__all__ = ["IngestOutcome", "IngestResult", "Ingestor"]

_log = logging.getLogger("stafett.ingest")


class IngestOutcome(StrEnum):
    """What became of one inbound message."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The outcome, and for a rejection the OperationOutcome that explains it."""

    outcome: IngestOutcome
    operation_outcome: dict[str, Any] | None = None
    event_id: str | None = None


class Ingestor:
    """Applies inbound messages through the repository, once each."""

    def __init__(self, *, config: RepositoryConfig, scopes: str, fhir_base: str) -> None:
        self._config = config
        self._scopes = ScopeSet.parse(scopes)
        self._fhir_base = fhir_base

    def apply(self, message: Message) -> IngestResult:
        """Apply one message; raise ServiceUnavailable when it should be retried later."""
        # log lines (and the span) carry the message's event id and correlation id
        with message_scope("ingest", message) as scope:
            result = self._apply(message)
            scope.outcome(result.outcome.value)
            rejected = result.outcome is IngestOutcome.REJECTED
            _log.log(
                logging.WARNING if rejected else logging.INFO,
                result.outcome.value,
                extra={"issues": _issue_codes(result.operation_outcome)} if rejected else None,
            )
        return result

    def apply_many(self, messages: Sequence[Message]) -> list[IngestResult]:
        """Apply messages in order: in one transaction when all succeed, else one by one.

        Raise ServiceUnavailable when they should be retried later. A batch in which any
        message is rejected (or raced by another worker) is rolled back as a whole and its
        messages applied one by one, so every message ends exactly as `apply` would end it.
        """
        if len(messages) > 1:
            try:
                results = self._apply_batch(messages)
            except (_OneByOne, IntegrityError):
                pass  # rolled back as a whole; IntegrityError: another worker applied one
            else:
                for message, result in zip(messages, results, strict=True):
                    with message_scope("ingest", message) as scope:
                        scope.outcome(result.outcome.value)
                        _log.info(result.outcome.value)
                return results
        return [self.apply(message) for message in messages]

    def _apply_batch(self, messages: Sequence[Message]) -> list[IngestResult]:
        checked = [_check(message) for message in messages]
        if any(isinstance(item, IngestResult) for item in checked):
            raise _OneByOne  # a malformed message: the single path rejects it with its reason
        envelopes = [item for item in checked if isinstance(item, Envelope)]
        results: list[IngestResult] = []
        with self._config.database.write() as conn:
            done = _applied_among(conn, [e.event_id for e in envelopes])
            batch = WriteBatch(conn)
            self._prepare(batch, [e for e in envelopes if e.event_id not in done])
            applied: list[Envelope] = []
            for message, envelope in zip(messages, envelopes, strict=True):
                if envelope.event_id in done:
                    results.append(
                        IngestResult(IngestOutcome.DUPLICATE, event_id=envelope.event_id)
                    )
                    continue
                done.add(envelope.event_id)
                context = self._context(envelope, str(envelope.sender))
                # the log versions read by earlier messages of the batch, until it changes one
                context.state[BATCH_LOG_VERSIONS] = batch.log_fingerprints
                repo = FhirRepository(self._config, context, batch=batch)
                try:
                    with message_scope("ingest", message):
                        self._write(repo, envelope.payload)
                except ServiceUnavailable:
                    raise
                except (FhirError, IntegrityError) as exc:
                    raise _OneByOne from exc
                applied.append(envelope)
                results.append(IngestResult(IngestOutcome.APPLIED, event_id=envelope.event_id))
            batch.store(audit=self._config.audit, outbox=self._config.outbox)
            if applied:
                conn.execute(
                    insert(inbound_applied),
                    [
                        {"event_id": e.event_id, "sender": e.sender, "applied_at": now_micros()}
                        for e in applied
                    ],
                )
        return results

    def _prepare(self, batch: WriteBatch, envelopes: Sequence[Envelope]) -> None:
        """Take the batch's conditional locks and look its identifiers up, one statement each.

        Each message would take its locks and search its criteria one by one; doing so for the
        whole batch first changes no outcome (the locks are the same, held to the same
        commit, and taken in sorted order; a search is kept only until a write concerns it)
        and saves the round trips of every message's conditional update and references.
        """
        keys: list[str] = []
        searches: list[tuple[str, str]] = []
        for envelope in envelopes:
            payload = envelope.payload
            if isinstance(payload, dict) and payload.get("resourceType") == "Bundle":
                more_keys, more_searches = conditional_targets(payload)
                keys.extend(more_keys)
                searches.extend(more_searches)
        if keys:
            self._config.database.lock_keys(batch.conn, keys)
            batch.locked.update(keys)
        if searches:
            prefetch_conditional(self._config, batch, searches)
            # the children named in the batch: their logs' versions, read once for all
            patients = batch.matched_ids("Patient") - batch.log_fingerprints.keys()
            batch.log_fingerprints.update(log_versions(batch.conn, patients))

    def _apply(self, message: Message) -> IngestResult:
        checked = _check(message)
        if isinstance(checked, IngestResult):
            return checked
        envelope, sender, payload = checked, str(checked.sender), checked.payload
        if self._already_applied(envelope.event_id):
            return IngestResult(IngestOutcome.DUPLICATE, event_id=envelope.event_id)
        repo = FhirRepository(self._config, self._context(envelope, sender))
        repo.before_commit.append(lambda conn: _mark_applied(conn, envelope))
        try:
            self._write(repo, payload)
        except ServiceUnavailable:
            raise
        except IntegrityError:
            # the same message applied concurrently by another worker won the race
            if self._already_applied(envelope.event_id):
                return IngestResult(IngestOutcome.DUPLICATE, event_id=envelope.event_id)
            raise
        except FhirError as exc:
            return IngestResult(
                IngestOutcome.REJECTED,
                operation_outcome=operation_outcome(exc.issues),
                event_id=envelope.event_id,
            )
        return IngestResult(IngestOutcome.APPLIED, event_id=envelope.event_id)

    def _write(self, repo: FhirRepository, payload: dict[str, Any] | None) -> None:
        if payload is None:  # `_check` lets only resources and Bundles through
            raise BadRequest("payload must be a FHIR resource or Bundle")
        resource_type = payload["resourceType"]
        if resource_type == "Bundle":
            if payload.get("type") != "transaction":
                # a batch commits entry by entry, so a redelivery could apply half of it twice
                raise BadRequest("A Bundle on stafett.inbound must be a transaction")
            process_bundle(repo, payload, self._fhir_base)
            return
        resource_id = payload.get("id")
        if isinstance(resource_id, str):
            repo.update(resource_type=resource_type, id=resource_id, resource=payload)
        else:
            repo.create(resource=payload, resource_type=resource_type)

    def _context(self, envelope: Envelope, sender: str) -> RequestContext:
        principal = Principal(
            kind=PrincipalKind.SYSTEM,
            issuer="urn:stafett:bus",
            subject=f"{topics.INBOUND}/{sender}",
            scopes=self._scopes,
            expires_at=0,
            organization=sender,
            client_id=f"{topics.INBOUND}/{sender}",
        )
        return RequestContext(
            principal=principal,
            request_id=envelope.event_id,
            correlation_id=envelope.correlation_id,
        )

    def _already_applied(self, event_id: str) -> bool:
        with self._config.database.read() as conn:
            row = conn.execute(
                select(inbound_applied.c.event_id).where(inbound_applied.c.event_id == event_id)
            ).first()
        return row is not None


class _OneByOne(Exception):
    """The batch cannot be applied as a whole; apply its messages one by one."""


def _check(message: Message) -> Envelope | IngestResult:
    """Return the message's envelope, or its rejection when it can never be applied."""
    try:
        envelope = message.envelope()
    except EnvelopeError as exc:
        return _rejected(None, "structure", f"Not a Stafett envelope: {exc}")
    sender = envelope.sender
    try:
        if not sender:
            raise ValueError("the envelope names no sender organisation")
        topics.validate_orgnr(sender)
    except ValueError as exc:
        return _rejected(envelope.event_id, "security", f"sender: {exc}")
    payload = envelope.payload
    if not isinstance(payload, dict) or not isinstance(payload.get("resourceType"), str):
        return _rejected(envelope.event_id, "required", "payload must be a FHIR resource or Bundle")
    return envelope


def _applied_among(conn: Connection, event_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(event_ids), 500):
        rows = conn.execute(
            select(inbound_applied.c.event_id).where(
                inbound_applied.c.event_id.in_(event_ids[start : start + 500])
            )
        )
        found.update(row[0] for row in rows)
    return found


def _mark_applied(conn: Connection, envelope: Envelope) -> None:
    conn.execute(
        insert(inbound_applied).values(
            event_id=envelope.event_id, sender=envelope.sender, applied_at=now_micros()
        )
    )


def _issue_codes(outcome: dict[str, Any] | None) -> list[str]:
    # the codes only: diagnostics may quote identifiers (fødselsnumre) from the message
    return [str(issue.get("code")) for issue in (outcome or {}).get("issue", ())]


def _rejected(event_id: str | None, code: str, text: str) -> IngestResult:
    return IngestResult(
        IngestOutcome.REJECTED,
        operation_outcome=operation_outcome([Issue(code, text)]),
        event_id=event_id,
    )
