"""NAV's connection to its rapid (Kafka topic) through kafka-python: publish, and consume.

The consumer is a member of NAV's own consumer group, reads from the earliest record when
the group is new, and commits a record's offset only after the handler applied it (at least
once; the store is idempotent). It runs in one daemon thread, the only user of the consumer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import kafka.errors as kafka_errors
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.structs import OffsetAndMetadata

from simulators.nav.rapids import encode
from simulators.nav.settings import Settings

__all__ = ["KafkaRapid", "RapidUnavailable"]

log = logging.getLogger(__name__)

Handler = Callable[[bytes | None], None]


class RapidUnavailable(Exception):
    """The broker cannot be reached or refused a request."""


class KafkaRapid:
    """A producer and a consumer-group member on NAV's topic."""

    def __init__(self, settings: Settings, handle: Handler) -> None:
        self._settings = settings
        self._handle = handle
        self._common: dict[str, Any] = {
            "bootstrap_servers": settings.servers,
            "client_id": settings.client_id,
        }
        self._producer: Any = None
        self._consumer: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nav-rapid", daemon=True)
        self._lock = threading.Lock()
        self._status: dict[str, Any] = {"tilordnet": [], "commits": 0, "sisteFeil": None}

    def start(self) -> None:
        """Create the topic if needed, connect, and start consuming."""
        timeout_ms = int(self._settings.connect_timeout_s * 1000)
        try:
            self._ensure_topic(timeout_ms)
            self._producer = KafkaProducer(
                **self._common,
                acks="all",
                linger_ms=0,
                max_block_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
            )
            s = self._settings
            self._consumer = KafkaConsumer(
                s.topic,
                **self._common,
                group_id=s.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=s.session_timeout_ms,
                heartbeat_interval_ms=s.heartbeat_interval_ms,
                max_poll_interval_ms=s.max_poll_interval_ms,
                fetch_max_wait_ms=s.fetch_max_wait_ms,
            )
        except kafka_errors.KafkaError as exc:
            self.stop()
            raise RapidUnavailable(f"Kafka at {self._settings.bootstrap}: {exc}") from exc
        self._thread.start()

    def publish(self, key: str, message: dict[str, Any]) -> None:
        """Publish a message and wait until the broker has it, or raise RapidUnavailable."""
        if self._producer is None:
            raise RapidUnavailable("the rapid is not started")
        try:
            future = self._producer.send(
                self._settings.topic, key=key.encode(), value=encode(message)
            )
            future.get(timeout=self._settings.connect_timeout_s + 5)
        except kafka_errors.KafkaError as exc:
            raise RapidUnavailable(f"publishing to {self._settings.topic}: {exc}") from exc

    def status(self) -> dict[str, Any]:
        """Return the topic, group, assigned partitions, commits and the last error."""
        with self._lock:
            status = dict(self._status)
        return {"topic": self._settings.topic, "gruppe": self._settings.group_id, **status}

    def stop(self) -> None:
        """Stop consuming, leave the group and close the producer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        elif self._consumer is not None:
            self._consumer.close(autocommit=False)
        if self._producer is not None:
            self._producer.close(timeout=5)
        self._producer = self._consumer = None

    def _ensure_topic(self, timeout_ms: int) -> None:
        admin = KafkaAdminClient(**self._common, request_timeout_ms=timeout_ms)
        try:
            topic = NewTopic(self._settings.topic, num_partitions=self._settings.partitions)
            admin.create_topics([topic], timeout_ms=timeout_ms, wait_for_metadata=True)
        except kafka_errors.TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def _run(self) -> None:
        consumer = self._consumer
        try:
            while not self._stop.is_set():
                try:
                    self._poll_once(consumer)
                except kafka_errors.KafkaError as exc:
                    log.warning("consuming %s failed: %s", self._settings.topic, exc)
                    self._note(sisteFeil=str(exc))
                    self._stop.wait(1.0)
        finally:
            consumer.close(autocommit=False)

    def _poll_once(self, consumer: Any) -> None:
        fetched = consumer.poll(timeout_ms=int(self._settings.poll_timeout_s * 1000))
        self._note(tilordnet=sorted(f"{tp.topic}-{tp.partition}" for tp in consumer.assignment()))
        offsets: dict[Any, OffsetAndMetadata] = {}
        failed = False
        for partition, records in fetched.items():
            for record in records:
                try:
                    self._handle(record.value)
                except Exception:
                    # the store could not keep it: read this record again next poll
                    log.exception("applying %s@%d failed", partition, record.offset)
                    consumer.seek(partition, record.offset)
                    failed = True
                    break
                offsets[partition] = OffsetAndMetadata(record.offset + 1, "", -1)
        if offsets:
            try:
                consumer.commit(offsets)
            except kafka_errors.CommitFailedError as exc:
                # the group rebalanced: the records come again and are recognised by @id
                log.warning("commit failed after a rebalance: %s", exc)
            else:
                with self._lock:
                    self._status["commits"] += 1
        if failed:
            self._stop.wait(1.0)

    def _note(self, **status: Any) -> None:
        with self._lock:
            self._status.update(status)
