"""The stafett command line, run as real processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import inspect

from service.storage.database import Database
from service.storage.migrations import upgrade_database
from tests.conftest import new_postgres_database
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAFETT_")}
    return {**clean, "STAFETT_DATA_DIR": str(tmp_path / "data"), "STAFETT_DEV_AUTH": "1"}


def test_token_prints_only_the_token(env: dict[str, str]) -> None:
    result = run("token", "--system", "912837467", "--scope", "system/*.rs", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2
    assert result.stdout.strip() == result.stdout.strip().split()[0]


def test_token_bad_orgnr_names_the_problem(env: dict[str, str]) -> None:
    result = run("token", "--system", "123456789", "--scope", "system/*.rs", env=env)
    assert result.returncode == 2
    assert "org" in result.stderr.lower()
    assert result.stdout == ""


def test_bad_setting_names_the_variable(env: dict[str, str]) -> None:
    result = run("db", "upgrade", env={**env, "STAFETT_DATABASE_POOL_SIZE": "zero"})
    assert result.returncode == 2
    assert "STAFETT_DATABASE_POOL_SIZE" in result.stderr


def test_production_refuses_dev_auth(env: dict[str, str]) -> None:
    result = run("db", "upgrade", env={**env, "STAFETT_ENVIRONMENT": "production"})
    assert result.returncode == 2
    assert "STAFETT_DEV_AUTH" in result.stderr


def test_db_upgrade_and_seed_are_idempotent(env: dict[str, str]) -> None:
    assert run("db", "upgrade", env=env).returncode == 0
    first = run("seed", env=env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("loaded")
    second = run("seed", env=env)
    assert second.returncode == 0, second.stderr
    assert "skipped" in second.stdout
    missing = run("seed", "no/such/file.json", env=env)
    assert missing.returncode == 2
    assert "no such file" in missing.stderr


@pytest.mark.slow
def test_serve_demo_answers_over_http(env: dict[str, str]) -> None:
    port = free_port()
    env = {**env, "STAFETT_BASE_URL": f"http://127.0.0.1:{port}"}
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "service.cli", "serve", "--port", str(port), "--demo", "--workers", "2"),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        token = run(
            "token", "--practitioner", "--pid", "12898522405", "--org", "912837467", env=env
        ).stdout.strip()
        response = httpx.get(
            f"http://127.0.0.1:{port}/fhir/CarePlan",
            params={"subject.identifier": "urn:oid:2.16.578.1.12.4.1.4.1|15832151200"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        assert response.json()["total"] == 1
        # two worker processes, one /metrics: the values of both are added up
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        assert 'interaction="search-type",resource_type="CarePlan",status="2xx"' in metrics
        assert 'stafett_consent_decisions_total{basis="consent",outcome="permit"}' in metrics
    finally:
        process.terminate()
        out, err = process.communicate(timeout=20)
    assert "Get a token" in out
    assert '"message":"request"' in err  # JSON access log lines with request ids


@pytest.mark.postgres
def test_concurrent_migrations_on_postgres(postgres_admin_url: str) -> None:
    url = new_postgres_database(postgres_admin_url)
    databases = [Database(url) for _ in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        list(pool.map(lambda db: upgrade_database(db.engine), databases))
    tables = set(inspect(databases[0].engine).get_table_names())
    assert {"resources", "resource_history", "search_token", "alembic_version"} <= tables
    for database in databases:
        database.dispose()


@pytest.mark.slow
def test_worker_drains_the_outbox_and_stops_on_sigterm(env: dict[str, str]) -> None:
    assert run("seed", env=env).returncode == 0
    before = run("bus", "status", env=env)
    assert before.returncode == 0, before.stderr
    waiting = int(before.stdout.split("outbox backlog: ")[1].split()[0])
    assert waiting > 0  # the demo log's writes are events waiting for a worker
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "outbox backlog: 0 " not in run("bus", "status", env=env).stdout:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the worker did not drain the outbox"
            time.sleep(0.3)
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "relay, router, ingest, scheduler, sealer, lifecycle on the in-process bus" in out
    assert "stafett worker: stopped" in out


def test_replay_without_kafka_names_the_missing_setting(env: dict[str, str]) -> None:
    result = run("bus", "replay", "--from-dlq", env=env)
    assert result.returncode == 2
    assert "STAFETT_KAFKA_BOOTSTRAP" in result.stderr
