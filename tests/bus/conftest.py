"""Fixtures of the bus tests: one `bus` per transport, unique names per test."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence

import pytest

from bus import Bus, Consumer, InMemoryBus, Message
from bus.kafka import KafkaBus

# Tansu holds a group join for about half the session timeout: these values (ENVIRONMENT.md)
# make a consumer's first record arrive ~3 s after subscribing instead of ~23 s
FAST_GROUP_JOIN = {
    "session_timeout_ms": 6_000,
    "heartbeat_interval_ms": 1_000,
    "max_poll_interval_ms": 5_000,
    "fetch_max_wait_ms": 10,
}


@pytest.fixture(scope="module", params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    """Yield a bus per transport: in-process, and Kafka on a real broker."""
    if request.param == "memory":
        with InMemoryBus() as memory:
            yield memory
        return
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    with KafkaBus(bootstrap, connect_timeout_s=10, **FAST_GROUP_JOIN) as kafka:
        yield kafka


@pytest.fixture
def name() -> str:
    """Return a prefix for topic and group names that no other test uses."""
    return f"test.{uuid.uuid4().hex[:10]}"


def drain(
    consumers: Sequence[Consumer], counts: Sequence[int], timeout_s: float = 30.0
) -> list[list[Message]]:
    """Poll the consumers in turn until each has its count of messages or time runs out.

    Polling in turn lets Kafka group joins of several consumers overlap.
    """
    got: list[list[Message]] = [[] for _ in consumers]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pending = [i for i, count in enumerate(counts) if len(got[i]) < count]
        if not pending:
            break
        for i in pending:
            got[i].extend(consumers[i].poll(0.2 if len(pending) > 1 else 1.0))
    return got


def drain_one(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Message]:
    """Poll one consumer until it has `count` messages or time runs out."""
    return drain([consumer], [count], timeout_s)[0]
