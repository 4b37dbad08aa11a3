"""The Kafka transport, through kafka-python; runs against Apache Kafka, Redpanda and Tansu.

Producing is durable: `acks="all"` and the idempotent producer (Tansu 0.6 grants producer
ids; the fallback for brokers that do not is one request in flight, so retries cannot
reorder a key's records). Consuming is at least once: offsets are committed only by
`commit()`, after the caller made the effect durable.

Connections are opened lazily (the producer at the first publish, the admin client at the
first `ensure_topics`, each consumer when created), so creating a `KafkaBus` never blocks;
an unreachable broker raises `BrokerUnavailable` after `connect_timeout_s`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from bus._internal.offsets import next_offsets
from bus.errors import BrokerUnavailable, BusError, PublishError
from bus.transport import DEFAULT_PARTITIONS, Message, Record

__all__ = ["KafkaBus", "KafkaConsumerAdapter"]

_log = logging.getLogger("stafett.bus")

_T = TypeVar("_T")


class KafkaBus:
    """A `Bus` on a Kafka-protocol broker. Thread-safe; each consumer belongs to one thread.

    The consumer-group timeouts default to Kafka's classic production values. A member's group
    join on Tansu takes about half of `session_timeout_ms` (5 s with these defaults, 23 s with
    kafka-python's own 45 s), so tests pass smaller ones (tests/bus/conftest.py).
    `fetch_max_wait_ms` bounds how long an idle partition delays a new record (end-to-end
    latency). `client_config` adds kafka-python settings (TLS, SASL) to every client.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        client_id: str = "stafett",
        connect_timeout_s: float = 10.0,
        delivery_timeout_s: float = 30.0,
        idempotent: bool = True,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        max_poll_interval_ms: int = 300_000,
        fetch_max_wait_ms: int = 100,
        replication_factor: int | None = None,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(bootstrap_servers, str):
            bootstrap_servers = bootstrap_servers.split(",")
        servers = [server.strip() for server in bootstrap_servers if server.strip()]
        if not servers:
            raise ValueError("KafkaBus needs at least one bootstrap server (host:port)")
        self.bootstrap = ",".join(servers)
        self._connect_ms = int(connect_timeout_s * 1000)
        self._delivery_s = delivery_timeout_s
        self._idempotent = idempotent
        self._replication_factor = replication_factor
        self._common: dict[str, Any] = {
            "bootstrap_servers": list(servers),
            "client_id": client_id,
            "bootstrap_timeout_ms": self._connect_ms,
            **(client_config or {}),
        }
        self._group_config: dict[str, Any] = {
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
            "fetch_max_wait_ms": fetch_max_wait_ms,
        }
        self._lock = threading.Lock()
        # the admin client is not thread-safe; its own lock keeps publishing unblocked
        self._admin_lock = threading.Lock()
        self._producer: Any = None
        self._admin: Any = None
        self._closed = False

    def publish(
        self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Publish one record and return after all in-sync replicas have it."""
        self.publish_many([Record(topic, key, value, tuple(headers))])

    def publish_many(self, records: Sequence[Record]) -> None:
        """Send every record, then wait until all are acknowledged or raise PublishError."""
        if not records:
            return
        producer = self._get_producer()
        futures: list[Any] = []
        failures: dict[int, str] = {}
        for index, record in enumerate(records):
            try:
                futures.append(
                    producer.send(
                        record.topic,
                        key=record.key.encode(),
                        value=record.value,
                        headers=list(record.headers),
                    )
                )
            except (kafka_errors.KafkaError, AssertionError, TypeError, ValueError) as exc:
                failures[index] = f"{type(exc).__name__}: {exc}"
                # send() blocks up to max_block_ms when metadata is missing: fail the rest now
                # rather than wait that long once per record
                failures.update(
                    (rest, "not sent after an earlier record failed")
                    for rest in range(index + 1, len(records))
                )
                break
        # the producer expires a record after delivery_timeout_ms; the margin covers the rest
        wait_s = self._delivery_s + 5
        for index, future in enumerate(futures):
            try:
                future.get(timeout=wait_s)
            except kafka_errors.KafkaError as exc:
                failures[index] = f"{type(exc).__name__}: {exc}"
        if failures:
            # An idempotent producer can stay in a fatal state after a broker restart (its
            # producer id forgotten): every later send then fails at once. Start afresh; the
            # caller resends the whole batch anyway.
            self._discard_producer(producer)
            first = min(failures)
            raise PublishError(
                f"{len(failures)} of {len(records)} records not acknowledged by the Kafka "
                f"broker at {self.bootstrap}; first, record {first} to topic "
                f"{records[first].topic!r}: {failures[first]}",
                failed=sorted(failures),
            )

    def ensure_topics(self, names: Sequence[str], partitions: int = DEFAULT_PARTITIONS) -> None:
        """Create the topics that do not exist yet; existing topics keep their partitions."""
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        if not names:
            return
        # -1 asks for the broker's default.replication.factor (needs Kafka 2.4+)
        replicas = -1 if self._replication_factor is None else self._replication_factor
        spec = {
            name: {"num_partitions": partitions, "replication_factor": replicas} for name in names
        }
        with self._admin_lock:
            admin = self._get_admin()
            try:
                response = admin.create_topics(spec, raise_errors=False)
                created: list[str] = []
                for topic in response["topics"]:
                    error = kafka_errors.for_code(topic["error_code"])
                    if error is kafka_errors.NoError:
                        created.append(topic["name"])
                    elif error is not kafka_errors.TopicAlreadyExistsError:
                        raise BusError(
                            f"cannot create topic {topic['name']!r}: {error.__name__} "
                            f"({topic.get('error_message') or 'no message'})"
                        )
                if created:
                    # the create response may come before every partition has a leader
                    admin.wait_for_topics(created, timeout_ms=self._connect_ms)
            except kafka_errors.KafkaError as exc:
                raise _translate(exc, "creating topics", self.bootstrap) from exc

    def consumer(
        self, topics: Sequence[str], group: str, *, client_id: str | None = None
    ) -> KafkaConsumerAdapter:
        """Join consumer group `group` reading `topics`, from the earliest record if new."""
        if not topics:
            raise ValueError("consumer needs at least one topic")
        if not group:
            raise ValueError("consumer group must not be empty")
        config = {
            **self._common,
            **self._group_config,
            "group_id": group,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
        }
        if client_id is not None:
            config["client_id"] = client_id
        consumer = self._connect("consumer", lambda: KafkaConsumer(*topics, **config))
        return KafkaConsumerAdapter(consumer, group=group, bootstrap=self.bootstrap)

    def close(self) -> None:
        """Flush pending records and close the producer and admin clients."""
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
            admin, self._admin = self._admin, None
        if producer is not None:
            producer.close(timeout=self._delivery_s)
        if admin is not None:
            admin.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _get_producer(self) -> Any:
        with self._lock:
            if self._closed:
                raise BusError("the Kafka bus is closed")
            if self._producer is None:
                config: dict[str, Any] = {
                    **self._common,
                    "acks": "all",
                    "enable_idempotence": self._idempotent,
                    "delivery_timeout_ms": int(self._delivery_s * 1000),
                    # the producer requires delivery_timeout >= linger + request timeout
                    "request_timeout_ms": min(30_000, int(self._delivery_s * 1000)),
                    # bounds the wait for metadata of a topic in send()
                    "max_block_ms": self._connect_ms,
                    "linger_ms": 0,
                }
                if not self._idempotent:
                    # without sequence numbers a retried batch could overtake the next one
                    config["max_in_flight_requests_per_connection"] = 1
                self._producer = self._connect("producer", lambda: KafkaProducer(**config))
            return self._producer

    def _discard_producer(self, producer: Any) -> None:
        with self._lock:
            if self._producer is producer:
                self._producer = None
        try:
            producer.close(timeout=0)
        except Exception:
            _log.debug("closing a failed producer raised", exc_info=True)

    def _get_admin(self) -> Any:
        if self._closed:
            raise BusError("the Kafka bus is closed")
        if self._admin is None:
            self._admin = self._connect("admin client", lambda: KafkaAdminClient(**self._common))
        return self._admin

    def _connect(self, what: str, factory: Callable[[], _T]) -> _T:
        try:
            return factory()
        except kafka_errors.KafkaError as exc:
            raise _translate(exc, f"starting the {what}", self.bootstrap) from exc


class KafkaConsumerAdapter:
    """A `Consumer` over one kafka-python `KafkaConsumer`; use from one thread only."""

    def __init__(self, consumer: Any, *, group: str, bootstrap: str) -> None:
        self._consumer = consumer
        self._group = group
        self._bootstrap = bootstrap

    def poll(self, timeout_s: float, max_records: int = 500) -> list[Message]:
        """Wait up to `timeout_s` for records; the first polls also join the group."""
        if max_records < 1:
            raise ValueError(f"max_records must be at least 1, got {max_records}")
        try:
            fetched = self._consumer.poll(
                timeout_ms=max(0, int(timeout_s * 1000)), max_records=max_records
            )
        except kafka_errors.KafkaError as exc:
            raise _translate(exc, f"polling group {self._group!r}", self._bootstrap) from exc
        return [_message(record) for records in fetched.values() for record in records]

    def commit(self, messages: Sequence[Message]) -> None:
        """Commit, per partition, the offset after the highest of `messages`."""
        offsets = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in next_offsets(messages).items()
        }
        if not offsets:
            return
        try:
            self._consumer.commit(offsets)
        except kafka_errors.CommitFailedError as exc:
            raise BusError(
                f"cannot commit for group {self._group!r}: the group rebalanced; the records "
                f"will be delivered again ({exc})"
            ) from exc
        except kafka_errors.KafkaError as exc:
            raise _translate(exc, f"committing group {self._group!r}", self._bootstrap) from exc

    def close(self) -> None:
        """Leave the group without committing."""
        self._consumer.close(autocommit=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _message(record: Any) -> Message:
    key: bytes | None = record.key
    return Message(
        record.topic,
        record.partition,
        record.offset,
        # keys are UTF-8 from Stafett; a foreign producer's odd bytes must not stop the consumer
        None if key is None else key.decode(errors="replace"),
        record.value or b"",
        tuple((name, value or b"") for name, value in record.headers or ()),
    )


def _translate(exc: Exception, doing: str, bootstrap: str) -> BusError:
    """Turn a kafka-python error into this package's error, naming the broker."""
    if isinstance(exc, kafka_errors.KafkaTimeoutError | kafka_errors.KafkaConnectionError):
        return BrokerUnavailable(f"Kafka broker at {bootstrap} not reachable while {doing}: {exc}")
    return BusError(f"Kafka error while {doing} (broker {bootstrap}): {exc}")
