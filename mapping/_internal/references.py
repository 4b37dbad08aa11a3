"""Reference helpers that specs call as JSONata functions ($idof, $child, $org, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from mapping._internal.identifiers import FNR_SYSTEM, ORGNR_SYSTEM

__all__ = ["RuleViolation", "build_index", "identifier_of", "reference_string"]


class RuleViolation(Exception):
    """Raised by `$fail(message, path)` in a spec; the engine turns it into a MappingError."""

    def __init__(self, message: str, path: str | None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


def reference_string(reference: Any) -> str | None:
    """Return the `reference` string of a Reference (or a plain string), if any."""
    if isinstance(reference, str):
        return reference
    if isinstance(reference, Mapping):
        raw = reference.get("reference")
        return raw if isinstance(raw, str) else None
    return None


def _from_criteria(reference: str, system: str) -> str | None:
    _, _, query = reference.partition("?")
    for param in query.split("&"):
        name, _, value = param.partition("=")
        token_system, sep, token_value = unquote(value).partition("|")
        if name == "identifier" and sep and token_system == system:
            return token_value
    return None


def _from_identifiers(identifiers: Any, system: str) -> str | None:
    if isinstance(identifiers, Mapping):
        identifiers = [identifiers]
    for item in identifiers or ():
        if isinstance(item, Mapping) and item.get("system") == system:
            value = item.get("value")
            if isinstance(value, str):
                return value
    return None


def identifier_of(
    reference: Any, system: str, index: Mapping[str, Any] | None = None
) -> str | None:
    """Return the identifier value with system that a Reference names, however it names it.

    Looks at `Reference.identifier`, a conditional reference (`Type?identifier=system|value`)
    and, for a literal reference, the identifiers the index knows for it (from the context or
    from the Bundle being mapped).
    """
    if isinstance(reference, Mapping):
        found = _from_identifiers(reference.get("identifier"), system)
        if found is not None:
            return found
    raw = reference_string(reference)
    if raw is None:
        return None
    if "?" in raw:
        return _from_criteria(raw, system)
    if index:
        return _from_identifiers(index.get(raw), system)
    return None


def build_index(
    context_identifiers: Any, resources: Iterable[tuple[str | None, Mapping[str, Any]]] = ()
) -> dict[str, Any]:
    """Map literal references to identifier lists: the context's, then the Bundle's resources."""
    index: dict[str, Any] = {}
    for full_url, resource in resources:
        identifiers = resource.get("identifier")
        if not identifiers:
            continue
        resource_id = resource.get("id")
        if isinstance(resource_id, str):
            index[f"{resource.get('resourceType')}/{resource_id}"] = identifiers
        if isinstance(full_url, str) and full_url:  # a fullUrl of another type is no key
            index[full_url] = identifiers
    if isinstance(context_identifiers, Mapping):
        index.update(context_identifiers)
    return index


def child_reference(fnr: str) -> str:
    """Return the conditional reference to the child with this fødselsnummer."""
    return f"Patient?identifier={FNR_SYSTEM}|{fnr}"


def organization_reference(orgnr: str) -> str:
    """Return the conditional reference to the organisation with this org.nr."""
    return f"Organization?identifier={ORGNR_SYSTEM}|{orgnr}"


def guardian_reference(guardian_fnr: str, child_fnr: str) -> str:
    """Return the conditional reference to a guardian's RelatedPerson for one child (§4)."""
    return (
        f"RelatedPerson?identifier={FNR_SYSTEM}|{guardian_fnr}"
        f"&patient.identifier={FNR_SYSTEM}|{child_fnr}"
    )
