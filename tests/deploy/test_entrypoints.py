"""The image's commands, run outside a container exactly as compose and the manifests run them."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import (
    DOCKER,
    DOCKERFILE,
    OVERLAY,
    clean_env,
    interpolate,
    named,
    pod_spec,
    tool,
)
from tests.deploy.kustomize import render
from tests.kafka_support import tansu_broker

DOCKERFILE_TEXT = DOCKERFILE.read_text(encoding="utf-8")


def _exec_form(instruction: str) -> list[str]:
    lines = re.findall(rf"^{instruction}\s+(\[.*\])\s*$", DOCKERFILE_TEXT, flags=re.MULTILINE)
    return list(json.loads(lines[-1]))


ENTRYPOINT = _exec_form("ENTRYPOINT")
DEFAULT_COMMAND = _exec_form("CMD")


def _healthcheck() -> list[str]:
    joined = DOCKERFILE_TEXT.replace("\\\n", " ")
    line = re.search(r"^HEALTHCHECK .*? CMD (\[.*\])\s*$", joined, flags=re.MULTILINE)
    assert line
    return list(json.loads(line.group(1)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def executable(argv: list[str]) -> list[str]:
    """Resolve the program of a command line as the image's PATH would."""
    program = {"stafett": tool("stafett"), "python": sys.executable}[argv[0]]
    return [program, *argv[1:]]


def local(argv: list[str], port: int) -> list[str]:
    """Return the command with the address it serves on replaced by 127.0.0.1:port."""
    argv = list(argv)
    for option, value in (
        ("--host", "127.0.0.1"),
        ("--admin-host", "127.0.0.1"),
        ("--port", str(port)),
    ):
        if option in argv:
            argv[argv.index(option) + 1] = value
    return argv


def wait_for_port(port: int, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"exited with {process.returncode}: {out[-2000:]} {err[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"nothing listens on {port} after {timeout} s")


def stop(process: subprocess.Popen[str], timeout: float = 30) -> tuple[int, str, str]:
    process.send_signal(signal.SIGTERM)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"did not stop within {timeout} s of SIGTERM: {err[-2000:]}")
    return process.returncode, out, err


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text(encoding="utf-8"))


def compose_command(compose: dict[str, Any], service: str) -> list[str]:
    spec = compose["services"][service]
    return [*spec.get("entrypoint", ENTRYPOINT), *spec.get("command", DEFAULT_COMMAND)]


def manifest_command(component: str) -> list[str]:
    docs = render(OVERLAY)
    prefix = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["namePrefix"]
    kind = "Job" if component == "migrate" else "Deployment"
    (container,) = pod_spec(named(docs, kind, prefix + component))["containers"]
    return [*container["command"], *container["args"]]


def test_the_image_entrypoint_runs() -> None:
    assert ENTRYPOINT == ["stafett"]
    result = run([*executable(ENTRYPOINT), "--help"], env=clean_env(), cwd=Path.cwd())
    assert result.returncode == 0, result.stderr
    for command in ("serve", "worker", "connectors", "db"):
        assert command in result.stdout


