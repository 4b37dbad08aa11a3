"""What the health station's source and sink share: its codes, echo marker, Stafett ids."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.config import ConnectorConfig
from connectors.school.common import identifier_value

__all__ = [
    "JOURNAL_SOURCE",
    "SYSTEM",
    "own_source",
    "patient_reference",
    "stafett_id",
    "stafett_id_system",
]

SYSTEM = "helsestasjon-fhir"
# meta.source of versions written by staff in the station's journal
JOURNAL_SOURCE = "http://helsestasjon.example/fhir/journal"
_CHILD = {"CarePlan": "subject", "Task": "for", "Consent": "patient"}


def own_source(config: ConnectorConfig) -> str:
    """Return the `meta.source` the sink writes with: how the source knows its own echo."""
    default = f"https://stafett.no/connectors/{config.operator}/{config.source_system}"
    return str(config.settings.get("source_uri") or default)


def stafett_id_system(resource_type: str) -> str:
    """Return the identifier system under which a station copy names its Stafett resource."""
    return f"https://stafett.no/fhir/id/{resource_type}"


def stafett_id(resource: Mapping[str, Any]) -> str | None:
    """Return the Stafett id a station resource is a copy of (written by the sink), if any."""
    system = stafett_id_system(str(resource.get("resourceType")))
    return identifier_value(resource.get("identifier"), system)


def patient_reference(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return the Reference to the child of a CarePlan, Task or Consent."""
    found = resource.get(_CHILD.get(str(resource.get("resourceType")), ""))
    return found if isinstance(found, Mapping) else {}
