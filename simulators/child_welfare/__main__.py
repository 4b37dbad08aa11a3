"""`python -m simulators.child_welfare --data DIR`: run the message service and the agency."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from simulators.child_welfare.service import create_app
from simulators.child_welfare.settings import Settings
from simulators.common.server import base_parser, run


def main(argv: Sequence[str] | None = None) -> None:
    """Run the simulator until interrupted."""
    parser = base_parser(
        prog="python -m simulators.child_welfare",
        description="Child welfare: Fiks IO-style message service and the agency's case system",
        default_port=8104,
    )
    parser.add_argument("--drop-rate", type=float, default=0.0, help="share of messages lost")
    parser.add_argument("--duplicate-rate", type=float, default=0.0, help="share sent twice")
    parser.add_argument("--fault-seed", type=int, help="seed of the drop/duplicate RNG")
    parser.add_argument("--lease-s", type=float, default=30.0, help="inbox lease time")
    parser.add_argument("--ttl-s", type=int, default=86_400, help="ttl of the agency's messages")
    parser.add_argument("--resend-interval-s", type=float, default=10.0)
    parser.add_argument("--agency-interval-s", type=float, default=0.5, help="0: no loop")
    parser.add_argument("--agency-account", default="barnevern")
    parser.add_argument("--stafett-account", default="stafett")
    args = parser.parse_args(argv)
    settings = Settings(
        data_dir=args.data,
        agency_account=args.agency_account,
        stafett_account=args.stafett_account,
        lease_s=args.lease_s,
        ttl_s=args.ttl_s,
        resend_interval_s=args.resend_interval_s,
        agency_interval_s=args.agency_interval_s,
        drop_rate=args.drop_rate,
        duplicate_rate=args.duplicate_rate,
        fault_seed=args.fault_seed,
        seed_demo=args.seed,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    run(create_app(settings), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
