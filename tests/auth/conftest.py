"""Shared fixtures for the auth tests: a fake clock, IdP keys, a real local JWKS server."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from auth_support import (
    AUDIENCE,
    HPR,
    IDP_ISSUER,
    ORGNR_KOMMUNE,
    ORGNR_UNIT,
    PID,
    FakeClock,
    JwksServer,
)
from joserfc import jwt
from joserfc.jwk import Key, RSAKey

from service.auth import DevIssuer, TokenVerifier


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def idp_keys() -> list[RSAKey]:
    """Three RSA signing keys of the test IdP, kids k1, k2, k3 (generated once: RSA is slow)."""
    return [
        RSAKey.generate_key(2048, {"kid": f"k{i}", "alg": "RS256", "use": "sig"}) for i in (1, 2, 3)
    ]


@pytest.fixture
def jwks_server(idp_keys: list[RSAKey]) -> Iterator[JwksServer]:
    state = JwksServer()
    state.keys = [idp_keys[0]]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests += 1
            body = json.dumps(state.document()).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/jwks"
    # A short poll interval keeps shutdown() (it waits for the next poll) fast in teardown.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def http_client() -> Iterator[httpx.Client]:
    with httpx.Client() as client:
        yield client


@pytest.fixture
def make_verifier(
    jwks_server: JwksServer, http_client: httpx.Client, clock: FakeClock
) -> Iterator[Callable[..., TokenVerifier]]:
    """Build TokenVerifiers trusting the local JWKS server; keyword overrides are passed on."""
    made: list[TokenVerifier] = []

    def make(**overrides: Any) -> TokenVerifier:
        options: dict[str, Any] = {
            "trusted_issuers": {IDP_ISSUER: jwks_server.url},
            "audience": AUDIENCE,
            "http_client": http_client,
            "clock": clock,
            "jwks_cache_seconds": 300,
            "jwks_min_refresh_seconds": 15,
            "leeway_seconds": 30,
        }
        options.update(overrides)
        verifier = TokenVerifier(**options)
        made.append(verifier)
        return verifier

    yield make
    for verifier in made:
        verifier.close()


@pytest.fixture
def verifier(make_verifier: Callable[..., TokenVerifier]) -> TokenVerifier:
    return make_verifier()


@pytest.fixture
def practitioner_claims(clock: FakeClock) -> dict[str, Any]:
    """Claims of a HelseID user access token for a health-station nurse."""
    now = int(clock())
    return {
        "iss": IDP_ISSUER,
        "aud": ["stafett", "nhn:other-api"],
        "sub": "3AEx1Qp0wZJm6Zc0rQf5bZ4yqG0v2U5bKp8tZl7YcWQ=",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": "a1b2c3",
        "client_id": "journal-system",
        "scope": ["openid", "user/*.rs", "user/Task.cu"],
        "helseid://claims/identity/pid": PID,
        "helseid://claims/hpr/hpr_number": HPR,
        "helseid://claims/identity/security_level": "4",
        "helseid://claims/client/claims/orgnr_parent": ORGNR_KOMMUNE,
        "helseid://claims/client/claims/orgnr_child": ORGNR_UNIT,
        "name": "Kari Helsesøster",
    }


@pytest.fixture
def sign(idp_keys: list[RSAKey]) -> Callable[..., str]:
    """Sign claims as the test IdP: sign(claims, key=idp_keys[0], alg="RS256", **header)."""

    def _sign(
        claims: dict[str, Any], key: Key | None = None, alg: str = "RS256", **header: Any
    ) -> str:
        key = key or idp_keys[0]
        protected = {"alg": alg, "kid": key.kid, **header}
        return jwt.encode(protected, claims, key, algorithms=[alg])

    return _sign


@pytest.fixture
def dev_issuer(clock: FakeClock) -> DevIssuer:
    return DevIssuer.generate(clock=clock)
