"""Logging in and out of the pages, and the style sheet."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.auth import AuthError, Principal, PrincipalKind
from service.web.pages import Page, PageError, guarded, open_page
from service.web.session import (
    LOGIN_CSRF_COOKIE,
    clear_session,
    csrf_matches,
    new_login_csrf,
    safe_next,
    same_origin,
    set_login_csrf,
    set_session,
)

__all__ = ["routes"]

_CSS = Path(__file__).parent / "static" / "stafett.css"
_MAX_LOGIN_BYTES = 32 * 1024


def _home(principal: Principal) -> str:
    if principal.is_dpo:
        return "/dpo/"
    return "/familie/" if principal.kind is PrincipalKind.CITIZEN else "/"


def _login_form(page: Page, *, next_path: str, error: str = "", status: int = 200) -> Response:
    """Render the login page with a fresh double-submit CSRF cookie."""
    token = new_login_csrf()
    response = page.render(
        "login.html",
        {
            "login_csrf": token,
            "next": next_path,
            "error": error,
            "dev_auth": page.services.settings.dev_auth,
            "login_url": os.environ.get("STAFETT_WEB_LOGIN_URL", ""),
        },
        status=status,
    )
    set_login_csrf(response, token, secure=page.secure)
    return response


@guarded
async def login_page(request: Request) -> Response:
    """Show the login form (in development: paste a token from `stafett token`)."""
    page = await open_page(request, None)
    return _login_form(page, next_path=request.query_params.get("neste", ""))


@guarded
async def login(request: Request) -> Response:
    """Accept a token once, verify it and keep it in the session cookie."""
    page = await open_page(request, None)
    body = await request.body()
    if len(body) > _MAX_LOGIN_BYTES:
        raise PageError(413, "error.413")
    fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not same_origin(request) or not csrf_matches(cookie, fields.get("csrf")):
        raise PageError(403, "error.csrf")
    token = "".join(fields.get("token", "").split())
    next_path = fields.get("neste", "")
    if not token:
        return _login_form(page, next_path=next_path, error=page.t("login.error.empty"), status=400)
    try:
        principal = await run_in_threadpool(page.services.verifier.verify, token)
    except AuthError as exc:
        error = page.t("login.error.refused", reason=str(exc))
        return _login_form(page, next_path=next_path, error=error, status=401)
    response = RedirectResponse(safe_next(next_path, _home(principal)), status_code=303)
    set_session(response, token, expires_at=principal.expires_at, secure=page.secure)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/logg-inn")
    return response


@guarded
async def logout(request: Request) -> Response:
    """End the session (the form carries the CSRF token while the session is valid)."""
    page = await open_page(request, None)
    if page.visitor is not None:
        await page.form()
    response = RedirectResponse("/logg-inn?logget_ut=1", status_code=303)
    clear_session(response, secure=page.secure)
    return response


async def stylesheet(request: Request) -> Response:
    """Serve the pages' style sheet."""
    return Response(
        _CSS.read_bytes(),
        media_type="text/css",
        headers={"cache-control": "public, max-age=3600"},
    )


routes = [
    Route("/logg-inn", login_page, methods=["GET"]),
    Route("/logg-inn", login, methods=["POST"]),
    Route("/logg-ut", logout, methods=["POST"]),
    Route("/stil/stafett.css", stylesheet, methods=["GET"]),
]
