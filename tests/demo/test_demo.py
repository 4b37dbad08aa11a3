"""`stafett demo` (`make run`), run as a real process: data flows between the vendor systems.

The demo runs on a block of free ports (`--port-base`) with a fresh data folder. A staff
action in the kindergarten's system reaches Stafett and the health station's system (the
family's Consent names both) and not the school's or child welfare's (it names neither);
SIGTERM stops everything cleanly, and a second start on the same folder goes on where the
first stopped. Every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.auth.dev_issuer import DevIssuer

ROOT = Path(__file__).resolve().parents[2]
NORA = "15832151200"
INGRID = "12898522405"
KINDERGARTEN = "912837467"
FROM_KINDERGARTEN = "https://stafett.no/fhir/sid/936451284/barnehagesystem/tiltak"
# --port-base B: API B+80, connectors' admin B+83, the four systems B+101..B+104
OFFSETS = (80, 83, 101, 102, 103, 104)


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_base() -> int:
    rng = random.Random()  # any free block will do
    for _ in range(200):
        base = rng.randrange(20_000, 60_000)
        if all(_free(base + offset) for offset in OFFSETS):
            return base
    raise RuntimeError("no block of free ports for the demo")


def _env(data: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAFETT_")}
    return {**clean, "STAFETT_DATA_DIR": str(data), "STAFETT_DEV_AUTH": "1"}


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except httpx.TransportError:
            found = None
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.2)


@dataclass
class Demo:
    """A running `stafett demo` process and its addresses."""

    process: subprocess.Popen[str]
    base: int
    data: Path
    out: Path
    err: Path

    def url(self, offset: int) -> str:
        return f"http://127.0.0.1:{self.base + offset}"

    def output(self) -> str:
        return self.out.read_text()

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, and return the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)


def _start(base: int, data: Path, logs: Path, *args: str) -> Demo:
    logs.mkdir(parents=True, exist_ok=True)
    out, err = logs / "stdout.txt", logs / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "demo", "--port-base", str(base), *args],
            cwd=ROOT,
            env=_env(data),
            stdout=stdout,
            stderr=stderr,
            text=True,
        )
    demo = Demo(process, base, data, out, err)

    def ready() -> bool:
        assert process.poll() is None, f"the demo exited early:\n{err.read_text()[-3000:]}"
        return "stafett demo: running" in out.read_text()

    try:
        _wait_for(ready, "the demo to start", timeout=60)
    except BaseException:
        process.kill()
        process.wait()
        raise
    return demo


@contextlib.contextmanager
def _running(base: int, data: Path, logs: Path, *args: str) -> Iterator[Demo]:
    """Run the demo for the block; kill it if the test left it running."""
    demo = _start(base, data, logs, *args)
    try:
        yield demo
    finally:
        if demo.process.poll() is None:
            demo.process.kill()
            demo.process.wait()


def _refused(api: str) -> float:
    """Return how many deliveries the consent router has refused (the worker's metrics)."""
    for line in httpx.get(f"{api}/metrics", timeout=10).text.splitlines():
        if line.startswith('stafett_worker_events_total{event="refused"}'):
            return float(line.split()[-1])
    return 0.0


def _stafett_tasks(demo: Demo, identifier: str) -> list[dict[str, Any]]:
    token = DevIssuer.load_or_create(demo.data).issue_practitioner(
        hpr=None, pid=INGRID, organization=KINDERGARTEN, scopes="user/*.rs", audience="stafett"
    )
    found = httpx.get(
        f"{demo.url(80)}/fhir/Task",
        params={"identifier": identifier},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert found.status_code == 200, found.text
    return [entry["resource"] for entry in found.json().get("entry", [])]


def _station_tasks(demo: Demo) -> list[dict[str, Any]]:
    store = httpx.get(f"{demo.url(103)}/_sim/store", timeout=10).json()
    return [entry["current"] for entry in store["resources"].get("Task", {}).values()]


def _sink_status(demo: Demo, name: str) -> dict[str, Any]:
    status: dict[str, Any] = httpx.get(
        f"{demo.url(83)}/admin/connectors/{name}/status", timeout=10
    ).json()
    return status


@pytest.mark.slow
@pytest.mark.e2e
def test_a_measure_flows_to_permitted_systems_only_and_the_demo_restarts(
    tmp_path: Path,
) -> None:
    base, data = _free_base(), tmp_path / "data"
    with _running(base, data, tmp_path / "first") as demo:
        text = demo.output()
        assert "loaded examples/stafettlogg/demo-transaction.json" in text
        for offset in OFFSETS:
            assert f"127.0.0.1:{base + offset}" in text
        assert "NAV is not started" in text
        # the demo log reached the health station first (the family permits it)
        _wait_for(lambda: _station_tasks(demo), "the demo log's measures in the health station")
        refused_before = _refused(demo.url(80))

        # staff in the kindergarten register a measure in their own system
        created = httpx.post(
            f"{demo.url(101)}/_sim/tiltak",
            json={
                "barn": NORA,
                "beskrivelse": "Bildekort i samlingsstunden",
                "ansvarlig": KINDERGARTEN,
                "status": "pagar",
                "startdato": "2026-11-23",
                "evalueringsdato": "2027-01-04",
            },
            timeout=10,
        )
        assert created.status_code == 201, created.text
        measure = created.json()["id"]

        # (a) in Stafett, through the FHIR API with a token
        identifier = f"{FROM_KINDERGARTEN}|{measure}"
        tasks = _wait_for(lambda: _stafett_tasks(demo, identifier), "the measure in Stafett")
        assert [t["description"] for t in tasks] == ["Bildekort i samlingsstunden"]
        task = tasks[0]
        assert task["status"] == "in-progress"
        assert task["basedOn"][0]["reference"].startswith("CarePlan/")

        # (b) in the health station's own store, as a copy naming the Stafett Task
        copies = _wait_for(
            lambda: [
                t
                for t in _station_tasks(demo)
                if {"system": "https://stafett.no/fhir/id/Task", "value": task["id"]}
                in t.get("identifier", [])
            ],
            "the measure in the health station's store",
        )
        assert copies[0]["description"] == "Bildekort i samlingsstunden"

        # ... and not to the school or child welfare: the router refused them, nothing came
        _wait_for(
            lambda: _refused(demo.url(80)) >= refused_before + 2,
            "the router's refusals for the school and child welfare",
        )
        school = httpx.get(f"{demo.url(102)}/_sim/store", timeout=10).json()
        assert school["elever"] == {}
        assert school["tiltak"] == {}
        agency = httpx.get(f"{demo.url(104)}/_sim/sak", timeout=10).json()
        assert agency["tiltak"] == {}
        assert agency["logger"] == {}
        assert _sink_status(demo, "skole-ut")["records_in"] == 0
        assert _sink_status(demo, "barnevern-ut")["records_in"] == 0
        assert _sink_status(demo, "helsestasjon-ut")["dead_lettered"] == 0

        started = time.monotonic()
        assert demo.stop() == 0, demo.err.read_text()[-3000:]
        assert time.monotonic() - started < 10
        assert demo.output().rstrip().endswith("stafett demo: stopped")

    # a second start goes on where the first stopped: nothing loaded or sent twice
    with _running(base, data, tmp_path / "second") as again:
        assert "is loaded already; skipped" in again.output()
        kindergarten = httpx.get(f"{again.url(101)}/_sim/store", timeout=10).json()
        assert list(kindergarten["barn"]) == ["B-1001"]
        # the source's checkpoint was kept: the measure is not sent again
        status = _wait_for(
            lambda: (s := _sink_status(again, "barnehage-inn"))["last_success_at"] and s,
            "the kindergarten source's first poll",
        )
        assert status["records_out"] == 0
        assert len(_stafett_tasks(again, identifier)) == 1
        assert again.stop() == 0, again.err.read_text()[-3000:]
        assert "stafett demo: stopped" in again.output()


def test_a_taken_port_is_named_with_the_option_that_moves_it(tmp_path: Path) -> None:
    base = _free_base()
    for offset, option in ((80, "--port"), (102, "--port-base")):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", base + offset))
            taken.listen()
            result = subprocess.run(
                [sys.executable, "-m", "service.cli", "demo", "--port-base", str(base)],
                cwd=ROOT,
                env=_env(tmp_path / "data"),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"port {base + offset} " in lines[0]
        assert "in use" in lines[0]
        assert option in lines[0]
        assert result.stdout == ""
    # nothing was started or written before the check
    assert not (tmp_path / "data").exists()


@pytest.mark.slow
def test_no_simulators_runs_the_api_and_worker_only(tmp_path: Path) -> None:
    base = _free_base()
    with socket.socket() as taken:
        # a simulator's port in use does not matter when no simulator runs
        taken.bind(("127.0.0.1", base + 101))
        taken.listen()
        with _running(base, tmp_path / "data", tmp_path / "logs", "--no-simulators") as demo:
            assert "no vendor systems or connectors" in demo.output()
            ready = httpx.get(f"{demo.url(80)}/readyz", timeout=10)
            assert ready.status_code == 200
            assert not _free(base + 80)
            assert _free(base + 83)  # no connectors' admin API
            assert demo.stop() == 0, demo.err.read_text()[-3000:]
            assert "stafett demo: stopped" in demo.output()
