"""open_bus URLs, and a Kafka bus whose broker is not there."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bus import BrokerUnavailable, InMemoryBus, KafkaBus, kafka_servers, open_bus


def test_memory_url_opens_the_in_process_bus() -> None:
    with open_bus("memory://") as bus:
        assert isinstance(bus, InMemoryBus)


def test_kafka_bus_takes_a_comma_separated_bootstrap_list() -> None:
    assert KafkaBus("a:1, b:2").bootstrap == "a:1,b:2"
    assert KafkaBus(["a:1", "b:2"]).bootstrap == "a:1,b:2"
    with pytest.raises(ValueError, match="bootstrap"):
        KafkaBus(" ,")


def test_kafka_url_opens_the_kafka_bus_without_connecting() -> None:
    bus = open_bus("kafka://broker-1:9093,broker-2", connect_timeout_s=1)
    assert isinstance(bus, KafkaBus)
    assert bus.bootstrap == "broker-1:9093,broker-2:9092"
    bus.close()


@pytest.mark.parametrize(
    ("url", "servers"),
    [
        ("kafka://localhost:9092", ["localhost:9092"]),
        ("kafka://a:1, b:2", ["a:1", "b:2"]),
        ("kafka://[::1]:9093", ["[::1]:9093"]),
        ("kafka://[::1]", ["[::1]:9092"]),
    ],
)
def test_kafka_servers(url: str, servers: list[str]) -> None:
    assert kafka_servers(url) == servers


@pytest.mark.parametrize(
    "url", ["kafka://", "kafka://host:port", "kafka://h:70000", "kafka://h:1/x", "kafka://h:1?a=b"]
)
def test_bad_kafka_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="kafka URL"):
        kafka_servers(url)


@pytest.mark.parametrize(("url", "scheme"), [("redis://x", "'redis'"), ("localhost:9092", "none")])
def test_unknown_scheme_is_named(url: str, scheme: str) -> None:
    with pytest.raises(ValueError, match=f"unknown bus URL scheme.*{scheme}"):
        open_bus(url)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_kafka_bus_without_a_broker_raises_broker_unavailable_quickly() -> None:
    address = f"127.0.0.1:{_closed_port()}"
    with KafkaBus(address, connect_timeout_s=1) as bus:
        for attempt in (
            lambda: bus.publish("t", "k", b"v"),
            lambda: bus.ensure_topics(["t"]),
            lambda: bus.consumer(["t"], "g"),
        ):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match=address):
                attempt()
            assert time.monotonic() - started < 5


def test_bus_imports_neither_service_nor_consent_nor_kafka_python() -> None:
    code = (
        "import sys, bus, bus.memory; "
        "bad = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'service', 'consent', 'connectors', 'kafka'}); "
        "print(','.join(bad))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.strip() == ""
