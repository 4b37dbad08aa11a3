"""OAuth2 client credentials (RFC 6749 §4.4) with opaque, expiring bearer tokens."""

from __future__ import annotations

import base64
import binascii
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote_plus

__all__ = ["OAuthError", "TokenIssuer"]


class OAuthError(Exception):
    """A token request failed; `error` is the RFC 6749 §5.2 code."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


@dataclass(frozen=True)
class _Token:
    client_id: str
    expires_at: float


class TokenIssuer:
    """Issues tokens to the configured client and checks them; tokens live in memory only.

    A restart therefore invalidates every token, as it would with a real server that keeps
    sessions in memory: clients must fetch a new one after a 401.
    """

    def __init__(
        self, *, clients: dict[str, str], expires_in: int, now: Callable[[], float]
    ) -> None:
        self._clients = clients
        self._expires_in = expires_in
        self._now = now
        self._tokens: dict[str, _Token] = {}
        self._lock = threading.Lock()

    def issue(self, *, form: bytes, authorization: str | None) -> dict[str, object]:
        """Answer a token request (form-encoded body, optional HTTP Basic client auth)."""
        fields = {k: v[0] for k, v in parse_qs(form.decode("utf-8", "replace")).items()}
        client_id, secret = fields.get("client_id"), fields.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError(401, "invalid_client", "Malformed Basic credentials") from None
            user, _, password = decoded.partition(":")
            client_id, secret = unquote_plus(user), unquote_plus(password)
        grant_type = fields.get("grant_type")
        if grant_type is None:
            raise OAuthError(400, "invalid_request", "grant_type is required")
        if grant_type != "client_credentials":
            raise OAuthError(400, "unsupported_grant_type", "Only client_credentials")
        expected = self._clients.get(client_id or "")
        if expected is None or not secrets.compare_digest(
            expected.encode(), (secret or "").encode()
        ):
            raise OAuthError(401, "invalid_client", "Unknown client or wrong secret")
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._now()
            self._tokens = {t: v for t, v in self._tokens.items() if v.expires_at > now}
            self._tokens[token] = _Token(client_id or "", now + self._expires_in)
        return {"access_token": token, "expires_in": self._expires_in, "token_type": "Bearer"}

    def client_of(self, token: str) -> str | None:
        """Return the client id of a valid, unexpired token."""
        with self._lock:
            found = self._tokens.get(token)
        if found is None or found.expires_at <= self._now():
            return None
        return found.client_id

    def expire_all(self) -> int:
        """Expire every token now; return how many there were."""
        with self._lock:
            count = len(self._tokens)
            self._tokens.clear()
        return count
