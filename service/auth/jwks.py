"""Where an issuer's public signing keys come from: a remote JWKS (cached) or a fixed key set."""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from joserfc.errors import JoseError
from joserfc.jwk import Key, RSAKey, import_key

from service.auth.errors import AuthError

__all__ = ["KeySource", "RemoteJwks", "StaticKeySource", "usable_signing_keys"]

log = logging.getLogger(__name__)

_ASYMMETRIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_MIN_RSA_BITS = 2048
_MAX_JWKS_BYTES = 512 * 1024


class KeySource(Protocol):
    """The public signing keys of one token issuer, looked up by the token header's `kid`.

    `get_key` returns None when the kid is unknown even after whatever refresh the source
    allows, and raises AuthError when the keys cannot be obtained at all (IdP unreachable and
    nothing cached). Implementations must be safe to call from several threads at once.
    RFC 7517 (JWK Set): https://www.rfc-editor.org/rfc/rfc7517#section-5
    """

    def get_key(self, kid: str) -> Key | None:
        """Return the verification key with this kid, or None if the issuer has no such key."""
        ...


def usable_signing_keys(jwks: Mapping[str, Any]) -> dict[str, Key]:
    """Return the asymmetric signature keys of a JWK Set by kid, skipping any others."""
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWK Set has no 'keys' list")
    keys: dict[str, Key] = {}
    for entry in entries:
        key = _usable_signing_key(entry)
        if key is not None and key.kid is not None:
            keys[key.kid] = key
    return keys


def _usable_signing_key(entry: object) -> Key | None:
    # Symmetric ("oct") keys are skipped so a shared secret can never verify a token, even if an
    # IdP published one; keys meant for encryption are skipped too.
    if not isinstance(entry, dict) or entry.get("kty") not in _ASYMMETRIC_KEY_TYPES:
        return None
    if entry.get("use", "sig") != "sig" or not isinstance(entry.get("kid"), str):
        return None
    try:
        key = import_key(entry)
    except (JoseError, ValueError, TypeError):
        log.warning("skipping unreadable key %r in JWK Set", entry.get("kid"))
        return None
    if isinstance(key, RSAKey) and key.public_key.key_size < _MIN_RSA_BITS:
        log.warning("skipping RSA key %r shorter than %d bits", key.kid, _MIN_RSA_BITS)
        return None
    return key


class StaticKeySource:
    """A fixed set of keys, e.g. the dev issuer's own public key."""

    def __init__(self, keys: Iterable[Key]) -> None:
        self._keys = {key.kid: key for key in keys if key.kid is not None}

    def get_key(self, kid: str) -> Key | None:
        """Return the key with this kid, or None."""
        return self._keys.get(kid)


class RemoteJwks:
    """An issuer's JWK Set fetched over HTTPS, cached, and refreshed on an unknown kid.

    The cached set is used for `cache_seconds`; after that the next lookup refetches it. An
    unknown kid triggers a refetch (the IdP may have rotated its key), but at most once per
    `min_refresh_seconds`, so a flood of tokens with made-up kids cannot hammer the IdP. If a
    refetch fails, the stale set stays in use: its keys were genuine, and refusing every token
    because the IdP is briefly unreachable would take the whole service down with it.
    """

    def __init__(
        self,
        *,
        url: str,
        http_client: httpx.Client,
        cache_seconds: float,
        min_refresh_seconds: float,
        timeout_seconds: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_jwks_url(url)
        self.url = url
        self._http = http_client
        self._cache_seconds = cache_seconds
        self._min_refresh_seconds = min_refresh_seconds
        self._timeout = timeout_seconds
        self._clock = clock
        # (fetched_at, keys) replaced as one tuple so lock-free readers never see a torn pair.
        self._state: tuple[float, dict[str, Key]] | None = None
        self._last_attempt: float | None = None
        self._lock = threading.Lock()
        self.fetch_count = 0

    def get_key(self, kid: str) -> Key | None:
        """Return the key with this kid, refetching the JWK Set when stale or kid is unknown."""
        state = self._state
        if state is not None and self._clock() - state[0] < self._cache_seconds:
            key = state[1].get(kid)
            if key is not None:
                return key
        with self._lock:
            now = self._clock()
            state = self._state  # another thread may have refreshed while we waited
            fresh = state is not None and now - state[0] < self._cache_seconds
            if state is None or not fresh or kid not in state[1]:
                may_fetch = (
                    self._last_attempt is None
                    or now - self._last_attempt >= self._min_refresh_seconds
                )
                if may_fetch:
                    self._refresh(now)
                    state = self._state
            if state is None:
                raise AuthError("signing keys of the token issuer are unavailable")
            return state[1].get(kid)

    def _refresh(self, now: float) -> None:
        self._last_attempt = now
        self.fetch_count += 1
        try:
            response = self._http.get(
                self.url, timeout=self._timeout, headers={"Accept": "application/json"}
            )
            response.raise_for_status()
            if len(response.content) > _MAX_JWKS_BYTES:
                raise ValueError(f"JWK Set larger than {_MAX_JWKS_BYTES} bytes")
            document = orjson.loads(response.content)
            if not isinstance(document, dict):
                raise ValueError("JWK Set is not a JSON object")
            keys = usable_signing_keys(document)
            if not keys:
                raise ValueError("JWK Set has no usable signature keys")
        except (httpx.HTTPError, ValueError) as error:  # orjson.JSONDecodeError is a ValueError
            log.warning("cannot refresh JWK Set from %s: %s", self.url, error)
            return
        self._state = (now, keys)
        log.info("fetched JWK Set from %s: kids %s", self.url, sorted(keys))


def _check_jwks_url(url: str) -> None:
    """Refuse JWKS URLs whose keys an attacker on the network path could replace."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and _is_loopback(parts.hostname):
        return  # a local test IdP; nothing crosses a network
    raise ValueError(f"JWKS URL must be https (or http on a loopback address): {url!r}")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
