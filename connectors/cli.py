"""`stafett connectors run`: run the connectors of connectors.yaml with their admin API."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bus import Bus
    from connectors.config import ConnectorConfig
    from connectors.runtime import TaskFactory

__all__ = ["add_connectors_parser", "run_connectors"]


def add_connectors_parser(sub: Any) -> None:
    """Add the `connectors` command."""
    parser = sub.add_parser("connectors", help="run and inspect vendor-system connectors")
    commands = parser.add_subparsers(dest="connectors_command", required=True)
    run = commands.add_parser("run", help="run the connectors of a connectors.yaml")
    run.add_argument("--config", type=Path, default=Path("connectors.yaml"))
    run.add_argument("--admin-host", default="127.0.0.1")
    run.add_argument("--admin-port", type=int, default=8083, help="admin API port (0: off)")
    run.add_argument(
        "--state-dir", type=Path, default=Path(".stafett/connectors"), help="checkpoints"
    )
    check = commands.add_parser("check", help="validate a connectors.yaml and exit")
    check.add_argument("--config", type=Path, default=Path("connectors.yaml"))


def run_connectors(
    args: argparse.Namespace,
    *,
    open_bus: Callable[[], Bus] | None,
    admin_token: str | None = None,
) -> int:
    """Run (or check) the configured connectors until SIGINT/SIGTERM.

    `open_bus` gives the configured Kafka bus (with TLS/SASL client settings), or None when
    no broker is configured.
    """
    from connectors.checkpoints import FileCheckpointStore  # noqa: PLC0415
    from connectors.config import load_config  # noqa: PLC0415
    from connectors.registry import factories  # noqa: PLC0415
    from connectors.runtime import ConnectorRuntime  # noqa: PLC0415

    try:
        config = load_config(args.config)
    except ValueError as exc:
        print(f"stafett: error: {exc}", file=sys.stderr)
        return 2
    if args.connectors_command == "check":
        problems = _build_each(config.connectors, factories())
        for problem in problems:
            print(f"stafett: error: {args.config}: {problem}", file=sys.stderr)
        if problems:
            return 2
        print(f"{args.config}: {len(config.connectors)} connector(s) OK")
        return 0
    if open_bus is None:
        print(
            "stafett: error: connectors need STAFETT_KAFKA_BOOTSTRAP (they run in their own "
            "process; the in-process bus cannot reach the worker)",
            file=sys.stderr,
        )
        return 2
    bus = open_bus()
    runtime = ConnectorRuntime(
        bus=bus,
        connectors=config.connectors,
        checkpoints=FileCheckpointStore(args.state_dir),
        factories=factories(),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    runtime.start()
    server = None
    if args.admin_port:
        import uvicorn  # noqa: PLC0415

        from connectors.admin import admin_app  # noqa: PLC0415

        server = uvicorn.Server(
            uvicorn.Config(
                admin_app(runtime, token=admin_token),
                host=args.admin_host,
                port=args.admin_port,
                log_config=None,
                access_log=False,
            )
        )
        threading.Thread(target=server.run, daemon=True).start()
    print(f"stafett connectors: {', '.join(runtime.names())} running", flush=True)
    stop.wait()
    if server is not None:
        server.should_exit = True
    runtime.stop()
    bus.close()
    print("stafett connectors: stopped", flush=True)
    return 0


def _build_each(
    connectors: Sequence[ConnectorConfig], factories: Mapping[tuple[str, str], TaskFactory]
) -> list[str]:
    """Build (and close) every connector's task: its settings are checked without any I/O."""
    problems = []
    for config in connectors:
        try:
            task = factories[(config.system, config.kind)](config)
        except (KeyError, TypeError, ValueError) as exc:
            text = str(exc)
            prefix = f"connector {config.name}"
            problems.append(text if text.startswith(prefix) else f"{prefix}: {text}")
            continue
        close = getattr(task, "close", None)
        if callable(close):
            close()
    return problems
