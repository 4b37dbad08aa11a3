"""Constants and small helpers shared by the auth tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from joserfc.jwk import Key

IDP_ISSUER = "https://helseid-sts.test.nhn.no"
AUDIENCE = "stafett"
# Synthetic identifiers that pass the format checks (see test_auth_identifiers.py).
PID = "15031510012"
PID_D_NUMBER = "45031510035"
ORGNR_KOMMUNE = "974760673"
ORGNR_UNIT = "991825827"
HPR = "565501872"


class FakeClock:
    """A settable wall clock, so expiry and rate limits are tested without sleeping."""

    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class JwksServer:
    """A JWK Set served over real HTTP on 127.0.0.1; tests change `keys` to rotate."""

    def __init__(self) -> None:
        self.keys: list[Key] = []
        self.status = 200
        self.requests = 0
        self.url = ""

    def document(self) -> dict[str, Any]:
        return {"keys": [key.as_dict(private=False) for key in self.keys]}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value).encode())


def b64url_decode_json(segment: str) -> dict[str, Any]:
    padded = segment + "=" * (-len(segment) % 4)
    result: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return result
