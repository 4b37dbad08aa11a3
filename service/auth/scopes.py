"""SMART on FHIR scopes: parsing (v2 and v1 syntax) and the pure grant check.

Scope syntax: https://build.fhir.org/ig/HL7/smart-app-launch/scopes-and-launch-context.html
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["Interaction", "ScopeContext", "ScopeSet", "SmartScope"]


class Interaction(StrEnum):
    """A FHIR interaction class, named by its SMART v2 permission letter."""

    CREATE = "c"
    READ = "r"
    UPDATE = "u"
    DELETE = "d"
    SEARCH = "s"


class ScopeContext(StrEnum):
    """Whose data a scope reaches: the patient in context, what the user may see, or a system."""

    PATIENT = "patient"
    USER = "user"
    SYSTEM = "system"


_V2_ORDER = "cruds"
_V1_PERMISSIONS: dict[str, frozenset[Interaction]] = {
    "read": frozenset({Interaction.READ, Interaction.SEARCH}),
    "write": frozenset({Interaction.CREATE, Interaction.UPDATE, Interaction.DELETE}),
    "*": frozenset(Interaction),
}
# Letters are optional one by one but must keep cruds order, so "rs" matches and "sr" does not.
_SCOPE_RE = re.compile(
    r"(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]*)"
    r"\.(?P<permissions>read|write|\*|c?r?u?d?s?)(?:\?(?P<query>.*))?"
)


@dataclass(frozen=True, slots=True)
class SmartScope:
    """One parsed SMART scope; `query` holds a SMART v2 `?param=value` restriction if any."""

    context: ScopeContext
    resource_type: str
    interactions: frozenset[Interaction]
    query: str | None = None

    @classmethod
    def parse(cls, text: str) -> SmartScope | None:
        """Parse one SMART v2 or v1 scope; return None for anything else or anything malformed."""
        match = _SCOPE_RE.fullmatch(text)
        if match is None:
            return None
        permissions, query = match["permissions"], match["query"]
        if permissions in _V1_PERMISSIONS:
            if query is not None:  # SMART v1 has no query restrictions: a v1/v2 hybrid is malformed
                return None
            interactions = _V1_PERMISSIONS[permissions]
        elif permissions:
            interactions = frozenset(Interaction(letter) for letter in permissions)
        else:
            return None
        return cls(ScopeContext(match["context"]), match["type"], interactions, query or None)

    def grants(self, context: ScopeContext, interaction: Interaction, resource_type: str) -> bool:
        """Return whether this scope alone allows interaction on resource_type in context."""
        # A query-restricted scope (e.g. patient/Observation.rs?category=laboratory) grants only
        # a subset of resources, and enforcing that subset is not implemented yet. Treating it as
        # a full grant would over-grant, so it grants nothing until the filter is enforced.
        if self.query is not None:
            return False
        return (
            self.context == context
            and interaction in self.interactions
            and self.resource_type in ("*", resource_type)
        )

    def __str__(self) -> str:
        letters = "".join(ch for ch in _V2_ORDER if Interaction(ch) in self.interactions)
        suffix = f"?{self.query}" if self.query is not None else ""
        return f"{self.context}/{self.resource_type}.{letters}{suffix}"


@dataclass(frozen=True, slots=True)
class ScopeSet:
    """The SMART scopes of one token; non-SMART scopes (openid, nav:foo) are dropped at parse."""

    scopes: frozenset[SmartScope] = frozenset()
    # (context, resource type or "*", interaction) triples, so `permits` is two set lookups.
    _grants: frozenset[tuple[ScopeContext, str, Interaction]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        grants = frozenset(
            (scope.context, scope.resource_type, interaction)
            for scope in self.scopes
            if scope.query is None  # see SmartScope.grants: restricted scopes grant nothing
            for interaction in scope.interactions
        )
        object.__setattr__(self, "_grants", grants)

    @classmethod
    def parse(cls, scopes: str | Iterable[str]) -> ScopeSet:
        """Parse a space-separated scope string (or a list of scopes), keeping only SMART scopes."""
        items = scopes.split() if isinstance(scopes, str) else scopes
        parsed = (SmartScope.parse(item) for item in items if isinstance(item, str))
        return cls(frozenset(scope for scope in parsed if scope is not None))

    def permits(self, context: ScopeContext, interaction: Interaction, resource_type: str) -> bool:
        """Return whether any scope allows interaction on resource_type in context."""
        return (context, resource_type, interaction) in self._grants or (
            context,
            "*",
            interaction,
        ) in self._grants

    def in_context(self, context: ScopeContext) -> ScopeSet:
        """Return the scopes of one context only."""
        return ScopeSet(frozenset(s for s in self.scopes if s.context == context))

    def __iter__(self) -> Iterator[SmartScope]:
        return iter(sorted(self.scopes, key=str))

    def __len__(self) -> int:
        return len(self.scopes)

    def __bool__(self) -> bool:
        return bool(self.scopes)

    def __str__(self) -> str:
        return " ".join(str(scope) for scope in self)
