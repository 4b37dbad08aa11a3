"""Envelopes of change events: what the outbox says about one committed write (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bus import Envelope, EventType

__all__ = ["change_event"]


def change_event(
    *,
    resource_type: str,
    resource_id: str,
    version_id: int,
    subject: str,
    resource: Mapping[str, Any] | None,
    deleted: bool,
    occurred_at: datetime,
    correlation_id: str | None = None,
    sender: str | None = None,
) -> Envelope:
    """Return the change event of one write; a deletion carries the last live version.

    The last version lets the consent router decide who may learn of the deletion by the
    same rules as the resource itself; deliveries of deletions carry no content.
    """
    return Envelope.new(
        event_type=EventType.RESOURCE_DELETED if deleted else EventType.RESOURCE_CHANGED,
        subject_key=subject,
        resource_type=resource_type,
        resource_id=resource_id,
        version_id=str(version_id),
        correlation_id=correlation_id,
        sender=sender,
        payload=dict(resource) if resource is not None else None,
        occurred_at=occurred_at,
    )
