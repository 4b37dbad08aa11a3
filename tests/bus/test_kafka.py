"""What only the Kafka transport needs proven: idempotent producing, and failing in bounded time."""

from __future__ import annotations

import time

import pytest

from bus import PublishError, Record
from bus.kafka import KafkaBus
from tests.bus.conftest import FAST_GROUP_JOIN, drain_one
from tests.kafka_support import tansu_broker

pytestmark = pytest.mark.kafka


def test_the_broker_grants_an_idempotent_producer_id(kafka_bootstrap: str, name: str) -> None:
    with KafkaBus(kafka_bootstrap) as bus:
        bus.publish(f"{name}.idem", "p", b"x")
        # kafka-python internals (version pinned): a producer id means InitProducerId worked
        producer_id = bus._producer._transaction_manager.producer_id_and_epoch.producer_id
    assert producer_id >= 0


def test_the_non_idempotent_fallback_keeps_order(kafka_bootstrap: str, name: str) -> None:
    topic = f"{name}.plain"
    with KafkaBus(kafka_bootstrap, idempotent=False, **FAST_GROUP_JOIN) as bus:
        bus.ensure_topics([topic], partitions=2)
        bus.publish_many([Record(topic, f"p{i % 3}", f"{i}".encode()) for i in range(300)])
        with bus.consumer([topic], f"{name}.group") as consumer:
            received = drain_one(consumer, 300)
    for key in ("p0", "p1", "p2"):
        values = [int(m.value) for m in received if m.key == key]
        assert values == sorted(values)
        assert len(values) == 100


def test_publishing_after_the_broker_died_fails_in_bounded_time(name: str) -> None:
    topic = f"{name}.gone"
    with tansu_broker() as bootstrap:
        bus = KafkaBus(bootstrap, connect_timeout_s=1, delivery_timeout_s=2)
        bus.ensure_topics([topic], partitions=1)
        bus.publish(topic, "p", b"before")
    started = time.monotonic()
    with pytest.raises(PublishError, match=bootstrap) as raised:
        bus.publish_many([Record(topic, "p", b"after"), Record(topic, "q", b"after")])
    assert raised.value.failed == (0, 1)
    assert time.monotonic() - started < 10
    bus.close()
