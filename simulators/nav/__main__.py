"""`python -m simulators.nav --bootstrap host:port --data DIR`: run NAV's system."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from simulators.common.server import base_parser, run
from simulators.nav.app import create_app
from simulators.nav.settings import Settings


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator until interrupted."""
    parser = base_parser(
        prog="python -m simulators.nav",
        description="NAV's BTI system: Rapids & Rivers events on a Kafka topic",
        default_port=8105,
    )
    parser.add_argument("--bootstrap", required=True, help="Kafka bootstrap servers, host:port")
    parser.add_argument("--topic", default="nav.bti.v1")
    parser.add_argument("--group", default="nav-bti-simulator", help="NAV's consumer group")
    parser.add_argument("--partitions", type=int, default=1, help="when creating the topic")
    parser.add_argument("--session-timeout-ms", type=int, default=10_000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=3_000)
    parser.add_argument("--max-poll-interval-ms", type=int, default=300_000)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=100)
    args = parser.parse_args(argv)
    settings = Settings(
        bootstrap=args.bootstrap,
        data_dir=args.data,
        topic=args.topic,
        group_id=args.group,
        partitions=args.partitions,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_interval_ms=args.max_poll_interval_ms,
        fetch_max_wait_ms=args.fetch_max_wait_ms,
        seed_demo=args.seed,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python is chatty at INFO
    run(create_app(settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
