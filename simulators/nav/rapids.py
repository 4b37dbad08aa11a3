"""Rapids & Rivers message helpers: building messages and the "river" filter that picks them.

A message is one JSON object with the system keys `@event_name`, `@id` (UUID), `@opprettet`
(local time without offset, milliseconds: `2026-09-07T09:12:00.123`) and here `@kilde` (the
system that sent it), beside the event's own fields. A consumer reads every message on the
rapid; each river accepts the messages it handles and ignores the rest, unknown fields included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from simulators.common.clock import OSLO

__all__ = [
    "SYSTEM_KEYS",
    "River",
    "build_message",
    "encode",
    "opprettet",
    "parse",
    "parse_opprettet",
]

SYSTEM_KEYS = ("@event_name", "@id", "@opprettet")


def opprettet(now: datetime | None = None) -> str:
    """Return `@opprettet` for a time (default now): Oslo local time, no offset, milliseconds."""
    moment = (now or datetime.now(OSLO)).astimezone(OSLO)
    return moment.replace(tzinfo=None).isoformat(timespec="milliseconds")


def parse_opprettet(value: object) -> datetime | None:
    """Return `@opprettet` as a naive local datetime, or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is None else None


def build_message(
    event_name: str,
    fields: Mapping[str, Any],
    *,
    kilde: str,
    now: datetime | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """Return a new message: the system keys, `@kilde` and the event's fields."""
    clashes = sorted(key for key in fields if key.startswith("@"))
    if clashes:
        raise ValueError(f"event fields must not start with '@': {clashes}")
    return {
        "@event_name": event_name,
        "@id": message_id or str(uuid.uuid4()),
        "@opprettet": opprettet(now),
        "@kilde": kilde,
        **fields,
    }


def encode(message: Mapping[str, Any]) -> bytes:
    """Return the message as UTF-8 JSON bytes."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def parse(value: bytes | None) -> dict[str, Any] | None:
    """Return the record value as a JSON object, or None if it is not one."""
    if not value:
        return None
    try:
        message = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return message if isinstance(message, dict) else None


@dataclass(frozen=True)
class River:
    """A filter that accepts the messages of one `@event_name` and ignores all others.

    An accepted message has every required key (not null), none of the rejected keys and
    none of the rejected values (e.g. `{"@kilde": "nav"}`). The system keys are always
    required: `@id` must be a UUID and `@opprettet` a local time without offset.
    """

    event_name: str
    required_keys: tuple[str, ...] = ()
    rejected_keys: tuple[str, ...] = ()
    rejected_values: Mapping[str, object] = field(default_factory=dict)

    def reason_to_ignore(self, message: Mapping[str, Any]) -> str | None:
        """Return why the river ignores the message, or None if it accepts it."""
        if message.get("@event_name") != self.event_name:
            return f"@event_name is {message.get('@event_name')!r}, not {self.event_name!r}"
        missing = [key for key in (*SYSTEM_KEYS, *self.required_keys) if message.get(key) is None]
        if missing:
            return f"missing keys: {missing}"
        present = [key for key in self.rejected_keys if key in message]
        if present:
            return f"rejected keys present: {present}"
        for key, value in self.rejected_values.items():
            if message.get(key) == value:
                return f"{key} is {value!r}"
        try:
            uuid.UUID(str(message["@id"]))
        except ValueError:
            return "@id is not a UUID"
        if parse_opprettet(message["@opprettet"]) is None:
            return "@opprettet is not a local ISO time"
        return None

    def accepts(self, message: Mapping[str, Any]) -> bool:
        """Return whether the river handles the message."""
        return self.reason_to_ignore(message) is None
