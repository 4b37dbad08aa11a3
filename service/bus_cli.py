"""`stafett worker` and `stafett bus status|replay`: run and operate the message bus."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from service.config import Settings

if TYPE_CHECKING:
    from bus import Bus

__all__ = ["add_bus_parsers", "replay_dead_letters", "run_bus", "run_worker"]

_COMPONENTS = ("relay", "router", "ingest", "scheduler", "sealer", "lifecycle")


def add_bus_parsers(sub: Any) -> None:
    """Add the `worker` and `bus` commands."""
    worker = sub.add_parser(
        "worker", help="run the outbox relay, consent router, ingest, scheduler and audit sealer"
    )
    worker.add_argument(
        "--only",
        action="append",
        choices=_COMPONENTS,
        help="run only these components (repeat the option); default: all",
    )
    worker.add_argument(
        "--metrics-port", type=int, default=9464, help="Prometheus /metrics port (0: off)"
    )
    worker.add_argument("--metrics-host", default="0.0.0.0")  # noqa: S104 - scraped in-cluster
    bus = sub.add_parser("bus", help="operate the message bus")
    bus_sub = bus.add_subparsers(dest="bus_command", required=True)
    bus_sub.add_parser("status", help="show the outbox backlog and the bus in use")
    replay = bus_sub.add_parser(
        "replay", help="re-feed dead-lettered messages to the topic they came from"
    )
    replay.add_argument(
        "--from-dlq", action="store_true", required=True, help="replay from stafett.dlq"
    )
    replay.add_argument("--limit", type=int, default=1000, help="at most this many messages")
    replay.add_argument(
        "--event-id", action="append", help="replay only messages with this event id (repeat)"
    )
    replay.add_argument(
        "--dry-run", action="store_true", help="list what would be replayed, change nothing"
    )
    replay.add_argument(
        "--wait", type=float, default=10.0, help="seconds to wait for dead letters (default 10)"
    )


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Run the worker until SIGINT/SIGTERM."""
    from service.worker import Worker  # noqa: PLC0415

    worker = Worker(settings, components=tuple(args.only or _COMPONENTS))
    worker.start()
    if args.metrics_port:
        worker.serve_metrics(args.metrics_host, args.metrics_port)

    def _stop(signum: int, _frame: object) -> None:
        worker.stop()

    # before the start-up line: whoever waits for it may stop the worker at once
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    where = settings.kafka_bootstrap or "the in-process bus (set STAFETT_KAFKA_BOOTSTRAP)"
    print(f"stafett worker: {', '.join(worker.components)} on {where}", flush=True)
    worker.wait()
    print("stafett worker: stopped", flush=True)
    return 0


def run_bus(args: argparse.Namespace, settings: Settings) -> int:
    """Run `stafett bus status` or `stafett bus replay`."""
    if args.bus_command == "status":
        return _status(settings)
    return _replay(args, settings)


def _status(settings: Settings) -> int:
    from service.outbox import backlog  # noqa: PLC0415
    from service.storage.database import Database  # noqa: PLC0415

    database = Database(settings.effective_database_url)
    try:
        with database.read() as conn:
            waiting = backlog(conn)
    finally:
        database.dispose()
    print(f"bus: {settings.kafka_bootstrap or 'in-process (STAFETT_KAFKA_BOOTSTRAP not set)'}")
    print(f"outbox backlog: {waiting} event(s) waiting to be published")
    return 0


def _replay(args: argparse.Namespace, settings: Settings) -> int:
    from service.worker import open_configured_bus  # noqa: PLC0415

    if not settings.kafka_bootstrap:
        print(
            "stafett: error: replay needs STAFETT_KAFKA_BOOTSTRAP: the in-process bus keeps "
            "no dead letters after the worker stops",
            file=sys.stderr,
        )
        return 2
    bus = open_configured_bus(settings)
    try:
        count = replay_dead_letters(
            bus,
            event_ids=frozenset(args.event_id or ()),
            limit=args.limit,
            dry_run=args.dry_run,
            wait_s=args.wait,
            report=print,
        )
    finally:
        bus.close()
    print(f"{'would replay' if args.dry_run else 'replayed'} {count} message(s)")
    return 0


def replay_dead_letters(
    bus: Bus,
    *,
    event_ids: frozenset[str] = frozenset(),
    limit: int = 1000,
    dry_run: bool = False,
    wait_s: float = 10.0,
    report: Callable[[str], object] = lambda _line: None,
) -> int:
    """Re-feed dead letters to the topic they came from; return how many.

    Each is committed on the dead-letter topic only after the broker acknowledged its
    re-feed. With `event_ids`, the others are passed over (and committed, so a targeted
    replay does not offer them again). A dry run commits nothing.
    """
    from bus import Record, topics  # noqa: PLC0415
    from service.worker import DLQ_REASON, DLQ_SOURCE  # noqa: PLC0415

    replayed = seen = 0
    with bus.consumer([topics.DEAD_LETTER], "stafett-replay") as consumer:
        deadline = time.monotonic() + wait_s
        while seen < limit and time.monotonic() < deadline:
            messages = consumer.poll(0.5, max_records=limit - seen)
            if not messages:
                continue
            deadline = time.monotonic() + 2.0  # the backlog is flowing: stop when it ends
            seen += len(messages)
            records: list[Record] = []
            for message in messages:
                source = (message.header(DLQ_SOURCE) or b"").decode()
                topic = source.split("/", 1)[0] or topics.INBOUND
                event_id = _event_id(message.value)
                if event_ids and event_id not in event_ids:
                    continue
                if topic not in topics.ALL_FIXED and topics.is_outbound(topic) is None:
                    # a vendor record a source connector could not map: it never was a bus
                    # message; fix the record or the mapping and let the connector read it again
                    report(f"skip {event_id}: dead-lettered by connector {topic}, not replayable")
                    continue
                reason = (message.header(DLQ_REASON) or b"").decode()[:200]
                verb = "would replay" if dry_run else "replay"
                report(f"{verb} {event_id} -> {topic} (was: {reason})")
                headers = tuple(
                    (k, v) for k, v in message.headers if k not in (DLQ_REASON, DLQ_SOURCE)
                )
                records.append(Record(topic, message.key or "", message.value, headers))
            replayed += len(records)
            if dry_run:
                continue  # nothing committed: the dead letters stay for a real replay
            bus.publish_many(records)
            consumer.commit(messages)
    return replayed


def _event_id(value: bytes) -> str:
    import orjson  # noqa: PLC0415

    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError:
        return "(not JSON)"
    return str(data.get("event_id", "(none)")) if isinstance(data, dict) else "(not an object)"
