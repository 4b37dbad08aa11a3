"""Search parameters the station supports (R4 §3.1.1.4 https://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from simulators.common.clock import OSLO
from simulators.health_station.fhir import BadRequest

__all__ = ["PAGE_DEFAULT", "PAGE_MAX", "Query", "parse_query"]

PAGE_DEFAULT = 50
PAGE_MAX = 200
Match = Callable[[dict[str, Any]], bool]
# result-shaping and formatting parameters that never filter
_CONTROL = {"_sort", "_count", "_format", "_pretty", "_summary", "_elements", "_total"}
# where each reference parameter points, per resource type
_REFERENCES: dict[str, dict[str, str]] = {
    "CarePlan": {"patient": "subject", "subject": "subject"},
    "Task": {"patient": "for", "subject": "for"},
    "Consent": {"patient": "patient"},
}
_CODINGS: dict[str, dict[str, str]] = {
    "CarePlan": {"category": "category"},
    "Task": {"code": "code"},
}
_WITH_STATUS = ("CarePlan", "Task", "Consent")


@dataclass(frozen=True)
class Query:
    """A parsed search: filters (ANDed), order and page size."""

    matches: tuple[Match, ...]
    sort: str
    count: int

    def __call__(self, resource: dict[str, Any]) -> bool:
        """Return whether the resource matches every filter."""
        return all(match(resource) for match in self.matches)


def _tokens(value: str) -> list[tuple[str | None, str | None]]:
    wanted: list[tuple[str | None, str | None]] = []
    for alt in value.split(","):
        if "|" in alt:
            system, code = alt.split("|", 1)
            wanted.append((system, code or None))  # "system|" = any code; "|code" = no system
        else:
            wanted.append((None, alt))
    return wanted


def _token_match(pairs: list[tuple[str | None, str | None]], value: str) -> bool:
    for system, code in _tokens(value):
        for have_system, have_code in pairs:
            if system is not None and (have_system or "") != system:
                continue
            if code is None or have_code == code:
                return True
    return False


def _codings(concepts: Any) -> Iterator[tuple[str | None, str | None]]:
    for concept in concepts if isinstance(concepts, list) else [concepts or {}]:
        for coding in concept.get("coding") or []:
            yield coding.get("system"), coding.get("code")


def _reference_target(value: str, default_type: str | None) -> tuple[str | None, str]:
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2:
        return parts[-2], parts[-1]
    return default_type, parts[-1]


def _instant_range(raw: str) -> tuple[datetime, datetime]:
    text = raw.strip().replace(" ", "+")  # an unencoded "+" arrives as a space
    try:
        if len(text) in (4, 7, 10):  # YYYY, YYYY-MM, YYYY-MM-DD: a local-time interval
            year, month, day = (int(p) for p in [*text.split("-"), "1", "1"][:3])
            start = datetime(year, month, day, tzinfo=OSLO)
            if len(text) == 10:
                end = start + timedelta(days=1)
            elif len(text) == 7:
                end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=OSLO)
            else:
                end = datetime(year + 1, 1, 1, tzinfo=OSLO)
            return start, end
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"_lastUpdated: cannot read {raw!r} as a date or instant") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=OSLO)
    return instant, instant


def _last_updated(value: str) -> Match:
    prefix, rest = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    start, end = _instant_range(rest)
    point = start == end

    def updated(resource: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(resource["meta"]["lastUpdated"])

    tests: dict[str, Match] = {
        "eq": lambda r: updated(r) == start if point else start <= updated(r) < end,
        "gt": lambda r: updated(r) > start if point else updated(r) >= end,
        "ge": lambda r: updated(r) >= start,
        "lt": lambda r: updated(r) < start,
        "le": lambda r: updated(r) <= start if point else updated(r) < end,
    }
    if prefix not in tests:
        raise BadRequest(f"_lastUpdated: prefix {prefix!r} is not supported (eq, gt, ge, lt, le)")
    return tests[prefix]


def _in_field(element: str, value: str) -> Match:
    wanted = set(value.split(","))
    return lambda r: r.get(element) in wanted


def _identifier(value: str) -> Match:
    def match(r: dict[str, Any]) -> bool:
        pairs = [(i.get("system"), i.get("value")) for i in r.get("identifier") or []]
        return _token_match(pairs, value)

    return match


def _coded(element: str, value: str) -> Match:
    return lambda r: _token_match(list(_codings(r.get(element))), value)


def _refers(element: str, value: str, *, patient: bool) -> Match:
    wanted = [_reference_target(v, "Patient" if patient else None) for v in value.split(",")]

    def match(r: dict[str, Any]) -> bool:
        target = (r.get(element) or {}).get("reference")
        if not target:
            return False
        have_type, have_id = _reference_target(target, None)
        return any(have_id == i and t in (None, have_type) for t, i in wanted)

    return match


def parse_query(resource_type: str, params: list[tuple[str, str]], *, strict: bool) -> Query:
    """Turn query parameters into a Query; unknown ones are ignored unless `strict`."""
    matches: list[Match] = []
    sort, count = "_id", PAGE_DEFAULT
    references = _REFERENCES.get(resource_type, {})
    codings = _CODINGS.get(resource_type, {})
    for name, value in params:
        if name == "_sort":
            if value not in ("_id", "_lastUpdated", "-_lastUpdated"):
                raise BadRequest("_sort: supported are _id, _lastUpdated and -_lastUpdated")
            sort = value
        elif name == "_count":
            if not value.isdigit():
                raise BadRequest("_count must be a non-negative integer")
            count = min(int(value), PAGE_MAX)
        elif name in _CONTROL:
            continue
        elif name == "_id":
            matches.append(_in_field("id", value))
        elif name == "_lastUpdated":
            matches.append(_last_updated(value))
        elif name == "identifier":
            matches.append(_identifier(value))
        elif name == "status" and resource_type in _WITH_STATUS:
            matches.append(_in_field("status", value))
        elif name in codings:
            matches.append(_coded(codings[name], value))
        elif name in references:
            matches.append(_refers(references[name], value, patient=name == "patient"))
        elif strict:
            raise BadRequest(f"Unknown search parameter {name!r} for {resource_type}")
    return Query(tuple(matches), sort, count)
