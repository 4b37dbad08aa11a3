"""Security headers on every response, and CORS only for the origins an operator allows.

Headers an endpoint set itself win: the pages under /dpo/ and /familie/ send their own
Content-Security-Policy and Referrer-Policy (service/web/pages.py), which this keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["API_CSP", "PAGES_CSP", "SecurityHeadersMiddleware", "with_cors"]

#: JSON answers load nothing and may be framed by no one.
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
#: The server-rendered pages: no JavaScript, our stylesheet and images, forms to ourselves.
PAGES_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
_PAGE_PREFIXES = ("/dpo", "/familie", "/logg-inn", "/logg-ut", "/stil/")

# Headers the FHIR API answers with that browser code on an allowed origin may read.
_EXPOSED = ["ETag", "Location", "Content-Location", "Last-Modified", "X-Request-Id", "Retry-After"]
_ALLOWED_HEADERS = [
    "Authorization",
    "Content-Type",
    "Accept",
    "If-Match",
    "If-None-Match",
    "If-None-Exist",
    "Prefer",
    "X-Request-Id",
    "X-Correlation-Id",
]


class SecurityHeadersMiddleware:
    """Add nosniff, no-referrer, DENY framing, a CSP, no-store and optionally HSTS."""

    def __init__(self, app: ASGIApp, *, hsts_seconds: int = 0) -> None:
        self.app = app
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"no-referrer"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"cache-control", b"no-store"),
        ]
        if hsts_seconds > 0:
            common.append(
                (
                    b"strict-transport-security",
                    f"max-age={hsts_seconds}; includeSubDomains".encode(),
                )
            )
        self._api = [*common, (b"content-security-policy", API_CSP.encode())]
        self._pages = [*common, (b"content-security-policy", PAGES_CSP.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = self._pages if path.startswith(_PAGE_PREFIXES) else self._api

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in extra if item[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def with_cors(app: ASGIApp, *, allow_origins: Sequence[str]) -> ASGIApp:
    """Wrap app in CORS for the allowed origins; with none, return app unchanged (no CORS)."""
    if not allow_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(allow_origins),
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=_ALLOWED_HEADERS,
        expose_headers=_EXPOSED,
        # bearer tokens travel in a header; cookies (the pages' session) must never go cross-site
        allow_credentials=False,
        max_age=600,
    )
