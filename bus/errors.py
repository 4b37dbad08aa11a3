"""Errors of the bus package: one hierarchy, so callers can catch `BusError` for all of them."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["BrokerUnavailable", "BusError", "EnvelopeError", "PublishError"]


class BusError(Exception):
    """Base class of every error raised by the bus package."""


class EnvelopeError(BusError, ValueError):
    """A message envelope is malformed; the message names the field and the problem."""


class PublishError(BusError):
    """The broker did not acknowledge one or more records; none of them may be marked sent.

    `failed` holds the indexes (in the published sequence) of the records that failed; the
    others were acknowledged, so a retry of the whole batch delivers them twice (consumers
    are idempotent by event id).
    """

    def __init__(self, message: str, *, failed: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.failed: tuple[int, ...] = tuple(failed)


class BrokerUnavailable(BusError):
    """The broker could not be reached within the configured time."""
