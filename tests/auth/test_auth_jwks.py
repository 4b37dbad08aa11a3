"""JWKS over real HTTP: caching, key rotation, rate-limited refresh, IdP outages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from auth_support import FakeClock, JwksServer
from joserfc.jwk import OctKey, RSAKey

from service.auth import AuthError, TokenVerifier
from service.auth.jwks import RemoteJwks, usable_signing_keys

Sign = Callable[..., str]


def test_key_rotation(
    verifier: TokenVerifier,
    sign: Sign,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
    idp_keys: list[RSAKey],
    clock: FakeClock,
) -> None:
    verifier.verify(sign(practitioner_claims, key=idp_keys[0]))
    assert jwks_server.requests == 1

    # The IdP publishes k2 next to k1 and starts signing with it.
    jwks_server.keys = [idp_keys[0], idp_keys[1]]
    clock.advance(20)  # past the 15 s minimum refresh interval, well inside the 300 s cache
    practitioner_claims["jti"] = "after-rotation"
    principal = verifier.verify(sign(practitioner_claims, key=idp_keys[1]))
    assert principal.token_id == "after-rotation"
    assert jwks_server.requests == 2  # one refetch, triggered by the unknown kid

    # Later k1 is withdrawn; once the cache is stale, k1 tokens stop verifying.
    jwks_server.keys = [idp_keys[1]]
    clock.advance(301)
    practitioner_claims.update(iat=int(clock()), nbf=int(clock()), exp=int(clock()) + 300)
    with pytest.raises(AuthError, match="does not publish"):
        verifier.verify(sign(practitioner_claims, key=idp_keys[0]))
    assert verifier.verify(sign(practitioner_claims, key=idp_keys[1])).token_id == "after-rotation"


def test_unknown_kid_refresh_is_rate_limited(
    verifier: TokenVerifier,
    sign: Sign,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
    idp_keys: list[RSAKey],
    clock: FakeClock,
) -> None:
    verifier.verify(sign(practitioner_claims, key=idp_keys[0]))
    assert jwks_server.requests == 1
    stranger = RSAKey.generate_key(2048, {"kid": "made-up"})

    for attempt in range(20):  # a flood of tokens with a kid the IdP never published
        practitioner_claims["jti"] = f"flood-{attempt}"
        with pytest.raises(AuthError):
            verifier.verify(sign(practitioner_claims, key=stranger))
        clock.advance(0.5)
    # The first made-up kid came within 15 s of the initial fetch: no refetch for 10 s of flood.
    assert jwks_server.requests == 1

    clock.advance(10)  # now more than 15 s since the last fetch
    practitioner_claims["jti"] = "flood-late"
    with pytest.raises(AuthError):
        verifier.verify(sign(practitioner_claims, key=stranger))
    assert jwks_server.requests == 2


def test_rotation_waits_for_the_rate_limit(
    verifier: TokenVerifier,
    sign: Sign,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
    idp_keys: list[RSAKey],
    clock: FakeClock,
) -> None:
    verifier.verify(sign(practitioner_claims, key=idp_keys[0]))
    jwks_server.keys = [idp_keys[0], idp_keys[2]]
    practitioner_claims["jti"] = "new-key"
    token = sign(practitioner_claims, key=idp_keys[2])
    with pytest.raises(AuthError):
        verifier.verify(token)  # 0 s after the last fetch: not refetched yet
    clock.advance(15)
    assert verifier.verify(token).token_id == "new-key"
    assert jwks_server.requests == 2


def test_stale_keys_are_used_while_the_idp_is_down(
    verifier: TokenVerifier,
    sign: Sign,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
    clock: FakeClock,
) -> None:
    verifier.verify(sign(practitioner_claims))
    jwks_server.status = 503
    clock.advance(301)
    practitioner_claims.update(iat=int(clock()), nbf=int(clock()), exp=int(clock()) + 300)
    verifier.verify(sign(practitioner_claims))
    assert jwks_server.requests == 2  # it tried


def test_idp_down_from_the_start(
    verifier: TokenVerifier,
    sign: Sign,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
    clock: FakeClock,
) -> None:
    jwks_server.status = 500
    for _ in range(5):
        practitioner_claims["jti"] = str(clock())
        with pytest.raises(AuthError, match="unavailable"):
            verifier.verify(sign(practitioner_claims))
        clock.advance(1)
    assert jwks_server.requests == 1  # failures are rate-limited too
    jwks_server.status = 200
    clock.advance(15)
    verifier.verify(sign(practitioner_claims))


def test_unreachable_jwks(
    make_verifier: Callable[..., TokenVerifier],
    sign: Sign,
    practitioner_claims: dict[str, Any],
) -> None:
    # Port 9 (discard) on loopback: connection refused, no waiting.
    verifier = make_verifier(trusted_issuers={practitioner_claims["iss"]: "http://127.0.0.1:9/"})
    with pytest.raises(AuthError, match="unavailable"):
        verifier.verify(sign(practitioner_claims))


@pytest.mark.filterwarnings("ignore:Key size should be:joserfc.errors.SecurityWarning")
def test_symmetric_and_encryption_keys_are_never_used(idp_keys: list[RSAKey]) -> None:
    oct_key = OctKey.generate_key(256, {"kid": "shared-secret"})
    enc_key = RSAKey.generate_key(2048, {"kid": "for-encryption", "use": "enc"})
    short_key = RSAKey.generate_key(1024, {"kid": "too-short"})
    document = {
        "keys": [
            oct_key.as_dict(private=True),
            enc_key.as_dict(private=False),
            short_key.as_dict(private=False),
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {"kty": "PQC", "kid": "future"},
            "not a key",
            idp_keys[0].as_dict(private=False),
        ]
    }
    assert list(usable_signing_keys(document)) == ["k1"]


def test_jwks_with_no_usable_keys_is_not_cached(
    jwks_server: JwksServer, http_client: httpx.Client, clock: FakeClock
) -> None:
    jwks_server.keys = [OctKey.generate_key(256, {"kid": "k1"})]
    source = RemoteJwks(
        url=jwks_server.url,
        http_client=http_client,
        cache_seconds=300,
        min_refresh_seconds=15,
        clock=clock,
    )
    with pytest.raises(AuthError, match="unavailable"):
        source.get_key("k1")
