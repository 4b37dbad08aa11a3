"""TokenVerifier: a valid token verifies, and each kind of bad token is refused on its own."""

from __future__ import annotations

import hashlib
import hmac
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from auth_support import (
    IDP_ISSUER,
    ORGNR_UNIT,
    FakeClock,
    JwksServer,
    b64url,
    b64url_decode_json,
    b64url_json,
)
from joserfc.jwk import ECKey, OKPKey, RSAKey

from service.auth import AuthError, DevIssuer, Interaction, PrincipalKind, TokenVerifier

Sign = Callable[..., str]


def test_valid_token(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    principal = verifier.verify(sign(practitioner_claims))
    assert principal.kind is PrincipalKind.PRACTITIONER
    assert principal.issuer == IDP_ISSUER
    assert principal.organization == ORGNR_UNIT
    assert principal.may(Interaction.READ, "CarePlan")
    assert principal.may(Interaction.UPDATE, "Task")
    assert not principal.may(Interaction.DELETE, "Task")


def test_verified_principal_is_cached(
    verifier: TokenVerifier,
    sign: Sign,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
) -> None:
    token = sign(practitioner_claims)
    first = verifier.verify(token)
    assert verifier.verify(token) is first
    assert jwks_server.requests == 1


def test_cached_principal_does_not_outlive_the_token(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any], clock: FakeClock
) -> None:
    token = sign(practitioner_claims)  # exp = now + 300
    verifier.verify(token)
    clock.advance(300 + 31)  # past exp and the 30 s leeway
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(token)


def test_cache_entries_end_with_the_key_cache(
    make_verifier: Callable[..., TokenVerifier],
    sign: Sign,
    practitioner_claims: dict[str, Any],
    clock: FakeClock,
) -> None:
    verifier = make_verifier(jwks_cache_seconds=60)
    practitioner_claims["exp"] = int(clock()) + 3600
    token = sign(practitioner_claims)
    first = verifier.verify(token)
    clock.advance(61)
    assert verifier.verify(token) is not first  # verified afresh, against a refetched JWKS


def test_expired(verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]) -> None:
    practitioner_claims["exp"] = practitioner_claims["iat"] - 31  # beyond the 30 s leeway
    practitioner_claims["iat"] -= 600
    practitioner_claims["nbf"] -= 600
    with pytest.raises(AuthError, match="expired"):
        verifier.verify(sign(practitioner_claims))


