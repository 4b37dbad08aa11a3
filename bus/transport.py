"""The bus contract: `Bus` and `Consumer` protocols, proven for every transport by one suite.

Delivery is at least once. A record is published when the broker acknowledged it (all
in-sync replicas); a consumer commits after the record's effect is durable, so after a crash
or rebalance the uncommitted records come again. Every consumer must therefore be idempotent
by `Envelope.event_id`. Within a topic, records with the same key (the child's Patient id)
keep their order; there is no order across keys.

Transports: `bus.memory.InMemoryBus` (in-process, the embedded default and unit tests) and
`bus.kafka.KafkaBus` (Apache Kafka, Redpanda, Tansu; through kafka-python).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

from bus.envelope import Envelope

__all__ = ["DEFAULT_PARTITIONS", "Bus", "Consumer", "Headers", "Message", "Record"]

Headers = tuple[tuple[str, bytes], ...]

DEFAULT_PARTITIONS = 6
"""Partitions of a topic created by `ensure_topics`: the most consumers a group can spread over."""


@dataclass(frozen=True, slots=True)
class Record:
    """A record to publish: the key decides the partition, so one key's records stay ordered."""

    topic: str
    key: str
    value: bytes
    headers: Headers = ()

    @classmethod
    def of(
        cls, topic: str, envelope: Envelope, headers: Sequence[tuple[str, bytes]] = ()
    ) -> Record:
        """Wrap an envelope, keyed by its subject so one child's events stay in order."""
        return cls(topic, envelope.subject_key, envelope.to_json(), tuple(headers))


@dataclass(frozen=True, slots=True)
class Message:
    """A consumed record with its place in the log (topic, partition, offset)."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    headers: Headers = ()

    def envelope(self) -> Envelope:
        """Parse the value as an envelope; raise EnvelopeError if it is not one."""
        return Envelope.from_json(self.value)

    def header(self, name: str) -> bytes | None:
        """Return the first header called `name`, or None."""
        return next((value for key, value in self.headers if key == name), None)


class Consumer(Protocol):
    """A member of a consumer group reading some topics; use from one thread only.

    The group shares the partitions among its members; each group gets every record. A new
    member starts at the group's committed offset, or at the earliest record if none.
    """

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        """Wait up to `timeout_s` for records and return at most `max_records` of them."""
        ...

    def commit(self, messages: Sequence[Message]) -> None:
        """Commit, per partition, the offset after the highest of `messages`.

        Call only after the messages' effects are durable. Raises BusError if the group
        rebalanced meanwhile; the records then come again to the partition's new owner.
        """
        ...

    def close(self) -> None:
        """Leave the group without committing."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class Bus(Protocol):
    """A message bus: durable publishing and consumer groups. Thread-safe."""

    def publish(
        self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Publish one record and return after the broker acknowledged it.

        Raises PublishError if it was not acknowledged, BrokerUnavailable if the broker
        cannot be reached.
        """
        ...

    def publish_many(self, records: Sequence[Record]) -> None:
        """Publish a batch and return after every record was acknowledged.

        Raises PublishError (with the failed indexes) if any was not: then mark none of them
        sent. Records with the same topic and key keep their order.
        """
        ...

    def ensure_topics(self, names: Sequence[str], partitions: int = DEFAULT_PARTITIONS) -> None:
        """Create the topics that do not exist yet; existing topics keep their partitions."""
        ...

    def consumer(self, topics: Sequence[str], group: str) -> Consumer:
        """Join consumer group `group` reading `topics`."""
        ...

    def close(self) -> None:
        """Flush and release the bus's own connections; close its consumers first."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
