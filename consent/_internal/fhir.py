"""Tolerant readers for the few FHIR elements the decision point looks at.

Every reader accepts whatever JSON it is given and returns something empty rather than
raising, except the date parsers, whose ValueError the caller turns into a reason.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from consent.constants import PERSON_ID_SYSTEMS

Label = tuple[str, str]
Bound = date | datetime
_NO_LABELS: frozenset[Label] = frozenset()


def mapping(value: Any) -> Mapping[str, Any] | None:
    """Return value if it is a JSON object."""
    # dict first: the ABC isinstance check is slow, and this runs for every search hit
    if type(value) is dict or isinstance(value, Mapping):
        return value
    return None


def items(value: Any) -> list[Any]:
    """Return value as a list: a JSON array as is, a single value wrapped, null as empty."""
    if value is None:
        return []
    if isinstance(value, list):
        return value
    return [value]


def text(value: Any) -> str | None:
    """Return value if it is a non-empty string."""
    return value if isinstance(value, str) and value else None


def reference_parts(reference: str | None) -> tuple[str, str] | None:
    """Return (type, id) of a literal reference: relative, absolute or version-specific."""
    if not reference or reference.startswith(("urn:", "#")):
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    rtype, rid = parts[-2], parts[-1]
    if not rid or not rtype[:1].isupper():
        return None
    return rtype, rid


def literal(reference: Any) -> tuple[str, str] | None:
    """Return (type, id) of a Reference element's literal `reference`."""
    ref = mapping(reference)
    return reference_parts(text(ref.get("reference"))) if ref is not None else None


def logical(reference: Any) -> Label | None:
    """Return (system, value) of a Reference element's logical `identifier`."""
    ref = mapping(reference)
    ident = mapping(ref.get("identifier")) if ref is not None else None
    if ident is None:
        return None
    system, value = text(ident.get("system")), text(ident.get("value"))
    if system is None or value is None:
        return None
    return system, value.strip()


def coding_pairs(value: Any) -> list[Label]:
    """Return (system, code) of Codings, CodeableConcepts or lists of either."""
    found: list[Label] = []
    # A flat loop rather than recursive generators: Consents are parsed once per log, but
    # a search over many children parses many logs.
    for element in items(value):
        elt = mapping(element)
        if elt is None:
            continue
        nested = elt.get("coding")
        codings = items(nested) if nested is not None else [elt]
        for coding in codings:
            cod = mapping(coding)
            if cod is None:
                continue
            code = cod.get("code")
            if isinstance(code, str) and code:
                system = cod.get("system")
                found.append((system if isinstance(system, str) else "", code))
    return found


def codes_in(value: Any, system: str) -> frozenset[str]:
    """Return the codes of one system among Codings or CodeableConcepts."""
    return frozenset(code for sys, code in coding_pairs(value) if sys == system)


def security_labels(resource: Mapping[str, Any] | None) -> frozenset[Label]:
    """Return the (system, code) pairs of `meta.security`."""
    meta = mapping(resource.get("meta")) if resource is not None else None
    if meta is None or not meta.get("security"):
        return _NO_LABELS
    return frozenset(coding_pairs(meta.get("security")))


def person_ids(resource: Mapping[str, Any]) -> frozenset[str]:
    """Return the fødselsnumre and D-numre among a resource's identifiers."""
    found: set[str] = set()
    for element in items(resource.get("identifier")):
        ident = mapping(element)
        if ident is None or ident.get("system") not in PERSON_ID_SYSTEMS:
            continue
        value = text(ident.get("value"))
        if value is not None:
            found.add(value.strip())
    return frozenset(found)


def parse_bound(value: Any, *, end: bool) -> Bound:
    """Parse a FHIR date or dateTime; a partial date widens to its first or last day."""
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    if "T" in value:
        return datetime.fromisoformat(value)
    parts = value.split("-")
    if len(parts[0]) != 4 or len(parts) > 3:
        raise ValueError(f"not a FHIR date: {value!r}")
    year = int(parts[0])
    if len(parts) == 1:
        return date(year, 12, 31) if end else date(year, 1, 1)
    month = int(parts[1])
    if len(parts) == 2:
        last = calendar.monthrange(year, month)[1]
        return date(year, month, last) if end else date(year, month, 1)
    return date.fromisoformat(value)


def reached(now: datetime, start: Bound) -> bool:
    """Return whether `now` is at or after a period start.

    A date-only bound is compared with the calendar date of `now` in `now`'s own time zone,
    so pass `now` in the municipality's zone (Europe/Oslo).
    """
    if isinstance(start, datetime):
        return now >= (start if start.tzinfo else start.replace(tzinfo=now.tzinfo))
    return now.date() >= start


def not_passed(now: datetime, end: Bound) -> bool:
    """Return whether `now` is at or before a period end (a date-only end lasts all day)."""
    if isinstance(end, datetime):
        return now <= (end if end.tzinfo else end.replace(tzinfo=now.tzinfo))
    return now.date() <= end


def as_date(bound: Bound) -> date:
    """Return the calendar date of a bound."""
    return bound.date() if isinstance(bound, datetime) else bound


def birth_date_from_pid(pid: str) -> date | None:
    """Return the birth date in a fødselsnummer or D-nummer, or None if it has none.

    Handles D-nummer (day + 40), H-nummer and NAV's synthetic numbers (month + 40) and
    Skatteetaten's synthetic numbers (month + 80); the century follows from the individual
    number (digits 7-9) as Skatteetaten assigns them.
    """
    if len(pid) != 11 or not pid.isdigit():
        return None
    day, month, year2, individual = int(pid[0:2]), int(pid[2:4]), int(pid[4:6]), int(pid[6:9])
    if day > 40:
        day -= 40
    if month > 80:
        month -= 80
    elif month > 40:
        month -= 40
    if individual <= 499 or (individual >= 900 and year2 >= 40):
        century = 1900
    elif year2 <= 39:
        century = 2000
    elif individual <= 749 and year2 >= 54:
        century = 1800
    else:
        return None
    try:
        return date(century + year2, month, day)
    except ValueError:
        return None


def age_on(birth: date, day: date) -> int:
    """Return the age in whole years on a day."""
    years = day.year - birth.year
    if (day.month, day.day) < (birth.month, birth.day):
        years -= 1
    return years
