"""The authenticated caller of one request, as established from a verified bearer token."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from service.auth.errors import InsufficientScope
from service.auth.scopes import Interaction, ScopeContext, ScopeSet

__all__ = ["Principal", "PrincipalKind"]


#: The role value that makes a practitioner a data protection officer.
DPO_ROLE = "dpo"


class PrincipalKind(StrEnum):
    """Who is calling: an employee of a service, a citizen (child, guardian), or a system."""

    PRACTITIONER = "practitioner"
    CITIZEN = "citizen"
    SYSTEM = "system"


# Each kind of caller is granted by scopes of exactly one SMART context, so a citizen app that
# was given user/ scopes, or an employee token carrying system/ scopes, gets nothing from them.
_CONTEXT_OF_KIND: dict[PrincipalKind, ScopeContext] = {
    PrincipalKind.PRACTITIONER: ScopeContext.USER,
    PrincipalKind.CITIZEN: ScopeContext.PATIENT,
    PrincipalKind.SYSTEM: ScopeContext.SYSTEM,
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who the caller is, for whom they act, and what their token's scopes allow.

    `may` answers only the scope question. Which child's log the caller may touch is the
    consent decision's job (package `consent`), which takes this principal as input.
    `pid` is a fødselsnummer/D-nummer: keep it out of ordinary logs (use `audit_identity`).
    """

    kind: PrincipalKind
    issuer: str
    subject: str
    scopes: ScopeSet
    expires_at: int
    pid: str | None = field(default=None, repr=False)
    hpr: str | None = None
    organization: str | None = None
    parent_organization: str | None = None
    supplier_organization: str | None = None
    client_id: str | None = None
    token_id: str | None = None
    display: str | None = None
    acr: str | None = None
    roles: frozenset[str] = frozenset()

    @property
    def is_dpo(self) -> bool:
        """Return whether the caller acts as data protection officer (personvernombud)."""
        return self.kind is PrincipalKind.PRACTITIONER and DPO_ROLE in self.roles

    @property
    def scope_context(self) -> ScopeContext:
        """Return the one SMART scope context that grants this kind of caller anything."""
        return _CONTEXT_OF_KIND[self.kind]

    def may(self, interaction: Interaction, resource_type: str) -> bool:
        """Return whether the token's scopes allow interaction on resource_type."""
        return self.scopes.permits(self.scope_context, interaction, resource_type)

    def require(self, interaction: Interaction, resource_type: str) -> None:
        """Raise InsufficientScope unless the token's scopes allow interaction on resource_type."""
        if not self.may(interaction, resource_type):
            raise InsufficientScope(
                interaction=interaction.name.lower(), resource_type=resource_type
            )

    @property
    def audit_identity(self) -> str:
        """Return a short identity for logs, e.g. 'practitioner hpr:565501872 org:974760673'."""
        # Deliberately without pid: this string goes to ordinary logs. AuditEvents, which are
        # access-controlled, record pid from the Principal itself.
        parts = [str(self.kind)]
        if self.hpr is not None:
            parts.append(f"hpr:{self.hpr}")
        elif self.kind is not PrincipalKind.SYSTEM or self.client_id is None:
            parts.append(f"sub:{self.subject}")
        if self.organization is not None:
            parts.append(f"org:{self.organization}")
        if self.client_id is not None:
            parts.append(f"client:{self.client_id}")
        return " ".join(parts)
