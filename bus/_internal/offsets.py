"""Offsets to commit for a set of consumed messages."""

from __future__ import annotations

from collections.abc import Sequence

from bus.transport import Message

__all__ = ["next_offsets"]


def next_offsets(messages: Sequence[Message]) -> dict[tuple[str, int], int]:
    """Return, per (topic, partition), the offset after the highest of `messages`."""
    offsets: dict[tuple[str, int], int] = {}
    for message in messages:
        place = (message.topic, message.partition)
        if message.offset >= offsets.get(place, 0):
            offsets[place] = message.offset + 1
    return offsets
