"""Several repositories' writes in one transaction: the ingest worker's batches.

One commit per inbound message is bound by the commit itself and by the statements every
write repeats (its audit row, its outbox row, the same conditional searches for the same
services). A `WriteBatch` lets the repositories of several messages share one transaction:
each still decides its writes on the state it leaves, in order, but the audit records and
outbox rows of all of them are stored with one statement each just before the commit, and
the same conditional search (the child by fødselsnummer, the child's log, the service by
org.nr: every message of a child repeats them) runs once per batch until a write in the
batch changes a type it depends on. A search by one identifier (`identifier=system|code`,
the conditional update of every vendor record) is forgotten only when a write in the batch
concerns it: the written resource was among its matches, or is now indexed under that
identifier. The ingest worker looks all of a batch's conditional searches up before its
first message, a few statements for the whole batch (service/prefetch.py). Whether the
caller may see a match is decided once per version too, until the batch writes what such
decisions rest on (the child, guardians, Consents); a repeated decision is still audited, as
the single path would audit it. The versions of what each child's log is built from (the
access policy's fingerprints) are kept for the batch on the same condition.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from bus import Record
from service.access import AccessDecision
from service.audit import AuditRecord, AuditTrail
from service.enforcement.compartment import DIRECTORY_TYPES
from service.outbox import Outbox
from service.storage.store import StoredResource

__all__ = ["TokenKey", "WriteBatch"]

# (param, system, code) of a search by one token: `param=system|code`
TokenKey = tuple[str, str, str]
# a token index row as the store writes it: (param, system, code)
TokenRow = tuple[str, str | None, str | None]

# what a decision to read a resource of a child's log rests on, besides the resource itself
_DECISION_INPUTS = frozenset({"Patient", "RelatedPerson", "Consent"})


@dataclass(frozen=True, slots=True)
class _Found:
    """A conditional search's matches and what a write must touch to change them."""

    matches: tuple[StoredResource, ...]
    depends_on: frozenset[str]
    # for a search by one token on its own type: only writes that concern it count
    token: TokenKey | None


