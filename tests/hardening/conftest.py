"""Fixtures of the hostile-input tests: live servers on SQLite with the limits under test.

The hostile-input defences sit in front of storage (middleware, request parsing), so one
backend is enough here; the FHIR suites run both backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import FHIR_JSON, LiveServer, live_server, synthetic_orgnr

# A short lived server with small limits, so tests cross them with small requests.
SMALL_LIMITS: dict[str, Any] = {
    "max_request_bytes": 4096,
    "max_json_depth": 20,
    "max_search_params": 10,
    "max_search_values": 30,
    "max_bundle_entries": 5,
}


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Run Stafett (SMART scopes only) with small request limits and no rate limit."""
    data_dir = tmp_path_factory.mktemp("data")
    with live_server(
        database_url=f"sqlite:///{data_dir / 'stafett.db'}",
        data_dir=data_dir,
        access_policy="scopes-only",
        **SMALL_LIMITS,
    ) as live:
        yield live


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Run Stafett with the default limits, consent on and the rate limit at its defaults."""
    data_dir = tmp_path_factory.mktemp("data")
    with live_server(
        database_url=f"sqlite:///{data_dir / 'stafett.db'}", data_dir=data_dir, rate_limit=True
    ) as live:
        yield live


@pytest.fixture(scope="module")
def system_client(limited_server: LiveServer) -> Iterator[httpx.Client]:
    """Return a FHIR client of the limited server with a system token for everything."""
    token = limited_server.system_token(org=synthetic_orgnr())
    with limited_server.client(token) as client:
        yield client


def fhir_post(client: httpx.Client, path: str, body: str | bytes, **headers: str) -> httpx.Response:
    """POST a raw body as FHIR JSON (or with the given Content-Type)."""
    return client.post(path, content=body, headers={"Content-Type": FHIR_JSON, **headers})


def outcome_codes(response: httpx.Response) -> list[str]:
    """Return the issue codes of an OperationOutcome response."""
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return [issue["code"] for issue in body["issue"]]
