"""What only the in-process bus needs proven: Kafka's partitioner, sharing a group, waking up."""

from __future__ import annotations

import random
import threading
import time

import pytest
from kafka.partitioner.default import murmur2 as kafka_murmur2

from bus import BusError, InMemoryBus, Record
from bus._internal.partitioner import murmur2, partition_for
from tests.bus.conftest import drain


def test_murmur2_matches_kafka_python() -> None:
    rng = random.Random(4711)
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(40))) for _ in range(500)]
    for data in [b"", b"a", "patient-æøå".encode(), *samples]:
        assert murmur2(data) == kafka_murmur2(data)


def test_a_key_lands_where_kafkas_default_partitioner_puts_it() -> None:
    # fixed points, so a change of hash is noticed even if kafka-python changed too
    assert [partition_for(f"patient-{i}".encode(), 6) for i in range(8)] == [4, 5, 4, 2, 3, 4, 5, 3]
    assert partition_for(b"patient-1", 1) == 0
    assert (kafka_murmur2(b"patient-1") & 0x7FFFFFFF) % 6 == partition_for(b"patient-1", 6)


def test_members_of_one_group_share_the_partitions() -> None:
    bus = InMemoryBus()
    bus.ensure_topics(["t"], partitions=6)
    bus.publish_many([Record("t", f"p{i}", f"{i}".encode()) for i in range(300)])
    one, two = bus.consumer(["t"], "g"), bus.consumer(["t"], "g")
    got_one, got_two = drain([one, two], [1, 1], timeout_s=2)
    got_one += one.poll(0.05, max_records=1000)
    got_two += two.poll(0.05, max_records=1000)

    assert {m.partition for m in got_one}.isdisjoint({m.partition for m in got_two})
    assert sorted(int(m.value) for m in got_one + got_two) == list(range(300))

    # the partitions of a member that leaves go to the one that stays, from the committed offset
    one.commit(got_one)
    two.close()
    again = one.poll(0.1, max_records=1000)
    assert sorted(m.value for m in again) == sorted(m.value for m in got_two)


def test_commit_after_losing_the_partition_is_refused() -> None:
    bus = InMemoryBus()
    bus.ensure_topics(["t"], partitions=2)
    bus.publish_many([Record("t", f"p{i}", b"x") for i in range(20)])
    first = bus.consumer(["t"], "g")
    polled = first.poll(0.1)
    assert {m.partition for m in polled} == {0, 1}
    second = bus.consumer(["t"], "g")  # takes partition 1 from the first member
    with pytest.raises(BusError, match=r"partitions \[\('t', 1\)\] were reassigned"):
        first.commit(polled)
    first.commit([m for m in polled if m.partition == 0])
    assert {m.partition for m in second.poll(0.1)} == {1}
    first.close()
    with pytest.raises(BusError, match="consumer is closed"):
        first.commit(polled)


def test_a_dropped_consumer_leaves_its_group() -> None:
    bus = InMemoryBus(default_partitions=1)
    bus.publish("t", "p", b"1")
    bus.consumer(["t"], "g")  # never closed, garbage at once
    survivor = bus.consumer(["t"], "g")
    assert [m.value for m in survivor.poll(0.5)] == [b"1"]


def test_poll_wakes_when_a_record_arrives() -> None:
    bus = InMemoryBus()
    consumer = bus.consumer(["t"], "g")
    timer = threading.Timer(0.1, bus.publish, args=("t", "p", b"late"))
    started = time.monotonic()
    timer.start()
    messages = consumer.poll(5)
    assert [m.value for m in messages] == [b"late"]
    assert time.monotonic() - started < 1


def test_a_topic_created_after_subscribing_is_read() -> None:
    bus = InMemoryBus()
    consumer = bus.consumer(["later"], "g")
    assert consumer.poll(0.05) == []
    bus.publish("later", "p", b"x")
    assert [m.value for m in consumer.poll(0.5)] == [b"x"]


def test_closing_the_bus_stops_publishing_and_waiting_polls() -> None:
    bus = InMemoryBus()
    consumer = bus.consumer(["t"], "g")
    threading.Timer(0.1, bus.close).start()
    with pytest.raises(BusError, match="closed"):
        consumer.poll(5)
    with pytest.raises(BusError, match="closed"):
        bus.publish("t", "p", b"x")


@pytest.mark.parametrize("partitions", [0, -3])
def test_partitions_must_be_positive(partitions: int) -> None:
    with pytest.raises(ValueError, match="partitions"):
        InMemoryBus().ensure_topics(["t"], partitions=partitions)
    with pytest.raises(ValueError, match="partitions"):
        InMemoryBus(default_partitions=partitions)
