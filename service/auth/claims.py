"""Map the verified claims of HelseID, ID-porten and Maskinporten tokens to a Principal.

The rule, decided by identity claims and never by scopes (a client chooses which scopes it
asks for, so scopes must not decide who the caller is):

1. A person (`pid` or HPR number) plus an employer organisation (HelseID `orgnr_child` or
   `orgnr_parent`) is a PRACTITIONER. This covers health personnel and, through HelseID or an
   IdP emitting the same claims, municipal staff without HPR (teachers, kindergarten staff).
2. An HPR number without an organisation is refused: consent is decided per organisation.
3. A `pid` without an employer organisation is a CITIZEN, who must have logged in at
   ID-porten substantial or high: the log holds children's welfare data. ID-porten's
   `consumer` claim names the *client's* organisation, not an employer, so it does not count.
4. No person but an organisation (Maskinporten `consumer`, or a HelseID client-credentials
   token's `orgnr_*`) is a SYSTEM.
5. Anything else is refused.

Claim references: HelseID https://utviklerportal.nhn.no (Teknisk referanse, Claims);
ID-porten and Maskinporten https://docs.digdir.no (access token reference).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from service.auth.errors import AuthError
from service.auth.principal import Principal, PrincipalKind
from service.auth.scopes import ScopeSet
from service.identifiers import is_valid_fnr, is_valid_hpr, is_valid_orgnr

__all__ = [
    "CITIZEN_ACR_VALUES",
    "DEFAULT_ROLE_CLAIM",
    "HELSEID_HPR",
    "HELSEID_ORGNR_CHILD",
    "HELSEID_ORGNR_PARENT",
    "HELSEID_ORGNR_SUPPLIER",
    "HELSEID_PID",
    "HELSEID_SECURITY_LEVEL",
    "ISO6523_AUTHORITY",
    "ISO6523_ORGNR_PREFIX",
    "principal_from_claims",
]

#: Claim carrying Stafett roles (space-separated string or list), e.g. "dpo".
DEFAULT_ROLE_CLAIM = "stafett_roles"
HELSEID_PID = "helseid://claims/identity/pid"
HELSEID_HPR = "helseid://claims/hpr/hpr_number"
HELSEID_SECURITY_LEVEL = "helseid://claims/identity/security_level"
HELSEID_ORGNR_PARENT = "helseid://claims/client/claims/orgnr_parent"
HELSEID_ORGNR_CHILD = "helseid://claims/client/claims/orgnr_child"
HELSEID_ORGNR_SUPPLIER = "helseid://claims/client/claims/orgnr_supplier"
IDPORTEN_PID = "pid"
ISO6523_AUTHORITY = "iso6523-actorid-upis"
ISO6523_ORGNR_PREFIX = "0192:"  # ICD 0192 = Enhetsregisteret (Norwegian organisation number)

#: ID-porten levels a citizen must log in with; Level3/Level4 are the pre-2023 names.
CITIZEN_ACR_VALUES = frozenset(
    {"idporten-loa-substantial", "idporten-loa-high", "Level3", "Level4"}
)


def principal_from_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    scope_aliases: Mapping[str, str] | None = None,
    role_claim: str = DEFAULT_ROLE_CLAIM,
) -> Principal:
    """Build the Principal for verified claims, or raise AuthError naming the bad claim.

    scope_aliases maps an IdP's own scope names to SMART scopes, e.g.
    {"kommune:stafett/system.write": "system/*.cud"}: Maskinporten, ID-porten and HelseID
    scopes are named `<prefix>:<name>` by the IdP, so they cannot carry SMART syntax.
    """
    pid = _pid(claims)
    hpr = _hpr(claims)
    child = _orgnr(claims, HELSEID_ORGNR_CHILD)
    parent = _orgnr(claims, HELSEID_ORGNR_PARENT)
    employer = child or parent
    common: dict[str, Any] = {
        "issuer": issuer,
        "scopes": _scopes(claims, scope_aliases or {}),
        "expires_at": _expires_at(claims),
        "client_id": _optional_str(claims, "client_id"),
        "token_id": _optional_str(claims, "jti"),
        "acr": _optional_str(claims, "acr"),
        "display": _display_name(claims),
    }
    if (pid or hpr) and employer:
        return Principal(
            kind=PrincipalKind.PRACTITIONER,
            subject=_required_sub(claims),
            pid=pid,
            hpr=hpr,
            organization=employer,
            parent_organization=parent,
            supplier_organization=_orgnr(claims, HELSEID_ORGNR_SUPPLIER),
            # roles (e.g. "dpo") only ever widen what a practitioner may audit, never the log
            roles=_roles(claims, role_claim),
            **common,
        )
    if hpr:
        raise AuthError("practitioner token has no organisation claim (orgnr_child/orgnr_parent)")
    if pid:
        if common["acr"] not in CITIZEN_ACR_VALUES:
            raise AuthError(
                "citizen token needs ID-porten level substantial or high (acr "
                "idporten-loa-substantial or idporten-loa-high)"
            )
        return Principal(
            kind=PrincipalKind.CITIZEN, subject=_required_sub(claims), pid=pid, **common
        )
    consumer = _iso6523_orgnr(claims, "consumer")
    organization = employer or consumer
    if organization:
        supplier = _iso6523_orgnr(claims, "supplier") or _orgnr(claims, HELSEID_ORGNR_SUPPLIER)
        # Maskinporten tokens carry no `sub`; client_id then names the calling system.
        subject = _optional_str(claims, "sub") or common["client_id"] or organization
        return Principal(
            kind=PrincipalKind.SYSTEM,
            subject=subject,
            organization=organization,
            parent_organization=parent,
            supplier_organization=supplier,
            **common,
        )
    raise AuthError("token identifies neither a person nor an organisation")


def _optional_str(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise AuthError(f"token claim '{name}' must be a non-empty string")
    return value


def _expires_at(claims: Mapping[str, Any]) -> int:
    value = claims.get("exp")
    # bool is an int subclass; `"exp": true` must not pass as 1970-01-01T00:00:01.
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AuthError("token has no numeric 'exp' claim")
    return int(value)


def _required_sub(claims: Mapping[str, Any]) -> str:
    subject = _optional_str(claims, "sub")
    if subject is None:
        raise AuthError("token has no 'sub' claim")
    return subject


def _pid(claims: Mapping[str, Any]) -> str | None:
    helseid, idporten = claims.get(HELSEID_PID), claims.get(IDPORTEN_PID)
    if helseid is not None and idporten is not None and helseid != idporten:
        raise AuthError("token carries two different pid claims")
    pid = helseid if helseid is not None else idporten
    if pid is None:
        return None
    # Never echo the value: it is a national identity number.
    if not is_valid_fnr(pid):
        raise AuthError("token pid is not a valid fødselsnummer or D-nummer")
    return str(pid)


def _hpr(claims: Mapping[str, Any]) -> str | None:
    value = claims.get(HELSEID_HPR)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not is_valid_hpr(value):
        raise AuthError(f"token claim '{HELSEID_HPR}' is not an HPR number")
    return str(value)


def _orgnr(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not is_valid_orgnr(value):
        raise AuthError(f"token claim '{name}' is not a valid organisation number")
    return str(value)


def _iso6523_orgnr(claims: Mapping[str, Any], name: str) -> str | None:
    """Return the orgnr of a Maskinporten `{"authority": ..., "ID": "0192:<orgnr>"}` claim."""
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping) or value.get("authority") != ISO6523_AUTHORITY:
        raise AuthError(f"token claim '{name}' is not an ISO 6523 organisation identifier")
    identifier = value.get("ID")
    if not isinstance(identifier, str) or not identifier.startswith(ISO6523_ORGNR_PREFIX):
        raise AuthError(f"token claim '{name}' is not a Norwegian organisation (0192:<orgnr>)")
    orgnr = identifier.removeprefix(ISO6523_ORGNR_PREFIX)
    if not is_valid_orgnr(orgnr):
        raise AuthError(f"token claim '{name}' is not a valid organisation number")
    return orgnr


def _scopes(claims: Mapping[str, Any], aliases: Mapping[str, str]) -> ScopeSet:
    # RFC 9068 and Maskinporten/ID-porten use `scope` (space-separated string); Duende-based
    # HelseID emits `scope` as a JSON array; some IdPs (Entra ID) use `scp`.
    value = claims.get("scope", claims.get("scp"))
    if value is None:
        return ScopeSet()
    if isinstance(value, str):
        items: list[str] = value.split()
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = value
    else:
        raise AuthError("token scope claim must be a string or a list of strings")
    return ScopeSet.parse([smart for item in items for smart in aliases.get(item, item).split()])


def _display_name(claims: Mapping[str, Any]) -> str | None:
    name = claims.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()
    parts = [claims.get(key) for key in ("given_name", "middle_name", "family_name")]
    joined = " ".join(part.strip() for part in parts if isinstance(part, str) and part.strip())
    return joined or None


def _roles(claims: Mapping[str, Any], role_claim: str) -> frozenset[str]:
    value = claims.get(role_claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    if value is None:
        return frozenset()
    raise AuthError(f"claim {role_claim!r} must be a string or a list of strings")
