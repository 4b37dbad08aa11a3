"""`python -m simulators.kindergarten --port 8101 --data DIR [--seed] [--api-key KEY]`."""

from __future__ import annotations

from simulators.common.server import base_parser, run
from simulators.kindergarten.app import KindergartenConfig, create_app


def main() -> None:
    """Run the kindergarten simulator."""
    parser = base_parser(
        prog="python -m simulators.kindergarten",
        description="Barnehagesystem: REST/JSON with API key and change feed",
        default_port=8101,
    )
    parser.add_argument("--api-key", default="barnehage-dev-key", help="value of X-Api-Key")
    args = parser.parse_args()
    config = KindergartenConfig(data_dir=args.data, api_key=args.api_key, seed=args.seed)
    run(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
