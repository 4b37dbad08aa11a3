"""An in-process bus: the embedded default for local runs and the fake for unit tests.

It behaves like a single Kafka broker so code written against it runs on Kafka unchanged:
topics have partitions, a key goes to the partition Kafka's default partitioner (murmur2)
would choose, consumer groups keep committed offsets and share partitions among their
members (round robin per topic, recomputed when a member joins or leaves), and a new member
starts at the committed offset. Everything lives in memory until the process ends; records
are never deleted. Publishing to a topic that does not exist creates it, as Kafka's
auto-create does.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from bus._internal.offsets import next_offsets
from bus._internal.partitioner import partition_for
from bus.errors import BusError, PublishError
from bus.transport import DEFAULT_PARTITIONS, Message, Record

__all__ = ["InMemoryBus", "InMemoryConsumer"]

_Place = tuple[str, int]


@dataclass
class _Group:
    committed: dict[_Place, int] = field(default_factory=dict)
    # member id -> subscribed topics, in joining order (dicts keep insertion order)
    members: dict[int, frozenset[str]] = field(default_factory=dict)
    generation: int = 0


class InMemoryBus:
    """A thread-safe, in-process bus with Kafka's partitioning and consumer-group semantics."""

    def __init__(self, *, default_partitions: int = DEFAULT_PARTITIONS) -> None:
        if default_partitions < 1:
            raise ValueError(f"default_partitions must be at least 1, got {default_partitions}")
        self._default_partitions = default_partitions
        # one condition guards all state; pollers wait on it for new records or rebalances
        self._changed = threading.Condition()
        self._topics: dict[str, list[list[Message]]] = {}
        self._groups: dict[str, _Group] = {}
        self._member_ids = itertools.count(1)
        self._topology = 0
        self._closed = False

    def publish(
        self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Append one record; it is visible to consumers when this returns."""
        self.publish_many([Record(topic, key, value, tuple(headers))])

    def publish_many(self, records: Sequence[Record]) -> None:
        """Append a batch of records atomically."""
        for index, record in enumerate(records):
            if not record.topic:
                raise PublishError(f"record {index}: topic must not be empty", failed=[index])
            if not isinstance(record.value, bytes):
                raise PublishError(f"record {index}: value must be bytes", failed=[index])
        with self._changed:
            self._check_open()
            for record in records:
                partitions = self._topic(record.topic, self._default_partitions)
                number = partition_for(record.key.encode(), len(partitions))
                log = partitions[number]
                log.append(
                    Message(
                        record.topic,
                        number,
                        len(log),
                        record.key,
                        record.value,
                        tuple(record.headers),
                    )
                )
            self._changed.notify_all()

    def ensure_topics(self, names: Sequence[str], partitions: int = DEFAULT_PARTITIONS) -> None:
        """Create the topics that do not exist yet."""
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        with self._changed:
            self._check_open()
            for name in names:
                self._topic(name, partitions)

    def consumer(self, topics: Sequence[str], group: str) -> InMemoryConsumer:
        """Join `group` reading `topics`."""
        if not topics:
            raise ValueError("consumer needs at least one topic")
        if not group:
            raise ValueError("consumer group must not be empty")
        with self._changed:
            self._check_open()
            member = next(self._member_ids)
            state = self._groups.setdefault(group, _Group())
            state.members[member] = frozenset(topics)
            state.generation += 1
            self._changed.notify_all()
        return InMemoryConsumer(self, group, member)

    def close(self) -> None:
        """Refuse further use; waiting polls wake up and raise BusError."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- used by InMemoryConsumer, always with self._changed held ---

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the in-memory bus is closed")

    def _topic(self, name: str, partitions: int) -> list[list[Message]]:
        existing = self._topics.get(name)
        if existing is not None:
            return existing
        created: list[list[Message]] = [[] for _ in range(partitions)]
        self._topics[name] = created
        # members subscribed to the new topic get its partitions at their next poll
        self._topology += 1
        return created

    def _assignment(self, group: str, member: int) -> frozenset[_Place]:
        state = self._groups[group]
        places: set[_Place] = set()
        for topic in state.members.get(member, frozenset()):
            partitions = self._topics.get(topic)
            if partitions is None:
                continue
            readers = [m for m, topics in state.members.items() if topic in topics]
            mine = readers.index(member)
            places.update((topic, p) for p in range(mine, len(partitions), len(readers)))
        return frozenset(places)

    def _leave(self, group: str, member: int) -> None:
        with self._changed:
            state = self._groups[group]
            if state.members.pop(member, None) is not None:
                state.generation += 1
                self._changed.notify_all()


class InMemoryConsumer:
    """A member of an in-memory consumer group; use from one thread only."""

    def __init__(self, bus: InMemoryBus, group: str, member: int) -> None:
        self._bus = bus
        self._group = group
        self._member = member
        self._positions: dict[_Place, int] = {}
        self._seen: tuple[int, int] = (-1, -1)
        self._rotation = 0
        self._closed = False
        # a consumer dropped without close() leaves its group, as a Kafka session would expire
        self._leave = weakref.finalize(self, bus._leave, group, member)

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        """Wait up to `timeout_s` for records of this member's partitions."""
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        deadline = time.monotonic() + timeout_s
        bus = self._bus
        with bus._changed:
            while True:
                self._check_open()
                self._rebalance()
                batch = self._take(max_records)
                remaining = deadline - time.monotonic()
                if batch or remaining <= 0:
                    return batch
                bus._changed.wait(remaining)

    def commit(self, messages: Sequence[Message]) -> None:
        """Commit, per partition, the offset after the highest of `messages`."""
        offsets = next_offsets(messages)
        bus = self._bus
        with bus._changed:
            self._check_open()
            owned = bus._assignment(self._group, self._member)
            lost = sorted(place for place in offsets if place not in owned)
            if lost:
                raise BusError(
                    f"cannot commit for group {self._group!r}: partitions {lost} were "
                    "reassigned; their records will be delivered again"
                )
            bus._groups[self._group].committed.update(offsets)

    def close(self) -> None:
        """Leave the group without committing."""
        self._closed = True
        self._leave()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise BusError("the consumer is closed")
        self._bus._check_open()

    def _rebalance(self) -> None:
        bus = self._bus
        seen = (bus._groups[self._group].generation, bus._topology)
        if seen == self._seen:
            return
        self._seen = seen
        owned = bus._assignment(self._group, self._member)
        committed = bus._groups[self._group].committed
        # partitions kept through a rebalance keep their position, new ones start committed
        self._positions = {
            place: self._positions.get(place, committed.get(place, 0)) for place in sorted(owned)
        }

    def _take(self, budget: int) -> list[Message]:
        places = list(self._positions)
        if not places:
            return []
        # start at a different partition each poll so a busy one cannot starve the others
        self._rotation = (self._rotation + 1) % len(places)
        batch: list[Message] = []
        for place in places[self._rotation :] + places[: self._rotation]:
            log = self._bus._topics[place[0]][place[1]]
            start = self._positions[place]
            taken = log[start : start + budget - len(batch)]
            if taken:
                batch.extend(taken)
                self._positions[place] = start + len(taken)
                if len(batch) >= budget:
                    break
        return batch
