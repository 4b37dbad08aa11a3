"""The enforcement seam: every read, every search hit and every write passes through here.

The repository (service/repository.py) calls an ``AccessPolicy`` at each of these points,
in the manner of HAPI FHIR's IConsentService: once per interaction (``check_interaction``),
once per resource that would be shown (``can_read``), once per write (``check_write``), and
once per search to push a filter into SQL (``search_filter``) so that lists are filtered by
the database and ``Bundle.total`` cannot count what the caller may not see. The foundation
policy checks SMART scopes only; the consent service replaces it with the family's decisions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import ColumnElement

from service.auth import Interaction, Principal
from service.errors import Forbidden
from service.storage.store import StoredResource

__all__ = ["AccessPolicy", "RequestContext", "ScopeAccessPolicy"]


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Who is asking, and the ids that tie the request to logs and audit records."""

    principal: Principal
    request_id: str
    correlation_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class AccessPolicy(Protocol):
    """Decides what a caller may do; implementations must be cheap and side-effect free.

    Denials raise ``service.errors.Forbidden`` (or ``NotFound`` to hide that a resource
    exists); ``can_read`` returns False to drop a resource silently from a result set.
    """

    def check_interaction(
        self, ctx: RequestContext, interaction: Interaction, resource_type: str
    ) -> None:
        """Refuse an interaction on a type before any data is touched."""

    def can_read(self, ctx: RequestContext, resource: StoredResource) -> bool:
        """Return whether this stored resource may be shown to the caller."""

    def check_write(
        self,
        ctx: RequestContext,
        *,
        interaction: Interaction,
        resource_type: str,
        current: Mapping[str, Any] | None,
        proposed: Mapping[str, Any] | None,
    ) -> None:
        """Refuse a create, update or delete (proposed is None for delete)."""

    def search_filter(self, ctx: RequestContext, resource_type: str) -> ColumnElement[bool] | None:
        """Return an SQL condition on `resources` that hides what the caller may not see."""


class ScopeAccessPolicy:
    """The foundation policy: SMART scopes gate interactions; no per-resource rule yet."""

    def check_interaction(
        self, ctx: RequestContext, interaction: Interaction, resource_type: str
    ) -> None:
        """Refuse the interaction when no scope of the token grants it."""
        if not ctx.principal.may(interaction, resource_type):
            raise Forbidden(
                f"The token's scopes do not allow '{interaction.value}' on {resource_type}"
            )

    def can_read(self, ctx: RequestContext, resource: StoredResource) -> bool:
        """Allow every resource the scopes already admitted."""
        return True

    def check_write(
        self,
        ctx: RequestContext,
        *,
        interaction: Interaction,
        resource_type: str,
        current: Mapping[str, Any] | None,
        proposed: Mapping[str, Any] | None,
    ) -> None:
        """Allow every write the scopes already admitted."""

    def search_filter(self, ctx: RequestContext, resource_type: str) -> ColumnElement[bool] | None:
        """Add no filter."""
        return None
