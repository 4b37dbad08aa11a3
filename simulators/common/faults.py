"""Fault injection: make a share of API calls fail with 500 or hang, for retry tests."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from fastapi import APIRouter, HTTPException
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["FaultConfig", "FaultMiddleware", "Faults", "fault_router"]

Outcome = Literal["ok", "error", "timeout"]


@dataclass(frozen=True)
class FaultConfig:
    """Shares of calls that fail (500) or hang for `timeout_s` before being answered."""

    error_rate: float = 0.0
    timeout_rate: float = 0.0
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        for name in ("error_rate", "timeout_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.error_rate + self.timeout_rate > 1.0:
            raise ValueError("error_rate + timeout_rate must not exceed 1")
        if not 0.0 <= self.timeout_s <= 600.0:
            raise ValueError("timeout_s must be between 0 and 600")


class Faults:
    """The current fault configuration and the random draw per call."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()  # noqa: S311 - chance of a fault, not a secret
        self._lock = threading.Lock()
        self.config = FaultConfig()

    def set(self, config: FaultConfig) -> None:
        """Replace the fault configuration."""
        with self._lock:
            self.config = config

    def reset(self) -> None:
        """Turn all faults off."""
        self.set(FaultConfig())

    def draw(self) -> Outcome:
        """Decide the fate of one call."""
        with self._lock:
            config, roll = self.config, self._rng.random()
        if roll < config.error_rate:
            return "error"
        if roll < config.error_rate + config.timeout_rate:
            return "timeout"
        return "ok"


class FaultMiddleware:
    """ASGI middleware applying `Faults` to every HTTP request outside the exempt prefixes."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        faults: Faults,
        error_response: Callable[[], Response],
        exempt_prefixes: tuple[str, ...] = ("/_sim",),
    ) -> None:
        self.app = app
        self.faults = faults
        self.error_response = error_response
        self.exempt_prefixes = exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Fail, delay or pass on one request."""
        if scope["type"] != "http" or str(scope["path"]).startswith(self.exempt_prefixes):
            await self.app(scope, receive, send)
            return
        outcome = self.faults.draw()
        if outcome == "error":
            await self.error_response()(scope, receive, send)
            return
        if outcome == "timeout":
            # hang, then answer normally: the client has usually given up by then
            await asyncio.sleep(self.faults.config.timeout_s)
        await self.app(scope, receive, send)


def fault_router(faults: Faults) -> APIRouter:
    """Return the `/_sim/faults` routes: POST sets, GET shows, DELETE resets."""
    router = APIRouter(prefix="/_sim/faults", tags=["_sim"])

    @router.get("")
    def show_faults() -> dict[str, Any]:
        return asdict(faults.config)

    @router.post("")
    def set_faults(body: dict[str, float]) -> dict[str, Any]:
        unknown = set(body) - {"error_rate", "timeout_rate", "timeout_s"}
        if unknown:
            raise HTTPException(422, f"unknown fields: {sorted(unknown)}")
        try:
            faults.set(FaultConfig(**body))
        except (TypeError, ValueError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return asdict(faults.config)

    @router.delete("")
    def reset_faults() -> dict[str, Any]:
        faults.reset()
        return asdict(faults.config)

    return router
