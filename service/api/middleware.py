"""Pure ASGI middleware: request ids, access logs and the request body size limit.

Pure ASGI (not BaseHTTPMiddleware) keeps the per-request overhead to a few microseconds.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.outcomes import FHIR_JSON, outcome_bytes
from service.errors import Issue, PayloadTooLarge
from service.logs import request_id_var
from service.metrics import REQUEST_SECONDS, REQUESTS, interaction_of

__all__ = ["RequestContextMiddleware"]

_log = logging.getLogger("stafett.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class _TooLarge(PayloadTooLarge):
    # a FhirError, so a router that turns every exception into a response (FhirDispatch, the
    # FastAPI handlers) answers 413 for a chunked body that crosses the limit, not 500
    def __init__(self, limit: int) -> None:
        super().__init__(f"The request body is larger than the limit of {limit} bytes")


class RequestContextMiddleware:
    """Assign a request id, log each request as one JSON line, and cap the body size."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status_holder: dict[str, int] = {"status": 500}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        try:
            length = headers.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._too_large(send_with_id)
                return
            try:
                await self.app(scope, self._limited(receive), send_with_id)
            except _TooLarge:
                await self._too_large(send_with_id)
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            path = scope.get("path", "")
            if path == "/fhir" or path.startswith("/fhir/"):
                interaction, resource_type = interaction_of(scope.get("method", ""), path)
                status = status_holder["status"]
                REQUESTS.labels(interaction, resource_type, f"{status // 100}xx").inc()
                REQUEST_SECONDS.labels(interaction).observe(elapsed_ms / 1000)
            _log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path"),
                    "status": status_holder["status"],
                    "duration_ms": round(elapsed_ms, 2),
                },
            )
            request_id_var.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(self.max_body_bytes)
            return message

        return limited_receive

    async def _too_large(self, send: Any) -> None:
        body = outcome_bytes(
            [
                Issue(
                    "too-costly",
                    f"The request body is larger than the limit of {self.max_body_bytes} bytes",
                )
            ]
        )
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", FHIR_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
