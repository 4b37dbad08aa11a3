"""Rate limits: a token bucket per authenticated principal, or per client IP without a token.

The buckets live in the memory of one process, so a pod with `--workers N` behind a load
balancer spread over M pods lets a caller make up to N x M times the configured rate. That is
deliberate: the limit is there to keep one runaway client (a connector in a loop, a script
with a stolen token) from starving everyone else, not to meter usage, and a shared store would
put a network round trip on every request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.cookies import SimpleCookie
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.outcomes import FHIR_JSON, outcome_bytes
from service.errors import Issue

__all__ = ["EXEMPT_PATHS", "RateLimitMiddleware", "RateLimiter", "TokenBucket"]

#: Probes and scrapes: throttling them would turn a busy client into a dead pod.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
_SESSION_COOKIE = "stafett_okt"  # service/web/session.py: the pages keep the token here


@dataclass(slots=True)
class TokenBucket:
    """A bucket of `burst` tokens refilled at `rate` per second; each request takes one."""

    rate: float
    burst: int
    tokens: float
    updated: float

    def take(self, now: float) -> float:
        """Take one token; return 0 when allowed, else the seconds until one is available."""
        self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class RateLimiter:
    """Token buckets by key, at most `max_keys` of them (least recently used go first).

    Used from the event loop only, so it needs no lock.
    """

    def __init__(
        self,
        *,
        rate: float,
        burst: int,
        anonymous_rate: float,
        anonymous_burst: int,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limits = {True: (rate, burst), False: (anonymous_rate, anonymous_burst)}
        self._buckets: dict[str, TokenBucket] = {}
        self._max_keys = max_keys
        self._clock = clock

    def check(self, key: str, *, authenticated: bool) -> float:
        """Count one request of key; return 0 when allowed, else the seconds to wait."""
        now = self._clock()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            rate, burst = self._limits[authenticated]
            bucket = TokenBucket(rate=rate, burst=burst, tokens=float(burst), updated=now)
            if len(self._buckets) >= self._max_keys:
                # forgetting the least recently seen caller only gives it a full bucket again
                del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = bucket  # re-inserted last: dict order is recency order
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)


def _bearer_token(scope: Scope) -> str | None:
    cookie_header = b""
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []
    for name, raw in headers:
        if name == b"authorization":
            scheme, _, token = raw.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
        elif name == b"cookie":
            cookie_header = raw
    if cookie_header:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(cookie_header.decode("latin-1"))
        except Exception:  # a malformed Cookie header: the caller counts as anonymous
            return None
        morsel = cookies.get(_SESSION_COOKIE)
        value = str(morsel.value).strip() if morsel is not None else ""
        if value:
            return value
    return None


class RateLimitMiddleware:
    """Answer 429 with an OperationOutcome and Retry-After once a caller's bucket is empty.

    The caller is the principal of a valid bearer token (header or the pages' session cookie),
    found with the same TokenVerifier the endpoints use: it caches verified tokens, so the
    endpoint's own check is a dictionary lookup. Without a valid token, the caller is the
    client IP (behind a proxy, have uvicorn trust its X-Forwarded-For: FORWARDED_ALLOW_IPS).
    """

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, state: Any) -> None:
        self.app = app
        self.limiter = limiter
        self._state = state  # the FastAPI app's state: services exist once the lifespan ran

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http" or scope.get("path", "") in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        key, authenticated = self._caller(scope)
        wait = self.limiter.check(key, authenticated=authenticated)
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        retry_after = max(1, math.ceil(wait))
        body = outcome_bytes(
            [
                Issue(
                    "throttled",
                    f"Too many requests; try again in {retry_after} s",
                )
            ]
        )
        await send(
            {
                "type": "http.response.start",
                "status": 429,
                "headers": [
                    (b"content-type", FHIR_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(retry_after).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _caller(self, scope: Scope) -> tuple[str, bool]:
        token = _bearer_token(scope)
        services = getattr(self._state, "services", None)
        if token is not None and services is not None:
            try:
                principal = services.verifier.verify(token)
            except Exception:
                # AuthError or whatever else a hostile token causes: the endpoint answers it
                # (401); until then the caller is its address
                principal = None
            if principal is not None:
                # a Maskinporten client acting for several organisations is one caller per
                # organisation: its subject is the client id, shared by them all
                who = (principal.issuer, principal.subject, principal.organization or "")
                return "p:" + "|".join(who), True
        client = scope.get("client")
        return f"ip:{client[0] if client else 'unknown'}", False
