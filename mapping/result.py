"""What a mapping returns: FHIR resources with their write rule, or a vendor record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mapping.errors import MappingError

__all__ = ["BatchResult", "MappedResource", "MappingResult"]


@dataclass(frozen=True, slots=True)
class MappedResource:
    """One FHIR resource from an inbound mapping, with how a connector should write it.

    `match` is the conditional criteria (`identifier=<system>|<value>`): write with
    `PUT <Type>?<match>` (conditional update), or with `POST` + `ifNoneExist: <match>` when
    `create_only` (shared resources such as the child's Patient, which other systems also feed).
    """

    resource: dict[str, Any]
    spec: str
    match: str | None = None
    create_only: bool = False

    @property
    def resource_type(self) -> str:
        """Return the resource's type."""
        return str(self.resource["resourceType"])

    @property
    def conditional_url(self) -> str | None:
        """Return `<Type>?<match>`, the form conditional references to this resource take."""
        return f"{self.resource_type}?{self.match}" if self.match else None


@dataclass(frozen=True, slots=True)
class MappingResult:
    """The outcome of mapping one record: FHIR entries (inbound) or a vendor record (outbound)."""

    system: str
    direction: Literal["inbound", "outbound"]
    kind: str
    record_id: str | None
    entries: tuple[MappedResource, ...] = ()
    record: dict[str, Any] | None = None
    skipped: tuple[str, ...] = ()

    @property
    def resources(self) -> list[dict[str, Any]]:
        """Return the FHIR resources of an inbound mapping."""
        return [entry.resource for entry in self.entries]

    @property
    def is_skipped(self) -> bool:
        """Return whether no spec applied to the record (its `when` guards said no)."""
        return not self.entries and self.record is None


@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of `map_many`: results of the records that mapped, errors of the rest."""

    results: tuple[MappingResult, ...]
    errors: tuple[MappingError, ...]

    @property
    def ok(self) -> bool:
        """Return whether every record mapped."""
        return not self.errors