def test_expiry_within_leeway_is_accepted(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    practitioner_claims["exp"] = practitioner_claims["iat"] - 10
    practitioner_claims["iat"] -= 600
    practitioner_claims["nbf"] -= 600
    verifier.verify(sign(practitioner_claims))


def test_not_yet_valid(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    practitioner_claims["nbf"] += 120
    with pytest.raises(AuthError, match="not yet valid"):
        verifier.verify(sign(practitioner_claims))


def test_issued_in_the_future(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    practitioner_claims["iat"] += 120
    with pytest.raises(AuthError, match="issued in the future"):
        verifier.verify(sign(practitioner_claims))


def test_wrong_issuer(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    practitioner_claims["iss"] = "https://evil.example"
    with pytest.raises(AuthError, match="issuer is not trusted"):
        verifier.verify(sign(practitioner_claims))


def test_missing_issuer(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    del practitioner_claims["iss"]
    with pytest.raises(AuthError, match="issuer is not trusted"):
        verifier.verify(sign(practitioner_claims))


def test_wrong_audience(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    practitioner_claims["aud"] = ["nhn:other-api", "unspecified"]
    with pytest.raises(AuthError, match="aud"):
        verifier.verify(sign(practitioner_claims))


def test_missing_audience(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    del practitioner_claims["aud"]
    with pytest.raises(AuthError, match="aud"):
        verifier.verify(sign(practitioner_claims))


def test_missing_exp(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    del practitioner_claims["exp"]
    with pytest.raises(AuthError, match="exp"):
        verifier.verify(sign(practitioner_claims))


def test_alg_none(verifier: TokenVerifier, practitioner_claims: dict[str, Any]) -> None:
    for alg in ("none", "None", "NONE"):
        header = b64url_json({"alg": alg, "typ": "JWT", "kid": "k1"})
        token = f"{header}.{b64url_json(practitioner_claims)}."
        with pytest.raises(AuthError, match="algorithm"):
            verifier.verify(token)


def test_hs256_signed_with_the_public_key(
    verifier: TokenVerifier, practitioner_claims: dict[str, Any], idp_keys: list[RSAKey]
) -> None:
    """The classic confusion attack: HMAC keyed with the IdP's (public) key bytes."""
    public_pem = idp_keys[0].as_pem(private=False)
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'kid': 'k1'})}.{b64url_json(practitioner_claims)}"
    )
    for secret in (public_pem, public_pem.strip()):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(AuthError, match="algorithm 'HS256' is not accepted"):
            verifier.verify(f"{signing_input}.{b64url(mac)}")


def test_unknown_kid(
    verifier: TokenVerifier,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
    sign: Sign,
) -> None:
    stranger = RSAKey.generate_key(2048, {"kid": "not-published"})
    with pytest.raises(AuthError, match="key the issuer does not publish"):
        verifier.verify(sign(practitioner_claims, key=stranger))
    assert jwks_server.requests == 1  # fetched once; the kid was not there


def test_known_kid_but_another_key(
    verifier: TokenVerifier, practitioner_claims: dict[str, Any], sign: Sign
) -> None:
    impostor = RSAKey.generate_key(2048, {"kid": "k1"})  # claims the IdP's kid
    with pytest.raises(AuthError, match="signature is invalid"):
        verifier.verify(sign(practitioner_claims, key=impostor))


def test_algorithm_that_does_not_fit_the_key(
    verifier: TokenVerifier, practitioner_claims: dict[str, Any], sign: Sign
) -> None:
    ec_key = ECKey.generate_key("P-256", {"kid": "k1"})  # header says ES256, JWKS has RSA k1
    with pytest.raises(AuthError, match="does not match"):
        verifier.verify(sign(practitioner_claims, key=ec_key, alg="ES256"))


def test_tampered_payload(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    header, payload, signature = sign(practitioner_claims).split(".")
    claims = b64url_decode_json(payload)
    claims["scope"] = ["user/*.cruds"]  # try to widen the scopes
    with pytest.raises(AuthError, match="signature is invalid"):
        verifier.verify(f"{header}.{b64url_json(claims)}.{signature}")


def test_missing_kid(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    header, payload, signature = sign(practitioner_claims).split(".")
    header_json = b64url_decode_json(header)
    del header_json["kid"]
    with pytest.raises(AuthError, match="kid"):
        verifier.verify(f"{b64url_json(header_json)}.{payload}.{signature}")


def test_critical_header_is_refused(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    token = sign(practitioner_claims, b64=False, crit=["b64"])
    with pytest.raises(AuthError, match="critical"):
        verifier.verify(token)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c", "a.b.c.d", "ü.ä.ö", "eyJhbGciOiJSUzI1NiJ9.bm90IGpzb24.c2ln"],
)
def test_garbage(verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(AuthError):
        verifier.verify(token)


def test_low_acr_citizen(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any], clock: FakeClock
) -> None:
    now = int(clock())
    claims = {
        "iss": IDP_ISSUER,
        "aud": "stafett",
        "sub": "pairwise",
        "iat": now,
        "exp": now + 120,
        "pid": practitioner_claims["helseid://claims/identity/pid"],
        "acr": "idporten-loa-low",
        "scope": "patient/*.rs",
    }
    with pytest.raises(AuthError, match="substantial or high"):
        verifier.verify(sign(claims))
    claims["acr"] = "idporten-loa-substantial"
    assert verifier.verify(sign(claims)).kind is PrincipalKind.CITIZEN


def test_bad_fnr(verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]) -> None:
    practitioner_claims["helseid://claims/identity/pid"] = "15031510013"
    with pytest.raises(AuthError, match="fødselsnummer") as caught:
        verifier.verify(sign(practitioner_claims))
    assert "15031510013" not in caught.value.message


def test_dev_tokens_are_refused_without_the_dev_issuer(
    verifier: TokenVerifier, dev_issuer: DevIssuer
) -> None:
    token = dev_issuer.issue_system(organization=ORGNR_UNIT, scopes="system/*.cruds")
    with pytest.raises(AuthError, match="issuer is not trusted"):
        verifier.verify(token)


def test_dev_issuer_name_cannot_be_configured_as_remote(
    make_verifier: Callable[..., TokenVerifier], dev_issuer: DevIssuer, jwks_server: JwksServer
) -> None:
    with pytest.raises(ValueError, match="reserved"):
        make_verifier(trusted_issuers={dev_issuer.issuer: jwks_server.url}, dev_issuer=dev_issuer)


def test_plain_http_jwks_is_refused_unless_loopback(
    make_verifier: Callable[..., TokenVerifier],
) -> None:
    with pytest.raises(ValueError, match="https"):
        make_verifier(trusted_issuers={IDP_ISSUER: "http://idp.example/jwks"})
    make_verifier(trusted_issuers={IDP_ISSUER: "https://idp.example/jwks"})  # lazily fetched


def test_auth_error_challenge_header(
    verifier: TokenVerifier, sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    practitioner_claims["aud"] = "other"
    with pytest.raises(AuthError) as caught:
        verifier.verify(sign(practitioner_claims))
    assert caught.value.status_code == 401
    assert caught.value.www_authenticate.startswith(
        'Bearer error="invalid_token", error_description="'
    )


def test_scope_aliases_are_applied(
    make_verifier: Callable[..., TokenVerifier], sign: Sign, practitioner_claims: dict[str, Any]
) -> None:
    verifier = make_verifier(scope_aliases={"kommune:stafett/user": "user/CarePlan.cruds"})
    practitioner_claims["scope"] = ["openid", "kommune:stafett/user"]
    principal = verifier.verify(sign(practitioner_claims))
    assert principal.may(Interaction.DELETE, "CarePlan")
    assert not principal.may(Interaction.READ, "Task")


@pytest.mark.filterwarnings("error")  # EdDSA must not emit joserfc's deprecation warning per call
@pytest.mark.parametrize(
    ("alg", "make_key"),
    [
        ("PS256", lambda: RSAKey.generate_key(2048, {"kid": "ps"})),
        ("ES256", lambda: ECKey.generate_key("P-256", {"kid": "es256"})),
        ("ES384", lambda: ECKey.generate_key("P-384", {"kid": "es384"})),
        ("EdDSA", lambda: OKPKey.generate_key("Ed25519", {"kid": "ed"})),
        ("Ed25519", lambda: OKPKey.generate_key("Ed25519", {"kid": "ed2"})),
    ],
)
def test_other_asymmetric_algorithms(
    verifier: TokenVerifier,
    sign: Sign,
    practitioner_claims: dict[str, Any],
    jwks_server: JwksServer,
    alg: str,
    make_key: Callable[[], Any],
) -> None:
    key = make_key()
    jwks_server.keys = [key]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # joserfc warns when *signing* with EdDSA; fine in a test
        token = sign(practitioner_claims, key=key, alg=alg)
    assert verifier.verify(token).hpr is not None
