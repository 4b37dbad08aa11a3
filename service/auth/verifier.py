"""Verify a bearer JWT from a trusted issuer and turn it into a Principal, with a small cache."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import httpx
import orjson
from joserfc import jws
from joserfc.errors import (
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingClaimError,
    UnsupportedAlgorithmError,
)
from joserfc.jwt import JWTClaimsRegistry

from service.auth.claims import DEFAULT_ROLE_CLAIM, principal_from_claims
from service.auth.errors import AuthError
from service.auth.jwks import KeySource, RemoteJwks, StaticKeySource

if TYPE_CHECKING:
    from joserfc.jwa import JWSAlgModel

    from service.auth.dev_issuer import DevIssuer
    from service.auth.principal import Principal

__all__ = ["ACCEPTED_ALGORITHMS", "TokenVerifier"]

#: Asymmetric algorithms only: no "none", and no HS* (a shared secret would let anyone who
#: holds it mint tokens; and HS* with a public key as the secret is the classic forgery).
ACCEPTED_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "Ed25519"}
)


class _AsymmetricRegistry(jws.JWSRegistry):
    """A JWS registry that knows only ACCEPTED_ALGORITHMS."""

    # Tokens carrying an x5c certificate chain in the header exceed joserfc's 512-byte default.
    max_header_length = 8192

    def get_alg(self, name: str) -> JWSAlgModel:
        """Return the algorithm, refusing any not in ACCEPTED_ALGORITHMS."""
        # Overridden (not `algorithms=`) so EdDSA does not emit joserfc's RFC 9864 deprecation
        # SecurityWarning on every verification; it stays accepted for IdPs that still use it.
        if name not in ACCEPTED_ALGORITHMS:
            raise UnsupportedAlgorithmError(f"Algorithm of '{name}' is not allowed")
        return self.algorithms[name]


class TokenVerifier:
    """Checks bearer tokens: signature, issuer, audience, lifetime, then the claim mapping.

    Verified principals are cached by the token's SHA-256 until the token expires or
    `jwks_cache_seconds` pass, whichever is first, so repeated requests with one token cost a
    hash and a dict lookup. The cache never outlives the key cache, so a key the IdP withdraws
    stops being honoured through the cache as soon as it stops being honoured at all.
    `scope_aliases` translates IdP scope names (`prefix:name`) to SMART scopes; see
    `principal_from_claims`. Thread-safe; `verify` blocks on HTTP only when a JWK Set must be
    (re)fetched (at most `jwks_timeout_seconds`).
    """

    def __init__(
        self,
        *,
        trusted_issuers: Mapping[str, str],
        audience: str,
        dev_issuer: DevIssuer | None = None,
        jwks_cache_seconds: float = 300,
        leeway_seconds: int = 30,
        http_client: httpx.Client | None = None,
        jwks_min_refresh_seconds: float = 15,
        jwks_timeout_seconds: float = 5.0,
        principal_cache_size: int = 10_000,
        scope_aliases: Mapping[str, str] | None = None,
        role_claim: str = DEFAULT_ROLE_CLAIM,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not audience:
            raise ValueError("audience must not be empty")
        self._audience = audience
        self._scope_aliases = dict(scope_aliases or {})
        self._role_claim = role_claim
        self._leeway = leeway_seconds
        self._clock = clock
        self._owns_http = http_client is None
        self._http = http_client or httpx.Client(timeout=jwks_timeout_seconds)
        self._sources: dict[str, KeySource] = {
            issuer: RemoteJwks(
                url=url,
                http_client=self._http,
                cache_seconds=jwks_cache_seconds,
                min_refresh_seconds=jwks_min_refresh_seconds,
                timeout_seconds=jwks_timeout_seconds,
                clock=clock,
            )
            for issuer, url in trusted_issuers.items()
        }
        if dev_issuer is not None:
            if dev_issuer.issuer in self._sources:
                raise ValueError(f"issuer {dev_issuer.issuer!r} is reserved for the dev issuer")
            self._sources[dev_issuer.issuer] = StaticKeySource([dev_issuer.public_key])
        self._registry = _AsymmetricRegistry(strict_check_header=False)
        self._cache = _PrincipalCache(max_entries=principal_cache_size)
        self._cache_seconds = jwks_cache_seconds

    @property
    def issuers(self) -> frozenset[str]:
        """Return the issuers whose tokens are accepted."""
        return frozenset(self._sources)

    def verify(self, token: str) -> Principal:
        """Return the Principal of a valid bearer token, or raise AuthError saying why not."""
        if not token:
            raise AuthError("missing bearer token")
        now = self._clock()
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        principal = self._cache.get(digest, now)
        if principal is not None:
            return principal
        principal = self._verify_uncached(token, now)
        ttl_end = min(float(principal.expires_at), now + self._cache_seconds)
        self._cache.put(digest, principal, until=ttl_end)
        return principal

    def close(self) -> None:
        """Close the HTTP client if this verifier created it."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> TokenVerifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _verify_uncached(self, token: str, now: float) -> Principal:
        try:
            signed = jws.extract_compact(token.encode("ascii"), registry=self._registry)
        except (JoseError, ValueError, UnicodeError) as error:
            raise AuthError("bearer token is not a well-formed JWT") from error
        header = signed.headers()
        algorithm = header.get("alg")
        if algorithm not in ACCEPTED_ALGORITHMS:
            raise AuthError(f"token algorithm {str(algorithm)[:16]!r} is not accepted")
        if "crit" in header or "b64" in header:
            # No extension is understood here; RFC 7515 section 4.1.11 says refuse, and
            # b64=false (RFC 7797) would change what the signature covers.
            raise AuthError("token uses unsupported critical JWS header extensions")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("token header has no 'kid'")
        claims = _load_claims(signed.payload)
        # The issuer is read before the signature is checked only to choose whose keys to
        # check it with; a forged `iss` then fails the signature check with that issuer's keys.
        issuer = claims.get("iss")
        source = self._sources.get(issuer) if isinstance(issuer, str) else None
        if source is None or not isinstance(issuer, str):
            raise AuthError("token issuer is not trusted")
        key = source.get_key(kid)
        if key is None:
            raise AuthError("token is signed with a key the issuer does not publish")
        try:
            valid = jws.validate_compact(signed, key, registry=self._registry)
        except JoseError as error:  # e.g. an RSA key named by a token that says ES256
            raise AuthError("token signature does not match its issuer's key") from error
        if not valid:
            raise AuthError("token signature is invalid")
        self._check_registered_claims(claims, now)
        return principal_from_claims(
            claims, issuer=issuer, scope_aliases=self._scope_aliases, role_claim=self._role_claim
        )

    def _check_registered_claims(self, claims: dict[str, Any], now: float) -> None:
        registry = JWTClaimsRegistry(
            now=int(now),
            leeway=self._leeway,
            exp={"essential": True},
            aud={"essential": True, "value": self._audience},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError as error:
            raise AuthError("token has expired") from error
        except MissingClaimError as error:
            raise AuthError(f"token lacks required claim(s): {error.claim}") from error
        except ClaimError as error:
            raise AuthError(_claim_problem(error.claim)) from error
        iat, exp = claims.get("iat"), claims["exp"]
        if isinstance(iat, int | float) and iat > exp:
            raise AuthError("token was issued after it expired")


def _load_claims(payload: bytes | None) -> dict[str, Any]:
    try:
        claims = orjson.loads(payload or b"")
    except orjson.JSONDecodeError as error:
        raise AuthError("token payload is not JSON") from error
    if not isinstance(claims, dict):
        raise AuthError("token payload is not a JSON object")
    return claims


def _claim_problem(claim: str) -> str:
    return {
        "nbf": "token is not yet valid",
        "iat": "token is issued in the future",
        "aud": "token is not meant for this server (aud)",
    }.get(claim, f"token claim '{claim}' is invalid")


class _PrincipalCache:
    """An LRU of verified principals keyed by token SHA-256, each valid until a deadline."""

    def __init__(self, *, max_entries: int) -> None:
        self._max = max_entries
        self._entries: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes, now: float) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if now >= entry[1]:
                # Expired: drop it so the token is verified afresh, and refused if it expired.
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[0]

    def put(self, digest: bytes, principal: Principal, *, until: float) -> None:
        if self._max <= 0:
            return
        with self._lock:
            self._entries[digest] = (principal, until)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)
