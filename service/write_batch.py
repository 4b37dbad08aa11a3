"""Several repositories' writes in one transaction: the ingest worker's batches.

One commit per inbound message is bound by the commit itself and by the statements every
write repeats (its audit row, its outbox row, the same conditional searches for the same
services). A `WriteBatch` lets the repositories of several messages share one transaction:
each still decides its writes on the state it leaves, in order, but the audit records and
outbox rows of all of them are stored with one statement each just before the commit, and
the same conditional search (the child by fødselsnummer, the child's log, the service by
org.nr: every message of a child repeats them) runs once per batch until a write in the
batch changes a type it depends on. Whether the caller may see a match is decided once per
version too, until the batch writes what such decisions rest on (the child, guardians,
Consents); a repeated decision is still audited, as the single path would audit it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from bus import Record
from service.access import AccessDecision
from service.audit import AuditRecord, AuditTrail
from service.enforcement.compartment import DIRECTORY_TYPES
from service.outbox import Outbox
from service.storage.store import StoredResource

__all__ = ["WriteBatch"]

# what a decision to read a resource of a child's log rests on, besides the resource itself
_DECISION_INPUTS = frozenset({"Patient", "RelatedPerson", "Consent"})


@dataclass
class WriteBatch:
    """The shared transaction of a batch and what its repositories store at its end."""

    conn: Connection
    audit: list[AuditRecord] = field(default_factory=list)
    outbox: list[tuple[str, Record]] = field(default_factory=list)
    # (type, criteria) -> (the matches, the types whose writes can change them)
    _matches: dict[tuple[str, str], tuple[list[StoredResource], frozenset[str]]] = field(
        default_factory=dict
    )
    # (caller, type, id, version) -> the decision whether that caller may see it
    _decisions: dict[tuple[str, str, str, int], AccessDecision] = field(default_factory=dict)

    def cached_matches(self, resource_type: str, criteria: str) -> list[StoredResource] | None:
        """Return the matches found earlier in the batch for these criteria, or None."""
        found = self._matches.get((resource_type, criteria))
        return None if found is None else list(found[0])

    def remember_matches(
        self,
        resource_type: str,
        criteria: str,
        matches: list[StoredResource],
        depends_on: Iterable[str],
    ) -> None:
        """Keep a conditional search's matches until the batch writes a type in `depends_on`."""
        self._matches[(resource_type, criteria)] = (list(matches), frozenset(depends_on))

    def cached_decision(self, caller: str, match: StoredResource) -> AccessDecision | None:
        """Return the decision taken earlier in the batch on `caller` seeing this version."""
        return self._decisions.get((caller, match.resource_type, match.id, match.version_id))

    def remember_decision(
        self, caller: str, match: StoredResource, decision: AccessDecision
    ) -> None:
        """Keep a decision on `caller` seeing this version for the rest of the batch."""
        self._decisions[(caller, match.resource_type, match.id, match.version_id)] = decision

    def changed(self, resource_type: str) -> None:
        """Forget what the batch knows that a write of this type can change."""
        self._matches = {k: v for k, v in self._matches.items() if resource_type not in v[1]}
        decision_inputs = resource_type in _DECISION_INPUTS
        self._decisions = {
            k: v
            for k, v in self._decisions.items()
            if k[1] != resource_type and not (decision_inputs and k[1] not in DIRECTORY_TYPES)
        }

    def store(self, *, audit: AuditTrail | None, outbox: Outbox | None) -> None:
        """Store the batch's audit records and outbox rows with its transaction."""
        if audit is not None and self.audit:
            audit.record_in_transaction(self.conn, self.audit)
        if outbox is not None and self.outbox:
            outbox.add(self.conn, self.outbox)
        self.audit, self.outbox = [], []
