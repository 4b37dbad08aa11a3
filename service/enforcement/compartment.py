"""Which child's log a resource belongs to (Stafett's Patient compartment)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consent import LOG_RESOURCE_TYPES
from service.search.extract import parse_reference

__all__ = ["DIRECTORY_TYPES", "LOG_TYPES", "linked_references", "patient_in"]

LOG_TYPES = LOG_RESOURCE_TYPES
"""Resource types that are part of a child's log."""
DIRECTORY_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole"})
"""Shared directory data: who the services and employees are; in no child's log."""

# The element that names the child, per type (docs/stafettlogg-fhir.md).
_CHILD_ELEMENT = {
    "RelatedPerson": "patient",
    "CarePlan": "subject",
    "CareTeam": "subject",
    "Goal": "subject",
    "Task": "for",
    "Communication": "subject",
    "Consent": "patient",
}


def patient_in(resource_type: str, data: Mapping[str, Any], base_url: str) -> str | None:
    """Return the id of the child whose log holds this resource, if the resource says so."""
    if resource_type == "Patient":
        value = data.get("id")
        return value if isinstance(value, str) else None
    element = _CHILD_ELEMENT.get(resource_type)
    if element is not None:
        return _patient_id(data.get(element), base_url)
    if resource_type == "Provenance":
        for target in data.get("target") or ():
            found = _patient_id(target, base_url)
            if found is not None:
                return found
    return None


def linked_references(
    resource_type: str, data: Mapping[str, Any], base_url: str
) -> list[tuple[str, str]]:
    """Return the (type, id) of resources whose log this one follows (Provenance targets)."""
    if resource_type != "Provenance":
        return []
    links: list[tuple[str, str]] = []
    for target in data.get("target") or ():
        if isinstance(target, Mapping) and isinstance(target.get("reference"), str):
            target_type, target_id, _ = parse_reference(target["reference"], base_url)
            if target_type and target_id:
                links.append((target_type, target_id))
    return links


def _patient_id(reference: Any, base_url: str) -> str | None:
    if not isinstance(reference, Mapping) or not isinstance(reference.get("reference"), str):
        return None
    target_type, target_id, _ = parse_reference(reference["reference"], base_url)
    return target_id if target_type == "Patient" else None
