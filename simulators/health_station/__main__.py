"""`python -m simulators.health_station --port 8103 --data DIR [--seed] [--token TOKEN]`."""

from __future__ import annotations

from simulators.common.server import base_parser, run
from simulators.health_station.app import HealthStationConfig, create_app


def main() -> None:
    """Run the health station simulator."""
    parser = base_parser(
        prog="python -m simulators.health_station",
        description="Helsestasjon: a FHIR R4 server of its own at /fhir",
        default_port=8103,
    )
    parser.add_argument("--token", default="helsestasjon-dev-token", help="static bearer token")
    args = parser.parse_args()
    config = HealthStationConfig(data_dir=args.data, token=args.token, seed=args.seed)
    run(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
