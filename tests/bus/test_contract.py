"""The bus contract, proven against every transport (in-process and Kafka on Tansu)."""

from __future__ import annotations

from collections import defaultdict

import pytest

from bus import Bus, Envelope, EventType, Record
from tests.bus.conftest import drain, drain_one


def test_round_trip_keeps_key_headers_and_envelope(bus: Bus, name: str) -> None:
    topic = f"{name}.roundtrip"
    bus.ensure_topics([topic], partitions=3)
    envelope = Envelope.new(
        event_type=EventType.RESOURCE_CHANGED,
        subject_key="patient-1",
        resource_type="Task",
        resource_id="task-1",
        version_id="2",
        correlation_id="corr-1",
        sender="974760673",
        payload={"resourceType": "Task", "id": "task-1", "status": "requested"},
    )
    headers = [("event_type", b"resource.changed"), ("trace", b"\x00\xff")]
    bus.publish(topic, envelope.subject_key, envelope.to_json(), headers)

    with bus.consumer([topic], f"{name}.group") as consumer:
        [message] = drain_one(consumer, 1)
        assert consumer.poll(0.3) == []

    assert message.topic == topic
    assert 0 <= message.partition < 3
    assert message.offset == 0
    assert message.key == "patient-1"
    assert message.headers == tuple(headers)
    assert message.header("trace") == b"\x00\xff"
    assert message.header("missing") is None
    assert message.envelope() == envelope


def test_records_of_one_key_stay_in_order_across_partitions(bus: Bus, name: str) -> None:
    topic = f"{name}.order"
    bus.ensure_topics([topic], partitions=4)
    keys = [f"patient-{k}" for k in range(16)]
    sent = [(key, seq) for seq in range(40) for key in keys]
    # batches and single records interleaved, as the outbox relay and the API would send them
    for start in range(0, len(sent), 100):
        bus.publish_many(
            [Record(topic, key, f"{seq}".encode()) for key, seq in sent[start : start + 90]]
        )
        for key, seq in sent[start + 90 : start + 100]:
            bus.publish(topic, key, f"{seq}".encode())

    with bus.consumer([topic], f"{name}.group") as consumer:
        received = drain_one(consumer, len(sent))

    assert len(received) == len(sent)
    by_key: dict[str | None, list[int]] = defaultdict(list)
    partitions_of_key: dict[str | None, set[int]] = defaultdict(set)
    for message in received:
        by_key[message.key].append(int(message.value))
        partitions_of_key[message.key].add(message.partition)
    assert all(sequence == list(range(40)) for sequence in by_key.values())
    assert all(len(parts) == 1 for parts in partitions_of_key.values())
    assert len({next(iter(parts)) for parts in partitions_of_key.values()}) > 1


def test_every_group_gets_every_record(bus: Bus, name: str) -> None:
    topic = f"{name}.groups"
    bus.ensure_topics([topic], partitions=3)
    bus.publish_many([Record(topic, f"p{i % 7}", f"{i}".encode()) for i in range(60)])

    with (
        bus.consumer([topic], f"{name}.router") as router,
        bus.consumer([topic], f"{name}.audit") as audit,
    ):
        got_router, got_audit = drain([router, audit], [60, 60])

    expected = {f"{i}".encode() for i in range(60)}
    assert sorted(m.value for m in got_router) == sorted(expected)
    assert sorted(m.value for m in got_audit) == sorted(expected)


def test_new_consumer_resumes_right_after_the_committed_record(bus: Bus, name: str) -> None:
    topic = f"{name}.resume"
    group = f"{name}.group"
    bus.ensure_topics([topic], partitions=1)
    bus.publish_many([Record(topic, "patient-1", f"{i}".encode()) for i in range(1000)])

    with bus.consumer([topic], group) as first:
        seen = drain_one(first, 138)
        assert [int(m.value) for m in seen[:138]] == list(range(138))
        first.commit(seen[:138])

    with bus.consumer([topic], group) as second:
        rest = drain_one(second, 862)
        assert second.poll(0.3) == []

    assert [int(m.value) for m in rest] == list(range(138, 1000))
    assert rest[0].offset == 138


def test_records_polled_but_not_committed_come_again(bus: Bus, name: str) -> None:
    topic = f"{name}.redeliver"
    group = f"{name}.group"
    bus.ensure_topics([topic], partitions=3)
    bus.publish_many([Record(topic, f"p{i % 5}", f"{i}".encode()) for i in range(40)])

    with bus.consumer([topic], group) as first:
        polled = drain_one(first, 40)
        # commit only one partition: the other partitions' records must all come again
        committed_partition = polled[0].partition
        first.commit([m for m in polled if m.partition == committed_partition])

    expected = sorted(m.value for m in polled if m.partition != committed_partition)
    with bus.consumer([topic], group) as second:
        again = drain_one(second, len(expected))
        assert second.poll(0.3) == []

    assert len(polled) == 40
    assert sorted(m.value for m in again) == expected


def test_publish_many_delivers_each_of_500_records_exactly_once(bus: Bus, name: str) -> None:
    topic = f"{name}.many"
    bus.ensure_topics([topic], partitions=4)
    envelopes = [Envelope.new(event_type="delivery", subject_key=f"p{i % 23}") for i in range(500)]
    bus.publish_many([Record.of(topic, envelope) for envelope in envelopes])

    with bus.consumer([topic], f"{name}.group") as consumer:
        received = drain_one(consumer, 500)
        assert consumer.poll(0.5) == []

    ids = [m.envelope().event_id for m in received]
    assert len(ids) == 500
    assert set(ids) == {e.event_id for e in envelopes}
    assert all(m.key == m.envelope().subject_key for m in received)


def test_ensure_topics_is_idempotent_and_keeps_partitions(bus: Bus, name: str) -> None:
    first, second = f"{name}.a", f"{name}.b"
    bus.ensure_topics([first, second], partitions=2)
    bus.ensure_topics([first, second, f"{name}.c"], partitions=5)
    bus.ensure_topics([])
    bus.publish_many([Record(first, f"p{i}", b"x") for i in range(50)])

    with bus.consumer([first], f"{name}.group") as consumer:
        received = drain_one(consumer, 50)

    assert {m.partition for m in received} == {0, 1}


def test_commit_of_nothing_is_a_no_op(bus: Bus, name: str) -> None:
    topic = f"{name}.empty"
    bus.ensure_topics([topic], partitions=1)
    with bus.consumer([topic], f"{name}.group") as consumer:
        consumer.commit([])


@pytest.mark.parametrize("max_records", [0, -1])
def test_poll_refuses_a_non_positive_max_records(bus: Bus, name: str, max_records: int) -> None:
    topic = f"{name}.bad"
    bus.ensure_topics([topic], partitions=1)
    with bus.consumer([topic], f"{name}.group") as consumer, pytest.raises(ValueError):
        consumer.poll(0.1, max_records=max_records)
