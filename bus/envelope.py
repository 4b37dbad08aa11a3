"""The envelope every Stafett bus message carries: who, what, when, and the FHIR content.

Serialised as one JSON object (UTF-8), for example::

    {"schema_version": 1, "event_id": "6f1c...", "event_type": "resource.changed",
     "occurred_at": "2025-03-01T12:00:00.250000Z", "subject_key": "patient-id",
     "resource_type": "Task", "resource_id": "abc", "version_id": "3",
     "correlation_id": null, "sender": null, "payload": {...}}

Consumers are idempotent by `event_id`: the bus delivers at least once. Unknown fields are
ignored so that a newer producer with additive changes does not break older consumers; a
breaking change raises `schema_version`, which older consumers refuse.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from bus.errors import EnvelopeError

__all__ = ["SCHEMA_VERSION", "Envelope", "EventType"]

SCHEMA_VERSION = 1
"""The newest envelope schema this code reads and writes."""


class EventType:
    """Event types in use; `event_type` is an open string, these are the known ones."""

    RESOURCE_CHANGED = "resource.changed"
    RESOURCE_DELETED = "resource.deleted"
    DELIVERY = "delivery"
    CONSENT_REVOKED = "consent.revoked"
    CONSENT_GRANTED = "consent.granted"
    EVALUATION_DUE = "evaluation.due"
    CONSENT_EXPIRES_SOON = "consent.expires-soon"
    CONSENT_EXPIRED = "consent.expired"


_REQUIRED = ("event_id", "event_type", "occurred_at", "subject_key")
_OPTIONAL = ("resource_type", "resource_id", "version_id", "correlation_id", "sender")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One event on the bus; `subject_key` (the child's Patient id) is also the Kafka key."""

    event_id: str
    event_type: str
    occurred_at: datetime
    subject_key: str
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None
    correlation_id: str | None = None
    sender: str | None = None
    # a dict is unhashable: leave it out of the hash so envelopes stay usable in sets
    payload: dict[str, Any] | None = field(default=None, hash=False)
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        """Refuse a naive timestamp and keep every timestamp in UTC."""
        if self.occurred_at.utcoffset() is None:
            raise EnvelopeError("occurred_at: must be timezone-aware")
        if self.occurred_at.tzinfo is not UTC:
            object.__setattr__(self, "occurred_at", self.occurred_at.astimezone(UTC))

    @classmethod
    def new(
        cls,
        *,
        event_type: str,
        subject_key: str,
        resource_type: str | None = None,
        resource_id: str | None = None,
        version_id: str | None = None,
        correlation_id: str | None = None,
        sender: str | None = None,
        payload: dict[str, Any] | None = None,
        event_id: str | None = None,
        occurred_at: datetime | None = None,
    ) -> Envelope:
        """Create an envelope; by default with a fresh event id, occurring now.

        Pass `event_id` for events derived from another one (e.g. a delivery of a change), so
        that producing it again after a crash gives the same id and consumers can drop it.
        """
        return cls(
            event_id=event_id or str(uuid.uuid4()),
            event_type=event_type,
            occurred_at=occurred_at or datetime.now(UTC),
            subject_key=subject_key,
            resource_type=resource_type,
            resource_id=resource_id,
            version_id=version_id,
            correlation_id=correlation_id,
            sender=sender,
            payload=payload,
        )

    def to_json(self) -> bytes:
        """Serialise to UTF-8 JSON with `occurred_at` as ISO-8601 UTC ending in Z."""
        return orjson.dumps(
            {
                "schema_version": self.schema_version,
                "event_id": self.event_id,
                "event_type": self.event_type,
                "occurred_at": self.occurred_at,
                "subject_key": self.subject_key,
                "resource_type": self.resource_type,
                "resource_id": self.resource_id,
                "version_id": self.version_id,
                "correlation_id": self.correlation_id,
                "sender": self.sender,
                "payload": self.payload,
            },
            option=orjson.OPT_UTC_Z,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> Envelope:
        """Parse an envelope, raising EnvelopeError that names the field and the problem."""
        try:
            raw = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError(f"envelope: not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise EnvelopeError(f"envelope: must be a JSON object, got {_kind(raw)}")
        version = raw.get("schema_version", SCHEMA_VERSION)
        if type(version) is not int or version < 1:
            raise EnvelopeError(f"schema_version: must be a positive integer, got {version!r}")
        if version > SCHEMA_VERSION:
            raise EnvelopeError(
                f"schema_version: {version} is newer than the supported {SCHEMA_VERSION}"
            )
        for name in _REQUIRED:
            if name not in raw or raw[name] is None:
                raise EnvelopeError(f"{name}: missing")
            _check_text(name, raw[name], allow_none=False)
        for name in _OPTIONAL:
            _check_text(name, raw.get(name), allow_none=True)
        payload = raw.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise EnvelopeError(f"payload: must be a JSON object or null, got {_kind(payload)}")
        try:
            uuid.UUID(raw["event_id"])
        except ValueError:
            raise EnvelopeError(f"event_id: not a UUID: {raw['event_id']!r}") from None
        return cls(
            event_id=raw["event_id"],
            event_type=raw["event_type"],
            occurred_at=_parse_instant(raw["occurred_at"]),
            subject_key=raw["subject_key"],
            resource_type=raw.get("resource_type"),
            resource_id=raw.get("resource_id"),
            version_id=raw.get("version_id"),
            correlation_id=raw.get("correlation_id"),
            sender=raw.get("sender"),
            payload=payload,
            schema_version=version,
        )


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean"}.get(
        type(value), "null" if value is None else "number"
    )


def _check_text(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, str):
        raise EnvelopeError(f"{name}: must be a string, got {_kind(value)}")
    if not value:
        raise EnvelopeError(f"{name}: must not be empty")


def _parse_instant(text: str) -> datetime:
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise EnvelopeError(f"occurred_at: not an ISO-8601 date-time: {text!r}") from None
    if instant.utcoffset() is None:
        raise EnvelopeError(f"occurred_at: has no timezone: {text!r}")
    return instant.astimezone(UTC)
