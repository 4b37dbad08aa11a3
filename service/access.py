"""The enforcement seam: every read, every search hit and every write passes through here.

The repository (service/repository.py) calls an ``AccessPolicy`` at each of these points,
in the manner of HAPI FHIR's IConsentService: once per interaction (``check_interaction``),
once per resource that would be shown (``can_read``), once per write on the state it would
leave behind (``check_write``), and once per search to push a filter into SQL
(``search_filter``) so that lists are filtered by the database and ``Bundle.total`` cannot
count what the caller may not see. Decisions come back to the repository, which audits them
(one place) and turns denials into 404 (reads: existence is hidden) or 403 (writes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement, Connection

from service.auth import Interaction, Principal
from service.errors import Forbidden
from service.storage.store import StoredResource

__all__ = [
    "BATCH_LOG_VERSIONS",
    "AccessDecision",
    "AccessPolicy",
    "RequestContext",
    "ScopeAccessPolicy",
    "require_scope",
]


# The key of `RequestContext.state` under which the ingest worker's batch shares, between the
# contexts of its messages (one transaction), the versions each child's log was read at: see
# service/write_batch.py, which forgets them when the batch writes what a log is built from.
BATCH_LOG_VERSIONS = "batch-log-versions"


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, the ids that tie the request to logs and audit, and per-request state."""

    principal: Principal
    request_id: str
    correlation_id: str | None = None
    # caches of the access policy for this request only (never shared across requests, so a
    # withdrawn consent takes effect at the very next request)
    state: dict[str, Any] = field(default_factory=dict)

    def note_write(self, resource_type: str, id: str, child: str | None) -> None:
        """Record a write of the open transaction and the child whose log it is in."""
        self.state["writes"] = self.state.get("writes", 0) + 1
        written = self.state.setdefault("written-children", {})
        if child is None:
            # not named directly (a Provenance is in a log through its target): ask the index
            written.pop((resource_type, id), None)
        else:
            written[(resource_type, id)] = child

    def written_children(self) -> dict[tuple[str, str], str]:
        """Return (type, id) -> child of what the open transaction wrote naming a child."""
        written: dict[tuple[str, str], str] = self.state.get("written-children", {})
        return written

    def writes_made(self) -> int:
        """Return how many writes this request has made (decisions loaded before are stale)."""
        return int(self.state.get("writes", 0))

    def forget_writes(self) -> None:
        """Forget the writes of a transaction that rolled back."""
        self.state.pop("written-children", None)
        self.state["writes"] = self.state.get("writes", 0) + 1


@dataclass(frozen=True, slots=True)
class AccessDecision:
    """One decision of the policy, as the audit records it."""

    permitted: bool
    decision_id: str
    patient_id: str | None = None
    consent_id: str | None = None
    basis: str = ""
    reason: str = ""
    provision: str | None = None
    # directory data (services, employees) is in no child's log and is not audited
    audited: bool = True


ALLOW_UNAUDITED = AccessDecision(permitted=True, decision_id="", audited=False)


def require_scope(ctx: RequestContext, interaction: Interaction, resource_type: str) -> None:
    """Refuse the interaction when no SMART scope of the token grants it."""
    if not ctx.principal.may(interaction, resource_type):
        raise Forbidden(f"The token's scopes do not allow '{interaction.value}' on {resource_type}")


class AccessPolicy(Protocol):
    """Decides what a caller may do; implementations are side-effect free.

    ``check_interaction`` raises ``service.errors.Forbidden``; the other hooks return
    decisions. ``conn`` is the connection of the current transaction, so a write is decided
    on the state it leaves behind (the pending entries of a transaction Bundle included).
    """

    def check_interaction(
        self, ctx: RequestContext, interaction: Interaction, resource_type: str
    ) -> None:
        """Refuse an interaction on a type before any data is touched."""

    def can_read(
        self, ctx: RequestContext, resource: StoredResource, *, conn: Connection
    ) -> AccessDecision:
        """Decide whether this stored resource may be shown to the caller."""

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
        """Decide a create, update or delete (proposed is None for delete)."""

    def search_filter(
        self,
        ctx: RequestContext,
        resource_type: str,
        *,
        conn: Connection,
        patients: frozenset[str] | None = None,
        confined: bool = False,
    ) -> ColumnElement[bool] | None:
        """Return an SQL condition on `resources` that hides what the caller may not see.

        `patients`, when given, are the only children the search itself can match (it names
        them); the policy may then decide those children only. `confined` says more: every
        match lies in one of their logs (the criteria restrict the very reference that puts a
        resource in a log), so restricting the SQL to those logs again would change nothing.
        """


class ScopeAccessPolicy:
    """SMART scopes only, no consent: for tests of FHIR mechanics and explicit benchmarks.

    Refused in production (``STAFETT_ACCESS_POLICY=scopes-only``); see service/config.py.
    """

    def check_interaction(
        self, ctx: RequestContext, interaction: Interaction, resource_type: str
    ) -> None:
        """Refuse the interaction when no scope of the token grants it."""
        require_scope(ctx, interaction, resource_type)

    def can_read(
        self, ctx: RequestContext, resource: StoredResource, *, conn: Connection
    ) -> AccessDecision:
        """Allow every resource the scopes already admitted."""
        return ALLOW_UNAUDITED

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
        """Allow every write the scopes already admitted."""
        return ALLOW_UNAUDITED

    def search_filter(
        self,
        ctx: RequestContext,
        resource_type: str,
        *,
        conn: Connection,
        patients: frozenset[str] | None = None,
        confined: bool = False,
    ) -> ColumnElement[bool] | None:
        """Add no filter."""
        return None
