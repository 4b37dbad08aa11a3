"""The directory of services (Organization), read through the repository like everything else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from service.repository import FhirRepository
from service.search.extract import parse_reference
from service.web.formatting import code_in, name_of

__all__ = ["ENH", "Directory", "Org", "load_directory"]

ENH: Final = "urn:oid:2.16.578.1.12.4.1.4.101"
SERVICE_TYPE: Final = "https://stafett.no/fhir/CodeSystem/service-type"
_PAGE: Final = 500
_MOST: Final = 5000


@dataclass(frozen=True, slots=True)
class Org:
    """One service: resource id, organisation number, name and service type."""

    id: str
    number: str
    name: str
    kind: str = ""

    @property
    def label(self) -> str:
        """Return the name, or the org.nr when the name is unknown."""
        return self.name or self.number or self.id


@dataclass(frozen=True, slots=True)
class Directory:
    """Services by resource id and by organisation number."""

    base_url: str
    by_id: dict[str, Org] = field(default_factory=dict)
    by_number: dict[str, Org] = field(default_factory=dict)

    def name_for_number(self, number: str) -> str:
        """Return the name of the service with this org.nr, or the number itself."""
        org = self.by_number.get(number)
        return org.label if org is not None else number

    def org_of(self, reference: Any) -> Org | None:
        """Return the service a Reference names, literally or by org.nr identifier."""
        if not isinstance(reference, Mapping):
            return None
        literal = reference.get("reference")
        if isinstance(literal, str):
            target_type, target_id, _ = parse_reference(literal, self.base_url)
            if target_type == "Organization" and target_id:
                return self.by_id.get(target_id) or Org(id=target_id, number="", name="")
            return None
        identifier = reference.get("identifier")
        if isinstance(identifier, Mapping) and identifier.get("system") == ENH:
            number = str(identifier.get("value", ""))
            return self.by_number.get(number) or Org(id="", number=number, name="")
        return None


def _org(data: Mapping[str, Any]) -> Org:
    number = ""
    for identifier in data.get("identifier") or ():
        if isinstance(identifier, Mapping) and identifier.get("system") == ENH:
            number = str(identifier.get("value", ""))
    return Org(
        id=str(data.get("id", "")),
        number=number,
        name=name_of(data),
        kind=code_in(data.get("type"), SERVICE_TYPE) or "",
    )


def load_directory(repo: FhirRepository) -> Directory:
    """Read every Organization (directory data: decided, not audited)."""
    directory = Directory(base_url=repo.config.base_url)
    offset = 0
    while offset < _MOST:
        query = repo.parse_search(
            "Organization", [("_count", str(_PAGE)), ("_offset", str(offset))]
        )
        result = repo.search(query)
        for stored in result.matches:
            org = _org(stored.data)
            directory.by_id[org.id] = org
            if org.number:
                directory.by_number[org.number] = org
        if len(result.matches) < _PAGE:
            break
        offset += _PAGE
    return directory
