"""Security headers on every response, and no CORS unless origins are allowed."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from service.api.headers import API_CSP, PAGES_CSP
from tests.support import LiveServer, live_server, synthetic_orgnr

pytestmark = pytest.mark.e2e

ALLOWED = "https://app.kommune.example"


@pytest.fixture(scope="module")
def cors_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """Run Stafett with one allowed browser origin and HSTS on."""
    data_dir = tmp_path_factory.mktemp("data")
    with live_server(
        database_url=f"sqlite:///{data_dir / 'stafett.db'}",
        data_dir=data_dir,
        cors_allow_origins=[ALLOWED],
        hsts_seconds=31536000,
    ) as live:
        yield live


def _get(server: LiveServer, path: str, **headers: str) -> httpx.Response:
    return httpx.get(server.base_url + path, headers=headers, timeout=30)


def _assert_secure(response: httpx.Response, csp: str) -> None:
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["content-security-policy"] == csp
    assert "referrer-policy" in headers
    assert len(headers.get_list("content-security-policy")) == 1


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/fhir/metadata", 200),
        ("/fhir/Patient", 401),
        ("/fhir/NoSuchType/1", 401),
        ("/healthz", 200),
        ("/metrics", 200),
        ("/nowhere", 404),
        ("/openapi.json", 200),
    ],
)
def test_api_responses_carry_the_headers(
    default_server: LiveServer, path: str, status: int
) -> None:
    response = _get(default_server, path)
    assert response.status_code == status
    _assert_secure(response, API_CSP)
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in response.headers  # off by default


def test_fhir_data_is_never_cached(default_server: LiveServer) -> None:
    token = default_server.system_token(org=synthetic_orgnr())
    with default_server.client(token) as client:
        response = client.get("/Patient")
    assert response.status_code == 200
    _assert_secure(response, API_CSP)


@pytest.mark.parametrize("path", ["/logg-inn", "/dpo/", "/familie/", "/dpo/nowhere"])
def test_pages_get_a_csp_without_scripts(default_server: LiveServer, path: str) -> None:
    response = _get(default_server, path)
    assert response.status_code in (200, 303, 401, 404)
    _assert_secure(response, PAGES_CSP)
    csp = response.headers["content-security-policy"]
    assert "script-src" not in csp  # default-src 'none' forbids every script
    assert "unsafe-inline" not in csp
    assert csp.startswith("default-src 'none'")


def test_hsts_when_configured(cors_server: LiveServer) -> None:
    response = _get(cors_server, "/fhir/metadata")
    assert response.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"


def test_no_cors_by_default(default_server: LiveServer) -> None:
    response = _get(default_server, "/fhir/metadata", Origin=ALLOWED)
    assert response.status_code == 200
    assert not any(name.startswith("access-control-") for name in response.headers)
    preflight = httpx.options(
        default_server.base_url + "/fhir/Patient",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code >= 400
    assert not any(name.startswith("access-control-") for name in preflight.headers)


def test_cors_for_allowed_origins_only(cors_server: LiveServer) -> None:
    response = _get(cors_server, "/fhir/metadata", Origin=ALLOWED)
    assert response.headers["access-control-allow-origin"] == ALLOWED
    assert "access-control-allow-credentials" not in response.headers
    assert "ETag" in response.headers["access-control-expose-headers"]
    other = _get(cors_server, "/fhir/metadata", Origin="https://evil.example")
    assert "access-control-allow-origin" not in other.headers
    preflight = httpx.options(
        cors_server.base_url + "/fhir/Patient",
        headers={
            "Origin": ALLOWED,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight.headers["access-control-allow-methods"]
    refused = httpx.options(
        cors_server.base_url + "/fhir/Patient",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
