"""The Stafett message bus: topic names, envelopes, and the `Bus` protocol with two transports.

`open_bus("memory://")` gives the in-process bus of the embedded default;
`open_bus("kafka://host:9092,host2:9092")` gives the Kafka transport (kafka-python). Both obey
the contract in `bus.transport`, proven by one test suite: durable publishing, per-key order,
consumer groups with commit-after-effect, at-least-once delivery. Nothing here imports
`service`, `consent` or `connectors`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from bus import topics
from bus.envelope import SCHEMA_VERSION, Envelope, EventType
from bus.errors import BrokerUnavailable, BusError, EnvelopeError, PublishError
from bus.memory import InMemoryBus
from bus.transport import DEFAULT_PARTITIONS, Bus, Consumer, Headers, Message, Record

if TYPE_CHECKING:
    from bus.kafka import KafkaBus

__all__ = [
    "DEFAULT_PARTITIONS",
    "SCHEMA_VERSION",
    "BrokerUnavailable",
    "Bus",
    "BusError",
    "Consumer",
    "Envelope",
    "EnvelopeError",
    "EventType",
    "Headers",
    "InMemoryBus",
    "KafkaBus",
    "Message",
    "PublishError",
    "Record",
    "kafka_servers",
    "open_bus",
    "topics",
]

_KAFKA_PORT = 9092


def open_bus(url: str, **options: Any) -> Bus:
    """Open the bus that `url` names; `options` go to the transport's constructor."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme == "memory":
        return InMemoryBus(**options)
    if scheme == "kafka":
        from bus.kafka import KafkaBus  # noqa: PLC0415 - kafka-python costs ~170 ms to import

        return KafkaBus(kafka_servers(url), **options)
    raise ValueError(
        f"unknown bus URL scheme {scheme or '(none)'!r} in {url!r}: use memory:// or kafka://"
    )


def kafka_servers(url: str) -> list[str]:
    """Return the host:port list of a `kafka://host:port[,host:port]` URL (default port 9092)."""
    parts = urlsplit(url)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"kafka URL takes only host:port[,host:port], got {url!r}")
    servers = []
    for item in parts.netloc.split(","):
        server = item.strip()
        host, colon, port = server.rpartition(":")
        if not colon or port.endswith("]"):  # no port, or a bare [IPv6] address
            host, port = server, str(_KAFKA_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"kafka URL {url!r}: {server!r} is not host:port")
        servers.append(f"{host}:{port}")
    return servers


def __getattr__(name: str) -> Any:
    # KafkaBus is imported on first use so memory-only processes skip kafka-python
    if name == "KafkaBus":
        from bus.kafka import KafkaBus  # noqa: PLC0415

        return KafkaBus
    raise AttributeError(f"module 'bus' has no attribute {name!r}")
