"""NAV: its own BTI system on a Kafka topic with Rapids & Rivers JSON (docs/vendor-formats.md).

Run it with `python -m simulators.nav --bootstrap host:port --data DIR`; see README.md.
"""

from simulators.nav.app import create_app, handle_record
from simulators.nav.events import KILDE, KINDS
from simulators.nav.rapids import River, build_message, encode, opprettet, parse
from simulators.nav.settings import Settings
from simulators.nav.store import NavStore

__all__ = [
    "KILDE",
    "KINDS",
    "NavStore",
    "River",
    "Settings",
    "build_message",
    "create_app",
    "encode",
    "handle_record",
    "opprettet",
    "parse",
]
