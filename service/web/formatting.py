"""Small readers of FHIR JSON and formatters of dates for the pages."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

__all__ = [
    "OSLO",
    "code_in",
    "codes_in",
    "format_when",
    "iso_now",
    "name_of",
    "reference_of",
    "sort_key",
    "today",
]

OSLO: Final = ZoneInfo("Europe/Oslo")
_DATE_FORMATS: Final = {"nb": "%d.%m.%Y", "en": "%d %b %Y"}


def today() -> date:
    """Return today's date in Norway."""
    return datetime.now(OSLO).date()


def iso_now() -> str:
    """Return now in Norway as a FHIR dateTime with seconds."""
    return datetime.now(OSLO).replace(microsecond=0).isoformat()


def _parse(value: str) -> datetime | date | None:
    text = value.strip()
    try:
        if len(text) == 10:
            return date.fromisoformat(text)
        if len(text) in (4, 7):
            return date.fromisoformat(text + ("-01-01" if len(text) == 4 else "-01"))
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_when(value: Any, language: str) -> str:
    """Format a FHIR date, dateTime or instant for people, in Norwegian time."""
    if not isinstance(value, str) or not value:
        return ""
    parsed = _parse(value)
    if parsed is None:
        return value
    pattern = _DATE_FORMATS.get(language, _DATE_FORMATS["nb"])
    if isinstance(parsed, datetime):
        return parsed.astimezone(OSLO).strftime(f"{pattern} %H:%M")
    return parsed.strftime(pattern)


def sort_key(value: Any) -> str:
    """Return a sortable UTC text for a FHIR date or dateTime (empty sorts first)."""
    if not isinstance(value, str):
        return ""
    parsed = _parse(value)
    if isinstance(parsed, datetime):
        return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if isinstance(parsed, date):
        return parsed.isoformat() + "T00:00:00"
    return ""


def codes_in(concepts: Any, system: str) -> list[str]:
    """Return the codes of one system in a CodeableConcept, Coding or a list of either."""
    items: Iterable[Any]
    if isinstance(concepts, Mapping):
        items = [concepts]
    elif isinstance(concepts, list):
        items = concepts
    else:
        return []
    found: list[str] = []
    for item in items:
        if not isinstance(item, Mapping):
            continue
        codings = item.get("coding") if "coding" in item else [item]
        for coding in codings or ():
            if (
                isinstance(coding, Mapping)
                and coding.get("system") == system
                and isinstance(coding.get("code"), str)
            ):
                found.append(coding["code"])
    return found


def code_in(concepts: Any, system: str) -> str | None:
    """Return the first code of one system, if any."""
    codes = codes_in(concepts, system)
    return codes[0] if codes else None


def reference_of(value: Any) -> str:
    """Return the literal reference text of a Reference, or an empty string."""
    if isinstance(value, Mapping) and isinstance(value.get("reference"), str):
        return str(value["reference"])
    return ""


def name_of(resource: Mapping[str, Any]) -> str:
    """Return a person's or organisation's display name."""
    name = resource.get("name")
    if isinstance(name, str):
        return name
    for entry in name or ():
        if not isinstance(entry, Mapping):
            continue
        if isinstance(entry.get("text"), str):
            return str(entry["text"])
        given = " ".join(g for g in entry.get("given") or () if isinstance(g, str))
        family = entry.get("family") if isinstance(entry.get("family"), str) else ""
        text = f"{given} {family}".strip()
        if text:
            return text
    return ""
