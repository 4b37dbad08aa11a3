"""Claim mapping for HelseID, ID-porten and Maskinporten token shapes (no crypto here)."""

from __future__ import annotations

from typing import Any

import pytest
from auth_support import HPR, ORGNR_KOMMUNE, ORGNR_UNIT, PID, PID_D_NUMBER

from service.auth import AuthError, InsufficientScope, Interaction, PrincipalKind
from service.auth.claims import principal_from_claims

ISSUER = "https://idp.test"
EXP = 2_000_000_000
ORGNR_SUPPLIER = "974760673"


def helseid_user(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "helseid-sub",
        "exp": EXP,
        "client_id": "journal",
        "scope": ["openid", "user/*.rs"],
        "helseid://claims/identity/pid": PID,
        "helseid://claims/hpr/hpr_number": HPR,
        "helseid://claims/client/claims/orgnr_parent": ORGNR_KOMMUNE,
        "helseid://claims/client/claims/orgnr_child": ORGNR_UNIT,
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def idporten_citizen(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "sub": "pairwise-sub",
        "exp": EXP,
        "pid": PID,
        "acr": "idporten-loa-high",
        "client_id": "family-portal",
        "client_amr": "private_key_jwt",
        # ID-porten names the *client's* organisation here; it must not make this an employee.
        "consumer": {"authority": "iso6523-actorid-upis", "ID": f"0192:{ORGNR_KOMMUNE}"},
        "scope": "openid patient/*.rs",
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def maskinporten(**extra: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "exp": EXP,
        "client_id": "0d9c0b7e-kindergarten-system",
        "client_amr": "private_key_jwt",
        "token_type": "Bearer",
        "consumer": {"authority": "iso6523-actorid-upis", "ID": f"0192:{ORGNR_UNIT}"},
        "supplier": {"authority": "iso6523-actorid-upis", "ID": f"0192:{ORGNR_SUPPLIER}"},
        "scope": "stafett:sync system/*.cruds",
    }
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


def test_helseid_practitioner() -> None:
    principal = principal_from_claims(helseid_user(name="Kari Nordmann", jti="j1"), issuer=ISSUER)
    assert principal.kind is PrincipalKind.PRACTITIONER
    assert principal.issuer == ISSUER
    assert principal.subject == "helseid-sub"
    assert principal.pid == PID
    assert principal.hpr == HPR
    assert principal.organization == ORGNR_UNIT  # the child (unit) is preferred
    assert principal.parent_organization == ORGNR_KOMMUNE
    assert principal.client_id == "journal"
    assert principal.token_id == "j1"
    assert principal.expires_at == EXP
    assert principal.display == "Kari Nordmann"
    assert str(principal.scopes) == "user/*.rs"
    assert principal.audit_identity == f"practitioner hpr:{HPR} org:{ORGNR_UNIT} client:journal"


def test_helseid_single_tenant_practitioner_uses_parent_organisation() -> None:
    claims = helseid_user(**{"helseid://claims/client/claims/orgnr_child": None})
    assert principal_from_claims(claims, issuer=ISSUER).organization == ORGNR_KOMMUNE


def test_staff_without_hpr_with_organisation_is_practitioner() -> None:
    # e.g. a teacher logged in through HelseID (or an IdP emitting the same claims)
    claims = helseid_user(**{"helseid://claims/hpr/hpr_number": None})
    principal = principal_from_claims(claims, issuer=ISSUER)
    assert principal.kind is PrincipalKind.PRACTITIONER
    assert principal.hpr is None
    assert (
        principal.audit_identity == f"practitioner sub:helseid-sub org:{ORGNR_UNIT} client:journal"
    )


def test_display_name_from_name_parts() -> None:
    claims = helseid_user(given_name="Kari", middle_name="", family_name="Nordmann")
    assert principal_from_claims(claims, issuer=ISSUER).display == "Kari Nordmann"


def test_practitioner_may_use_only_user_scopes() -> None:
    claims = helseid_user(scope="user/CarePlan.rs patient/*.cruds system/*.cruds")
    principal = principal_from_claims(claims, issuer=ISSUER)
    assert principal.may(Interaction.READ, "CarePlan")
    assert not principal.may(Interaction.CREATE, "CarePlan")
    assert not principal.may(Interaction.READ, "Task")
    with pytest.raises(InsufficientScope) as caught:
        principal.require(Interaction.UPDATE, "CarePlan")
    assert caught.value.status_code == 403
    assert 'error="insufficient_scope"' in caught.value.www_authenticate


def test_idporten_citizen() -> None:
    principal = principal_from_claims(idporten_citizen(), issuer=ISSUER)
    assert principal.kind is PrincipalKind.CITIZEN
    assert principal.pid == PID
    assert principal.organization is None
    assert principal.acr == "idporten-loa-high"
    assert principal.may(Interaction.SEARCH, "CarePlan")
    assert not principal.may(Interaction.CREATE, "CarePlan")
    assert PID not in principal.audit_identity
    assert PID not in repr(principal)


@pytest.mark.parametrize(
    "acr", ["idporten-loa-substantial", "idporten-loa-high", "Level3", "Level4"]
)
def test_citizen_accepted_levels(acr: str) -> None:
    assert principal_from_claims(idporten_citizen(acr=acr), issuer=ISSUER).acr == acr


def test_citizen_with_d_number() -> None:
    claims = idporten_citizen(pid=PID_D_NUMBER)
    assert principal_from_claims(claims, issuer=ISSUER).pid == PID_D_NUMBER


def test_citizen_user_scopes_grant_nothing() -> None:
    principal = principal_from_claims(idporten_citizen(scope="user/*.cruds"), issuer=ISSUER)
    assert principal.kind is PrincipalKind.CITIZEN
    assert not principal.may(Interaction.READ, "CarePlan")


def test_maskinporten_system() -> None:
    principal = principal_from_claims(maskinporten(), issuer=ISSUER)
    assert principal.kind is PrincipalKind.SYSTEM
    assert principal.organization == ORGNR_UNIT
    assert principal.supplier_organization == ORGNR_SUPPLIER
    assert principal.subject == "0d9c0b7e-kindergarten-system"  # no sub in Maskinporten
    assert principal.pid is None
    assert principal.may(Interaction.DELETE, "Task")
    assert (
        principal.audit_identity == f"system org:{ORGNR_UNIT} client:0d9c0b7e-kindergarten-system"
    )


def test_maskinporten_scp_list() -> None:
    claims = maskinporten(scope=None, scp=["system/CarePlan.rs"])
    principal = principal_from_claims(claims, issuer=ISSUER)
    assert principal.may(Interaction.READ, "CarePlan")
    assert not principal.may(Interaction.READ, "Task")


def test_helseid_client_credentials_is_system() -> None:
    claims = {
        "exp": EXP,
        "client_id": "helseid-machine",
        "scope": ["system/*.rs"],
        "helseid://claims/client/claims/orgnr_parent": ORGNR_KOMMUNE,
        "helseid://claims/client/claims/orgnr_supplier": ORGNR_SUPPLIER,
    }
    principal = principal_from_claims(claims, issuer=ISSUER)
    assert principal.kind is PrincipalKind.SYSTEM
    assert principal.organization == ORGNR_KOMMUNE
    assert principal.supplier_organization == ORGNR_SUPPLIER


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("bad pid", idporten_citizen(pid="15031510013"), "not a valid fødselsnummer"),
    (
        "bad helseid pid",
        helseid_user(**{"helseid://claims/identity/pid": "12345678901"}),
        "not a valid fødselsnummer",
    ),
    ("low acr", idporten_citizen(acr="idporten-loa-low"), "substantial or high"),
    ("legacy low acr", idporten_citizen(acr="Level2"), "substantial or high"),
    ("no acr", idporten_citizen(acr=None), "substantial or high"),
    ("citizen without sub", idporten_citizen(sub=None), "'sub'"),
    (
        "hpr without organisation",
        helseid_user(
            **{
                "helseid://claims/client/claims/orgnr_parent": None,
                "helseid://claims/client/claims/orgnr_child": None,
            }
        ),
        "no organisation",
    ),
    (
        "bad orgnr",
        helseid_user(**{"helseid://claims/client/claims/orgnr_child": "991825828"}),
        "orgnr_child' is not a valid organisation number",
    ),
    ("bad hpr", helseid_user(**{"helseid://claims/hpr/hpr_number": "12ab"}), "HPR"),
    (
        "two different pids",
        helseid_user(pid=PID_D_NUMBER),
        "two different pid claims",
    ),
    (
        "consumer with bad orgnr",
        maskinporten(consumer={"authority": "iso6523-actorid-upis", "ID": "0192:123456789"}),
        "consumer' is not a valid organisation number",
    ),
    (
        "consumer of another authority",
        maskinporten(consumer={"authority": "other", "ID": f"0192:{ORGNR_UNIT}"}),
        "ISO 6523",
    ),
    (
        "consumer outside Norway",
        maskinporten(consumer={"authority": "iso6523-actorid-upis", "ID": "0007:5567321707"}),
        "0192",
    ),
    ("scope of wrong type", maskinporten(scope=42), "scope claim"),
    ("nobody", {"exp": EXP, "sub": "x", "scope": "system/*.cruds"}, "neither a person"),
    ("no exp", {k: v for k, v in maskinporten().items() if k != "exp"}, "'exp'"),
]


@pytest.mark.parametrize(("case", "claims", "message"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refused(case: str, claims: dict[str, Any], message: str) -> None:
    with pytest.raises(AuthError, match=message) as caught:
        principal_from_claims(claims, issuer=ISSUER)
    # Messages go back to the caller and into logs: never the national identity number.
    assert PID not in caught.value.message
    assert "15031510013" not in caught.value.message


def test_scope_aliases_translate_idp_scopes_to_smart_scopes() -> None:
    # Real Maskinporten scopes are `<prefix>:<subscope>`; the mapping is configuration.
    aliases = {
        "kommune:stafett/fhir.read": "system/*.rs",
        "kommune:stafett/fhir.write": "system/Task.cu",
    }
    claims = maskinporten(scope="kommune:stafett/fhir.read kommune:stafett/fhir.write other:x")
    principal = principal_from_claims(claims, issuer=ISSUER, scope_aliases=aliases)
    assert str(principal.scopes) == "system/*.rs system/Task.cu"
    assert principal.may(Interaction.SEARCH, "CarePlan")
    assert principal.may(Interaction.UPDATE, "Task")
    assert not principal.may(Interaction.UPDATE, "CarePlan")


def test_without_aliases_prefixed_idp_scopes_grant_nothing() -> None:
    principal = principal_from_claims(
        maskinporten(scope="kommune:stafett/fhir.read"), issuer=ISSUER
    )
    assert not principal.scopes


def test_www_authenticate_is_ascii() -> None:
    header = AuthError('token pid is not a valid fødselsnummer "x"').www_authenticate
    assert header == (
        'Bearer error="invalid_token", error_description="token pid is not a valid fodselsnummer x"'
    )


def test_dpo_role_from_configured_claim() -> None:
    claims = {
        "sub": "x",
        "exp": 4_000_000_000,
        "helseid://claims/identity/pid": "01817010055",
        "helseid://claims/client/claims/orgnr_parent": "912837467",
        "scope": "user/*.rs",
        "kommune_roller": ["dpo"],
    }
    default = principal_from_claims(claims, issuer="i")
    assert not default.is_dpo
    configured = principal_from_claims(claims, issuer="i", role_claim="kommune_roller")
    assert configured.is_dpo
    assert configured.roles == frozenset({"dpo"})
