"""What every page shares: templates, language, the visitor's session and HTML error pages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from service.access import RequestContext
from service.api.deps import Services, services_of
from service.auth import AuthError, Principal, PrincipalKind
from service.errors import FhirError
from service.repository import FhirRepository
from service.web.formatting import format_when
from service.web.i18n import LANG_COOKIE, Translate, choose_language, translator
from service.web.session import (
    csrf_for,
    csrf_matches,
    is_secure,
    same_origin,
    session_token,
)

__all__ = ["Endpoint", "Need", "Page", "PageError", "guarded", "open_page"]

_log = logging.getLogger("stafett.web")
_TEMPLATES = Path(__file__).parent / "templates"
_ENV = Environment(
    loader=FileSystemLoader(_TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
_MAX_FORM_BYTES = 64 * 1024

Endpoint = Callable[[Request], Awaitable[Response]]


class Need(Enum):
    """Who may open a page."""

    DPO = "dpo"
    FAMILY = "family"


class PageError(Exception):
    """An error shown as an HTML page: status, a message key and optional detail."""

    def __init__(self, status: int, key: str, detail: str = "", *, login: bool = False) -> None:
        super().__init__(key)
        self.status = status
        self.key = key
        self.detail = detail
        self.login = login


@dataclass(frozen=True, slots=True)
class Visitor:
    """A logged-in visitor: who they are and the token their session holds."""

    principal: Principal
    token: str

    @property
    def csrf(self) -> str:
        """Return the CSRF token for this session's forms."""
        return csrf_for(self.token)


class Page:
    """One request to a page: services, language and the visitor (if logged in)."""

    def __init__(self, request: Request, visitor: Visitor | None) -> None:
        self.request = request
        self.services: Services = services_of(request)
        self.lang, self.lang_chosen = choose_language(request)
        self.t: Translate = translator(self.lang)
        self.visitor = visitor

    @property
    def principal(self) -> Principal:
        """Return the logged-in principal (pages that need one are opened with open_page)."""
        if self.visitor is None:
            raise PageError(401, "error.401", login=True)
        return self.visitor.principal

    @property
    def secure(self) -> bool:
        """Return whether cookies must be Secure."""
        return is_secure(self.request, self.services.settings.base_url)

    def repository(self) -> FhirRepository:
        """Return the visitor's repository: every look is decided and audited."""
        state = self.request.scope.get("state", {})
        context = RequestContext(
            principal=self.principal,
            request_id=str(state.get("request_id", "")),
            correlation_id=self.request.headers.get("x-correlation-id"),
        )
        return FhirRepository(self.services.repository, context)

    def when(self, value: Any) -> str:
        """Format a FHIR date or time in the page language."""
        return format_when(value, self.lang)

    def url_with(self, **changes: str | None) -> str:
        """Return this page's URL with some query parameters changed (None removes one)."""
        pairs = [(k, v) for k, v in self.request.query_params.multi_items() if k not in changes]
        pairs += [(k, v) for k, v in changes.items() if v is not None]
        query = urlencode(pairs)
        return self.request.url.path + (f"?{query}" if query else "")

    def render(
        self, template: str, values: Mapping[str, Any] | None = None, *, status: int = 200
    ) -> HTMLResponse:
        """Render a template with the shared values into an HTML response."""
        area = "area.dpo" if self.request.url.path.startswith("/dpo") else "area.family"
        if not self.request.url.path.startswith(("/dpo", "/familie")):
            area = ""
        body = _ENV.get_template(template).render(
            t=self.t,
            lang=self.lang,
            when=self.when,
            visitor=self.visitor,
            csrf=self.visitor.csrf if self.visitor else "",
            area=area,
            lang_nb=self.url_with(lang="nb"),
            lang_en=self.url_with(lang="en"),
            path=self.request.url.path,
            **(values or {}),
        )
        response = HTMLResponse(body, status_code=status)
        response.headers["content-security-policy"] = (
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
        response.headers["referrer-policy"] = "same-origin"
        if self.lang_chosen:
            response.set_cookie(
                LANG_COOKIE,
                self.lang,
                max_age=365 * 24 * 3600,
                path="/",
                httponly=True,
                samesite="lax",
                secure=self.secure,
            )
        return response

    async def form(self) -> dict[str, list[str]]:
        """Read a urlencoded form and check its CSRF token and origin."""
        body = await self.request.body()
        if len(body) > _MAX_FORM_BYTES:
            raise PageError(413, "error.413")
        fields: dict[str, list[str]] = {}
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            fields.setdefault(key, []).append(value)
        visitor = self.visitor
        if (
            visitor is None
            or not same_origin(self.request)
            or not csrf_matches(visitor.csrf, (fields.get("csrf") or [""])[0])
        ):
            raise PageError(403, "error.csrf")
        return fields


async def open_page(request: Request, need: Need | None) -> Page:
    """Open a page for its visitor; raise 401 without a valid token and 403 for another role."""
    token = session_token(request)
    page = Page(request, None)
    if token is None:
        if need is None:
            return page
        raise PageError(401, "error.401", login=True)
    try:
        principal = await run_in_threadpool(page.services.verifier.verify, token)
    except AuthError as exc:
        if need is None:
            return page
        raise PageError(401, "error.401.invalid", str(exc), login=True) from exc
    page.visitor = Visitor(principal=principal, token=token)
    request.state.web_visitor = page.visitor  # error pages keep the logout button
    if need is Need.DPO and not principal.is_dpo:
        raise PageError(403, "error.403.dpo")
    if need is Need.FAMILY and principal.kind is not PrincipalKind.CITIZEN:
        raise PageError(403, "error.403.family")
    return page


def _status_of(exc: FhirError) -> tuple[int, str]:
    status = exc.status
    known = {400: "error.400", 403: "error.403", 404: "error.404", 409: "error.409"}
    if status in known:
        return status, known[status]
    if status == 401:
        return 401, "error.401"
    if status in (410, 412, 422):
        return 400, "error.400"
    if status == 503:
        return 503, "error.503"
    return 500, "error.500"


def error_page(request: Request, exc: PageError) -> Response:
    """Render an error as an HTML page in the visitor's language."""
    visitor = getattr(request.state, "web_visitor", None)
    page = Page(request, visitor if isinstance(visitor, Visitor) else None)
    response = page.render(
        "error.html",
        {
            "status": exc.status,
            "message": page.t(exc.key),
            "detail": exc.detail,
            "login": exc.login,
            "next": request.url.path,
        },
        status=exc.status,
    )
    if exc.status == 401:
        response.headers["www-authenticate"] = 'Bearer realm="stafett"'
    return response


def guarded(handler: Endpoint) -> Endpoint:
    """Turn errors of a page handler into HTML error pages (never FHIR JSON)."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except PageError as exc:
            return error_page(request, exc)
        except FhirError as exc:
            status, key = _status_of(exc)
            if status >= 500:
                _log.error("page failed: %s; cause: %r", exc.diagnostics, exc.__cause__)
            detail = exc.diagnostics if status < 500 else ""
            return error_page(request, PageError(status, key, detail))
        except Exception:
            _log.exception("page failed unexpectedly")
            return error_page(request, PageError(500, "error.500"))

    run.__name__ = handler.__name__
    run.__doc__ = handler.__doc__
    return run
