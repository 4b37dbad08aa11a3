"""`python -m simulators.school --port 8102 --data DIR [--seed] [--client-id ID ...]`."""

from __future__ import annotations

from pathlib import Path

from simulators.common.server import base_parser, run
from simulators.school.app import SchoolConfig, create_app


def main() -> None:
    """Run the school simulator."""
    parser = base_parser(
        prog="python -m simulators.school",
        description="Skolesystem: REST/JSON behind OAuth2 client credentials + nightly CSV",
        default_port=8102,
    )
    parser.add_argument("--client-id", default="stafett")
    parser.add_argument("--client-secret", default="skole-dev-secret")
    parser.add_argument("--expires-in", type=int, default=300, help="token lifetime, seconds")
    parser.add_argument("--export-dir", type=Path, help="CSV folder (default DATA/eksport)")
    parser.add_argument(
        "--export-interval", type=float, help="also export every N seconds (the 'nightly' job)"
    )
    args = parser.parse_args()
    config = SchoolConfig(
        data_dir=args.data,
        clients={args.client_id: args.client_secret},
        expires_in=args.expires_in,
        export_dir=args.export_dir,
        export_interval_s=args.export_interval,
        seed=args.seed,
    )
    run(create_app(config), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
