"""What a connector implements: a source task that polls, or a sink task that pushes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from bus import Envelope

__all__ = [
    "DeadRecord",
    "PermanentError",
    "SinkTask",
    "SourceBatch",
    "SourceRecord",
    "SourceTask",
]


class PermanentError(Exception):
    """A record that can never succeed (bad data, refused): dead-letter it, do not retry."""


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One change read from a vendor system, ready to publish to stafett.inbound.

    `event_id` must be derived from the record and its version in the vendor system, so a
    re-read of the same version (after a crash before the checkpoint) is recognised by Stafett.
    """

    event_id: str
    subject: str  # the child's fødselsnummer or Stafett Patient id: the Kafka key
    payload: Mapping[str, Any]  # a FHIR resource or transaction Bundle
    record_id: str  # the vendor record id, for status and dead letters
    correlation_id: str | None = None


@dataclass(frozen=True, slots=True)
class DeadRecord:
    """A vendor record that cannot be mapped: it goes to the dead-letter topic with the reason."""

    record_id: str
    reason: str
    raw: Mapping[str, Any]
    subject: str = ""


@dataclass(frozen=True, slots=True)
class SourceBatch:
    """Records read by one poll, and the checkpoint to store once they are published."""

    records: list[SourceRecord] = field(default_factory=list)
    dead: list[DeadRecord] = field(default_factory=list)
    checkpoint: Mapping[str, Any] | None = None
    more: bool = False  # another batch is waiting: poll again without sleeping


class SourceTask(Protocol):
    """Reads changes from a vendor system after a checkpoint."""

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        """Return the next changes after `checkpoint` (None: from the beginning)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class SinkTask(Protocol):
    """Writes Stafett's deliveries and notices into a vendor system."""

    def put(self, envelope: Envelope) -> None:
        """Apply one delivery, deletion or notice; idempotent (it may come twice).

        Raise PermanentError for data the vendor system will never take; any other
        exception is retried with backoff.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...
