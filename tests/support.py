"""Helpers shared by tests: valid synthetic identifiers, live servers, FHIR JSON clients."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from service.api.app import create_app
from service.auth import DevIssuer
from service.config import Settings

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
FHIR_JSON = "application/fhir+json"


def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    check = (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11) % 11
    return None if check == 10 else check


def synthetic_fnr(rng: random.Random | None = None) -> str:
    """Return a synthetic fødselsnummer (month + 80, Skatteetaten's test convention)."""
    rng = rng or random.Random()
    while True:
        day = rng.randint(1, 28)
        month = rng.randint(1, 12) + 80
        base = f"{day:02d}{month:02d}{rng.randint(10, 25):02d}{rng.randint(0, 499):03d}"
        k1 = _mod11(base, (3, 7, 6, 1, 8, 9, 4, 5, 2))
        if k1 is None:
            continue
        k2 = _mod11(base + str(k1), (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        if k2 is None:
            continue
        return f"{base}{k1}{k2}"


def synthetic_orgnr(rng: random.Random | None = None) -> str:
    """Return a 9-digit organisation number with a valid mod-11 check digit."""
    rng = rng or random.Random()
    while True:
        base = str(rng.randint(80000000, 99999999))
        check = _mod11(base, (3, 2, 7, 6, 5, 4, 3, 2))
        if check is not None:
            return base + str(check)


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    """A real uvicorn server running the app in a background thread."""

    base_url: str
    settings: Settings
    issuer: DevIssuer

    @property
    def fhir(self) -> str:
        return self.base_url + "/fhir"

    def practitioner_token(
        self, *, org: str, hpr: str = "565501872", scopes: str = "user/*.cruds"
    ) -> str:
        return self.issuer.issue_practitioner(
            hpr=hpr, pid=None, organization=org, scopes=scopes, audience=self.settings.audience
        )

    def system_token(self, *, org: str, scopes: str = "system/*.cruds") -> str:
        return self.issuer.issue_system(
            organization=org, scopes=scopes, audience=self.settings.audience
        )

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Accept": FHIR_JSON}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(base_url=self.fhir, headers=headers, timeout=30)


@contextmanager
def live_server(
    *, database_url: str, data_dir: Path, access_policy: str = "consent", **overrides: Any
) -> Iterator[LiveServer]:
    """Run Stafett on a free port with the given database until the block ends."""
    port = free_port()
    settings = Settings(
        environment="test",
        database_url=database_url,
        data_dir=data_dir,
        dev_auth=True,
        auto_migrate=True,
        base_url=f"http://127.0.0.1:{port}",
        log_json=True,
        access_policy=access_policy,
        # suites drive one principal far faster than a person; tests/hardening turns it on
        **{"rate_limit": False, **overrides},
    )
    app = create_app(settings)
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(
            base_url=f"http://127.0.0.1:{port}",
            settings=settings,
            issuer=DevIssuer.load_or_create(data_dir),
        )
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def fhir_headers(**extra: str) -> dict[str, str]:
    """Return headers for a FHIR JSON request body."""
    return {"Content-Type": FHIR_JSON, **extra}
