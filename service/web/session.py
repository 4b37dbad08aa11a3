"""Stateless page sessions: the bearer token in an HttpOnly cookie, CSRF tokens derived from it.

Browsers cannot send a bearer header when they navigate, so the token is accepted once (the
login form, or the municipality's login in front of Stafett) and kept in a cookie. Nothing is
stored on the server: every request verifies the cookie's token with the same TokenVerifier as
the FHIR API. The CSRF token of a session is an HMAC of a fixed label keyed with the session's
token, so it is unguessable without the HttpOnly cookie and valid on every worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

__all__ = [
    "LOGIN_CSRF_COOKIE",
    "SESSION_COOKIE",
    "clear_session",
    "csrf_for",
    "csrf_matches",
    "is_secure",
    "new_login_csrf",
    "safe_next",
    "same_origin",
    "session_token",
    "set_login_csrf",
    "set_session",
]

SESSION_COOKIE = "stafett_okt"
LOGIN_CSRF_COOKIE = "stafett_innlogging"
_CSRF_LABEL = b"stafett-web-csrf-v1"
_LOGIN_CSRF_SECONDS = 3600


def session_token(request: Request) -> str | None:
    """Return the session's bearer token: the cookie, else an Authorization header."""
    cookie = request.cookies.get(SESSION_COOKIE, "").strip()
    if cookie:
        return cookie
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def csrf_for(token: str) -> str:
    """Return the CSRF token of the session that holds this bearer token."""
    digest = hmac.new(token.encode(), _CSRF_LABEL, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def csrf_matches(expected: str, given: str | None) -> bool:
    """Compare CSRF tokens in constant time."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def new_login_csrf() -> str:
    """Return a fresh random token for the login form (double-submit cookie)."""
    return secrets.token_urlsafe(32)


def is_secure(request: Request, base_url: str) -> bool:
    """Return whether the page is served over https (directly or behind a TLS proxy)."""
    forwarded = request.headers.get("x-forwarded-proto", "").lower()
    return request.url.scheme == "https" or forwarded == "https" or base_url.startswith("https:")


def set_session(response: Response, token: str, *, expires_at: int, secure: bool) -> None:
    """Keep the token in an HttpOnly, SameSite=Strict cookie until it expires."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=max(0, expires_at - int(time.time())),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def clear_session(response: Response, *, secure: bool) -> None:
    """Remove the session cookie."""
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=secure, httponly=True, samesite="strict"
    )


def set_login_csrf(response: Response, value: str, *, secure: bool) -> None:
    """Set the login form's double-submit cookie."""
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        value,
        max_age=_LOGIN_CSRF_SECONDS,
        path="/logg-inn",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


def same_origin(request: Request) -> bool:
    """Return False when the browser says the form was posted from another origin."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def safe_next(value: str | None, default: str) -> str:
    """Return a local path to go to after login, never another site."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    if not (value.startswith(("/dpo/", "/familie/")) or value in ("/dpo", "/familie")):
        return default
    return value
