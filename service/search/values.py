"""FHIR value semantics shared by indexing and searching: dates as ranges, normalised strings."""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, timezone

__all__ = [
    "MAX_MICROS",
    "MIN_MICROS",
    "DateRange",
    "InvalidDate",
    "micros_to_instant",
    "normalise_string",
    "now_micros",
    "parse_date_range",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_MICROS = -62135596800000000  # 0001-01-01T00:00:00Z
MAX_MICROS = 253402300799999999  # 9999-12-31T23:59:59.999999Z

DateRange = tuple[int, int]
"""An inclusive range of instants in microseconds since the epoch (UTC)."""

_DATE_RE = re.compile(
    r"^(?P<year>\d{4})(?:-(?P<month>\d{2})(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


class InvalidDate(ValueError):
    """A string that is not a FHIR date, dateTime or instant."""


def _to_micros(moment: datetime) -> int:
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_date_range(value: str) -> DateRange:
    """Return the inclusive range of instants a FHIR date/dateTime/instant denotes.

    A value without a time zone is read as UTC. The precision decides the width: "2026" covers
    the whole year, "2026-11-01T10:00:00Z" one second.
    """
    match = _DATE_RE.match(value)
    if match is None:
        raise InvalidDate(f"'{value}' is not a valid FHIR date, dateTime or instant")
    parts = match.groupdict()
    try:
        year = int(parts["year"])
        if parts["month"] is None:
            start = datetime(year, 1, 1, tzinfo=UTC)
            end = datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999 else None
        elif parts["day"] is None:
            month = int(parts["month"])
            start = datetime(year, month, 1, tzinfo=UTC)
            end = (
                datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=UTC)
                if not (year == 9999 and month == 12)
                else None
            )
        elif parts["hour"] is None:
            start = datetime(year, int(parts["month"]), int(parts["day"]), tzinfo=UTC)
            end = start + timedelta(days=1) if start.year < 9999 or start.month < 12 else None
        else:
            tz = UTC
            if parts["tz"] and parts["tz"] != "Z":
                sign = 1 if parts["tz"][0] == "+" else -1
                hours, minutes = int(parts["tz"][1:3]), int(parts["tz"][4:6])

                tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
            local = datetime(
                year,
                int(parts["month"]),
                int(parts["day"]),
                int(parts["hour"]),
                int(parts["minute"]),
                int(parts["second"] or 0),
                tzinfo=tz,
            )
            start = local.astimezone(UTC)
            if parts["fraction"]:
                digits = parts["fraction"][:6]
                start += timedelta(microseconds=int(digits.ljust(6, "0")))
                width = timedelta(microseconds=10 ** (6 - len(digits)))
            elif parts["second"] is not None:
                width = timedelta(seconds=1)
            else:
                width = timedelta(minutes=1)
            end = start + width
    except (ValueError, OverflowError) as exc:
        raise InvalidDate(f"'{value}' is not a valid FHIR date, dateTime or instant") from exc
    low = _to_micros(start)
    high = _to_micros(end) - 1 if end is not None else MAX_MICROS
    return low, high


def micros_to_instant(micros: int) -> str:
    """Format microseconds since the epoch as a FHIR instant with millisecond precision."""
    moment = _EPOCH + timedelta(microseconds=micros)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_micros() -> int:
    """Return the current time in microseconds since the epoch."""
    return _to_micros(datetime.now(UTC))


# Letters that Unicode does not decompose into base + accent, folded as Nordic users expect
# ("Odegard" finds "Ødegård").
_FOLD = str.maketrans({"ø": "o", "æ": "ae", "đ": "d", "ð": "d", "ł": "l", "þ": "th", "œ": "oe"})


def normalise_string(value: str) -> str:
    """Casefold and strip accents, the form FHIR string search compares by default."""
    decomposed = unicodedata.normalize("NFKD", value.casefold().translate(_FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
