"""Running a simulator: the blocking entry point, a background server and the CLI base."""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp

__all__ = ["base_parser", "free_port", "run", "running"]


def base_parser(*, prog: str, description: str, default_port: int) -> argparse.ArgumentParser:
    """Return an argument parser with the options every simulator has."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=default_port, help=f"default {default_port}")
    parser.add_argument(
        "--data", type=Path, required=True, help="folder for the JSON store (created if missing)"
    )
    parser.add_argument("--seed", action="store_true", help="add the demo records if empty")
    return parser


def run(app: ASGIApp, *, host: str = "127.0.0.1", port: int) -> None:
    """Serve the app until interrupted."""
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=2)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(app: ASGIApp, *, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    """Serve the app from a background thread for the block; yield its base URL."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port or free_port(host),
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True, name=f"sim:{config.port}")
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the simulator did not start on {host}:{config.port}")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