def test_db_upgrade_on_an_embedded_database(tmp_path: Path, compose: dict[str, Any]) -> None:
    command = compose_command(compose, "migrate")
    assert command == manifest_command("migrate") == ["stafett", "db", "upgrade"]
    env = clean_env(STAFETT_DATA_DIR=str(tmp_path / "data"))
    result = run(executable(command), env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "upgraded" in result.stdout
    assert (tmp_path / "data" / "stafett.db").is_file()
    again = run(executable(command), env=env, cwd=tmp_path)  # a second run finds nothing to do
    assert again.returncode == 0, again.stderr
    current = run(executable(["stafett", "db", "current"]), env=env, cwd=tmp_path)
    assert current.returncode == 0, current.stderr
    assert "(head)" in current.stdout, current.stdout


def test_worker_help(tmp_path: Path) -> None:
    result = run(executable(["stafett", "worker", "--help"]), env=clean_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--only" in result.stdout


@pytest.mark.e2e
def test_the_worker_starts_and_stops_on_sigterm(tmp_path: Path, compose: dict[str, Any]) -> None:
    command = compose_command(compose, "worker")
    assert command == manifest_command("worker")
    # the in-process bus and the embedded database: the command itself, without Kafka
    env = clean_env(STAFETT_DATA_DIR=str(tmp_path))
    process = subprocess.Popen(
        executable(command),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("stafett worker: relay, router, ingest, scheduler, sealer"), first
    finally:
        code, out, err = stop(process)
    assert code == 0, err
    assert "stafett worker: stopped" in out


def _connectors_env(compose: dict[str, Any]) -> dict[str, str]:
    env = interpolate(compose["services"]["connectors"]["environment"], {})
    # the sinks' Stafett tokens have no default (the operator mints them): stand-ins here,
    # since `check` refuses an empty token as it would refuse a missing one
    return {
        k: str(v) or f"{k.lower()}-placeholder"
        for k, v in env.items()
        if not k.startswith("STAFETT_")
    }


def test_connectors_check_the_shipped_example(tmp_path: Path, compose: dict[str, Any]) -> None:
    command = compose_command(compose, "connectors")
    config = command[command.index("--config") + 1]
    assert config == "/config/connectors.yaml"  # in the container: docker/connectors.yaml
    check = ["stafett", "connectors", "check", "--config", str(DOCKER / "connectors.yaml")]
    result = run(executable(check), env=clean_env(**_connectors_env(compose)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"\d+ connector\(s\) OK", result.stdout)


def test_connectors_check_refuses_a_missing_secret(tmp_path: Path) -> None:
    check = ["stafett", "connectors", "check", "--config", str(DOCKER / "connectors.yaml")]
    result = run(executable(check), env=clean_env(), cwd=tmp_path)
    assert result.returncode == 2
    assert "is not set" in result.stderr


def test_connectors_check_builds_each_connector_and_names_a_wrong_setting(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    # a setting the connector does not know (here the child-welfare account's URL under the
    # wrong name) is found by `check`, not by the first poll in production
    shipped = (DOCKER / "connectors.yaml").read_text()
    assert "service_url: http://child-welfare:8104" in shipped
    broken = shipped.replace(
        "service_url: http://child-welfare:8104", "base_url: http://child-welfare:8104", 1
    )
    (tmp_path / "connectors.yaml").write_text(broken)
    check = ["stafett", "connectors", "check", "--config", str(tmp_path / "connectors.yaml")]
    result = run(executable(check), env=clean_env(**_connectors_env(compose)), cwd=tmp_path)
    assert result.returncode == 2, result.stdout
    assert "connector barnevern-inn: settings.service_url is missing" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "connectors.yaml"]  # checking wrote nothing


def test_connectors_check_the_kubernetes_config(tmp_path: Path) -> None:
    docs = render(OVERLAY)
    prefix = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["namePrefix"]
    data = named(docs, "ConfigMap", f"{prefix}connectors-config")["data"]["connectors.yaml"]
    (tmp_path / "connectors.yaml").write_text(data)
    (container,) = pod_spec(named(docs, "Deployment", f"{prefix}connectors"))["containers"]
    secrets = {
        e["name"]: "placeholder" for e in container["env"] if not e["name"].startswith("STAFETT_")
    }
    check = ["stafett", "connectors", "check", "--config", str(tmp_path / "connectors.yaml")]
    result = run(executable(check), env=clean_env(**secrets), cwd=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.e2e
def test_serve_answers_health_and_the_image_healthcheck(
    tmp_path: Path, compose: dict[str, Any]
) -> None:
    command = [*ENTRYPOINT, *DEFAULT_COMMAND]
    assert compose_command(compose, "api") == command == manifest_command("api")
    port = free_port()
    env = clean_env(STAFETT_DATA_DIR=str(tmp_path), STAFETT_LOG_LEVEL="WARNING")
    process = subprocess.Popen(
        executable(local(command, port)),
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, process)
        for path, body in (("/healthz", {"status": "ok"}), ("/readyz", {"status": "ready"})):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
                assert response.status == 200, path
                assert json.loads(response.read()) == body
        healthcheck = _healthcheck()
        assert healthcheck[0] == "python"
        probe = [
            sys.executable,
            *[a.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for a in healthcheck[1:]],
        ]
        assert run(probe, env=clean_env(), cwd=tmp_path, timeout=30).returncode == 0
    finally:
        code, _, err = stop(process)
    assert code == 0, err[-2000:]
    refused = [
        sys.executable,
        *[a.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for a in _healthcheck()[1:]],
    ]
    assert run(refused, env=clean_env(), cwd=tmp_path, timeout=30).returncode != 0


SIMULATORS = (
    "kindergarten",
    "school",
    "health-station",
    "child-welfare",
    pytest.param("nav", marks=pytest.mark.kafka),  # NAV's side is a Kafka topic
)


@pytest.mark.e2e
@pytest.mark.parametrize("service", SIMULATORS)
def test_simulator_commands_start(tmp_path: Path, compose: dict[str, Any], service: str) -> None:
    command = interpolate(compose_command(compose, service), {})
    assert command[:2] == ["python", "-m"]
    assert importlib.util.find_spec(f"{command[2]}.__main__"), f"no module {command[2]}"
    argv = local(command, free_port())
    argv[argv.index("--data") + 1] = str(tmp_path / "data")
    port = int(argv[argv.index("--port") + 1])
    with ExitStack() as stack:
        if "--bootstrap" in argv:  # NAV's side is a Kafka topic: give it a real broker
            argv[argv.index("--bootstrap") + 1] = stack.enter_context(tansu_broker())
        process = subprocess.Popen(
            executable(argv),
            env=clean_env(),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_port(port, process)
        finally:
            stop(process)


@pytest.mark.e2e
@pytest.mark.kafka
def test_connectors_run_serves_its_admin_api(tmp_path: Path, compose: dict[str, Any]) -> None:
    command = compose_command(compose, "connectors")
    assert command[:2] == manifest_command("connectors")[:2] == ["stafett", "connectors"]
    port = free_port()
    argv = local(command, port)
    argv[argv.index("--admin-port") + 1] = str(port)
    argv[argv.index("--config") + 1] = str(DOCKER / "connectors.yaml")
    argv[argv.index("--state-dir") + 1] = str(tmp_path / "state")
    token = "test-admin-token"
    with tansu_broker() as bootstrap:
        env = clean_env(
            **_connectors_env(compose),
            STAFETT_KAFKA_BOOTSTRAP=bootstrap,
            STAFETT_CONNECTORS_ADMIN_TOKEN=token,
        )
        process = subprocess.Popen(
            executable(argv),
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for_port(port, process)
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/admin/connectors",
                headers={"Authorization": f"Bearer {token}"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                names = json.loads(response.read())
            assert "barnehage-inn" in names
            assert len(names) == 10
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/connectors", timeout=10)
        finally:
            code, _, err = stop(process, timeout=60)
    assert code == 0, err[-2000:]