@dataclass
class WriteBatch:
    """The shared transaction of a batch and what its repositories store at its end."""

    conn: Connection
    audit: list[AuditRecord] = field(default_factory=list)
    outbox: list[tuple[str, Record]] = field(default_factory=list)
    # advisory lock keys this transaction holds (`Database.lock_key`)
    locked: set[str] = field(default_factory=set)
    # patient id -> the versions its log is built from (None: no log), shared by the batch's
    # request contexts (service/enforcement/loading.py); emptied in place when the batch
    # writes what a log is built from
    log_fingerprints: dict[str, Any] = field(default_factory=dict)
    # (type, criteria) -> what a conditional search found
    _found: dict[tuple[str, str], _Found] = field(default_factory=dict)
    # indexes of `_found`, so that a write looks at the searches it may change only:
    # type -> the searches that any write of the type forgets
    _by_type: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    # (type, token) -> the searches by that token; (type, id) -> the token searches matching it
    _by_token: dict[tuple[str, TokenKey], set[tuple[str, str]]] = field(default_factory=dict)
    _by_match: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)
    # (type, id) -> how many times the batch wrote it: a version read in the batch is still
    # the current one while this count has not moved
    _writes: dict[tuple[str, str], int] = field(default_factory=dict)
    # type -> (caller, id, version) -> the decision whether that caller may see it
    _decisions: dict[str, dict[tuple[str, str, int], AccessDecision]] = field(default_factory=dict)

    # -- conditional searches ---------------------------------------------------------------
    def cached_matches(self, resource_type: str, criteria: str) -> list[StoredResource] | None:
        """Return the matches found earlier in the batch for these criteria, or None."""
        found = self._found.get((resource_type, criteria))
        return None if found is None else list(found.matches)

    def remember_matches(
        self,
        resource_type: str,
        criteria: str,
        matches: Iterable[StoredResource],
        depends_on: Iterable[str],
        *,
        token: TokenKey | None = None,
    ) -> None:
        """Keep a conditional search's matches until the batch writes a type in `depends_on`.

        With `token` (the search is `param=system|code` on `resource_type` alone), only until
        the batch writes a resource among the matches or one indexed under that token.
        """
        key = (resource_type, criteria)
        self._forget(key)
        depends = frozenset(depends_on)
        if token is not None and depends != {resource_type}:
            token = None
        found = _Found(tuple(matches), depends, token)
        self._found[key] = found
        if token is None:
            for type_ in depends:
                self._by_type.setdefault(type_, set()).add(key)
            return
        self._by_token.setdefault((resource_type, token), set()).add(key)
        for match in found.matches:
            self._by_match.setdefault((resource_type, match.id), set()).add(key)

    def matched_ids(self, resource_type: str) -> set[str]:
        """Return the ids of the resources of a type that the batch's searches matched."""
        return {
            match.id
            for (found_type, _criteria), found in self._found.items()
            if found_type == resource_type
            for match in found.matches
        }

    def knows(self, resource_type: str, criteria: str) -> bool:
        """Return whether the batch holds matches for these criteria."""
        return (resource_type, criteria) in self._found

    def _forget(self, key: tuple[str, str]) -> None:
        found = self._found.pop(key, None)
        if found is None:
            return
        if found.token is None:
            for type_ in found.depends_on:
                self._by_type.get(type_, set()).discard(key)
            return
        self._by_token.get((key[0], found.token), set()).discard(key)
        for match in found.matches:
            self._by_match.get((key[0], match.id), set()).discard(key)

    # -- decisions ----------------------------------------------------------------------------
    def cached_decision(self, caller: str, match: StoredResource) -> AccessDecision | None:
        """Return the decision taken earlier in the batch on `caller` seeing this version."""
        by_type = self._decisions.get(match.resource_type)
        return None if by_type is None else by_type.get((caller, match.id, match.version_id))

    def remember_decision(
        self, caller: str, match: StoredResource, decision: AccessDecision
    ) -> None:
        """Keep a decision on `caller` seeing this version for the rest of the batch."""
        by_type = self._decisions.setdefault(match.resource_type, {})
        by_type[(caller, match.id, match.version_id)] = decision

    # -- writes -------------------------------------------------------------------------------
    def writes_to(self, resource_type: str, id: str) -> int:
        """Return how many writes of this resource the batch has made so far."""
        return self._writes.get((resource_type, id), 0)

    def changed(
        self, resource_type: str, id: str, tokens: Collection[TokenRow] | None = None
    ) -> None:
        """Forget what the batch knows that a write of this resource can change.

        `tokens` (the token index rows the written version now has; empty for a deletion)
        spare the searches by one token that the write does not concern; without them every
        search on the type is forgotten.
        """
        self._writes[(resource_type, id)] = self.writes_to(resource_type, id) + 1
        stale = set(self._by_type.pop(resource_type, ()))
        stale |= self._by_match.pop((resource_type, id), set())
        if tokens is None:
            stale |= {key for key in self._found if key[0] == resource_type}
        else:
            for row in tokens:
                if row[1] is not None and row[2] is not None:
                    stale |= self._by_token.get((resource_type, (row[0], row[1], row[2])), set())
        for key in stale:
            self._forget(key)
        self._decisions.pop(resource_type, None)
        if resource_type in _DECISION_INPUTS:
            self.log_fingerprints.clear()
            for type_ in list(self._decisions):
                if type_ not in DIRECTORY_TYPES:
                    del self._decisions[type_]

    def store(self, *, audit: AuditTrail | None, outbox: Outbox | None) -> None:
        """Store the batch's audit records and outbox rows with its transaction."""
        if audit is not None and self.audit:
            audit.record_in_transaction(self.conn, self.audit)
        if outbox is not None and self.outbox:
            outbox.add(self.conn, self.outbox)
        self.audit, self.outbox = [], []
