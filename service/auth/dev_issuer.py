"""A local token issuer for development and tests, shaped like HelseID, ID-porten and Maskinporten.

Its tokens are trusted only by a TokenVerifier given this issuer, which the server does only
with STAFETT_DEV_AUTH=1 (refused in production by Settings).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import orjson
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, Key

from service.auth.claims import (
    DEFAULT_ROLE_CLAIM,
    HELSEID_HPR,
    HELSEID_ORGNR_CHILD,
    HELSEID_ORGNR_PARENT,
    HELSEID_PID,
    HELSEID_SECURITY_LEVEL,
    ISO6523_AUTHORITY,
    ISO6523_ORGNR_PREFIX,
)
from service.identifiers import is_valid_fnr, is_valid_hpr, is_valid_orgnr

__all__ = ["DEV_ISSUER", "KEY_FILE_NAME", "DevIssuer"]

DEV_ISSUER: Final = "urn:stafett:dev-issuer"
KEY_FILE_NAME: Final = "dev-issuer-key.json"
_ALGORITHM: Final = "ES256"
_DEFAULT_CLIENT_ID: Final = "stafett-dev"


class DevIssuer:
    """Signs development tokens with a local ES256 key kept in `<data_dir>/dev-issuer-key.json`."""

    issuer: Final = DEV_ISSUER

    def __init__(self, private_key: ECKey, *, clock: Callable[[], float] = time.time) -> None:
        if not private_key.is_private or private_key.curve_name != "P-256":
            raise ValueError("the dev issuer needs a private P-256 EC key")
        private_key.ensure_kid()
        self._private_key = private_key
        self._public_key = ECKey.import_key(private_key.as_dict(private=False))
        self._clock = clock

    @classmethod
    def generate(cls, *, clock: Callable[[], float] = time.time) -> DevIssuer:
        """Return a dev issuer with a fresh in-memory key (nothing written to disk)."""
        key = ECKey.generate_key("P-256", {"alg": _ALGORITHM, "use": "sig"}, auto_kid=True)
        return cls(key, clock=clock)

    @classmethod
    def load_or_create(cls, data_dir: Path) -> DevIssuer:
        """Load the dev issuer key from data_dir, creating the folder and key on first use."""
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / KEY_FILE_NAME
        if not path.exists():
            _write_new_key(path, cls.generate()._private_key)
        return cls(_read_key(path))

    @property
    def key_id(self) -> str:
        """Return the `kid` the dev issuer signs with."""
        return str(self._private_key.kid)

    @property
    def public_key(self) -> Key:
        """Return the public verification key."""
        return self._public_key

    def public_jwks(self) -> dict[str, Any]:
        """Return the public key as a JWK Set document."""
        return {"keys": [dict(self._public_key.as_dict(private=False))]}

    def issue_practitioner(
        self,
        *,
        hpr: str | None,
        pid: str | None,
        organization: str,
        parent_organization: str | None = None,
        scopes: str = "user/*.cruds",
        name: str | None = None,
        lifetime_seconds: int = 3600,
        audience: str = "stafett",
        client_id: str = _DEFAULT_CLIENT_ID,
        roles: Sequence[str] = (),
    ) -> str:
        """Return a HelseID-shaped access token for an employee of organization."""
        if hpr is None and pid is None:
            raise ValueError("a practitioner needs an HPR number or a pid (fødselsnummer)")
        if hpr is not None and not is_valid_hpr(hpr):
            raise ValueError(f"HPR number {hpr!r} must be 1 to 9 digits")
        _check_pid(pid)
        _check_orgnr(organization, "organization")
        claims: dict[str, Any] = {
            "sub": _pseudonym(pid or f"hpr:{hpr}"),
            HELSEID_SECURITY_LEVEL: "4",
            "helseid://claims/identity/assurance_level": "high",
            # Duende IdentityServer (HelseID) emits `scope` as a JSON array.
            "scope": scopes.split(),
        }
        if pid is not None:
            claims[HELSEID_PID] = pid
        if hpr is not None:
            claims[HELSEID_HPR] = hpr
        if parent_organization is None:
            # Single-tenant HelseID clients get only the parent organisation.
            claims[HELSEID_ORGNR_PARENT] = organization
        else:
            _check_orgnr(parent_organization, "parent_organization")
            claims[HELSEID_ORGNR_PARENT] = parent_organization
            claims[HELSEID_ORGNR_CHILD] = organization
        if name:
            claims["name"] = name
        if roles:
            claims[DEFAULT_ROLE_CLAIM] = " ".join(roles)
        return self._sign(claims, lifetime_seconds, audience, client_id)

    def issue_citizen(
        self,
        *,
        pid: str,
        scopes: str = "patient/*.cruds",
        acr: str = "idporten-loa-high",
        name: str | None = None,
        lifetime_seconds: int = 3600,
        audience: str = "stafett",
        client_id: str = _DEFAULT_CLIENT_ID,
    ) -> str:
        """Return an ID-porten-shaped access token for a citizen (a guardian or a youth)."""
        _check_pid(pid)
        claims: dict[str, Any] = {
            "sub": _pseudonym(pid),
            "pid": pid,
            "acr": acr,
            "amr": ["BankID"],
            "client_amr": "private_key_jwt",
            "scope": scopes,
        }
        if name:
            claims["name"] = name
        return self._sign(claims, lifetime_seconds, audience, client_id)

    def issue_system(
        self,
        *,
        organization: str,
        scopes: str,
        supplier: str | None = None,
        lifetime_seconds: int = 3600,
        audience: str = "stafett",
        client_id: str = _DEFAULT_CLIENT_ID,
    ) -> str:
        """Return a Maskinporten-shaped access token for a system acting for organization."""
        _check_orgnr(organization, "organization")
        claims: dict[str, Any] = {
            "consumer": _iso6523(organization),
            "client_amr": "private_key_jwt",
            "token_type": "Bearer",
            "scope": scopes,
        }
        if supplier is not None:
            _check_orgnr(supplier, "supplier")
            claims["supplier"] = _iso6523(supplier)
        return self._sign(claims, lifetime_seconds, audience, client_id)

    def _sign(
        self, claims: dict[str, Any], lifetime_seconds: int, audience: str, client_id: str
    ) -> str:
        if lifetime_seconds <= 0:
            raise ValueError("lifetime_seconds must be positive")
        now = int(self._clock())
        claims |= {
            "iss": self.issuer,
            "aud": audience,
            "client_id": client_id,
            "iat": now,
            "nbf": now,
            "exp": now + lifetime_seconds,
            "jti": uuid.uuid4().hex,
        }
        header = {"alg": _ALGORITHM, "kid": self.key_id, "typ": "at+jwt"}
        return jwt.encode(header, claims, self._private_key, algorithms=[_ALGORITHM])


def _check_pid(pid: str | None) -> None:
    if pid is not None and not is_valid_fnr(pid):
        raise ValueError("pid is not a valid fødselsnummer or D-nummer (11 digits, 2 check digits)")


def _check_orgnr(value: str, what: str) -> None:
    if not is_valid_orgnr(value):
        raise ValueError(
            f"{what} {value!r} is not a valid organisation number (9 digits, mod-11 check digit)"
        )


def _iso6523(orgnr: str) -> dict[str, str]:
    return {"authority": ISO6523_AUTHORITY, "ID": f"{ISO6523_ORGNR_PREFIX}{orgnr}"}


def _pseudonym(value: str) -> str:
    # Real IdPs put a pseudonym, not the national id, in `sub`; so does the dev issuer.
    digest = hashlib.sha256(f"{DEV_ISSUER}|{value}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _write_new_key(path: Path, key: ECKey) -> None:
    """Write key to path readable by the owner only, without clobbering a concurrent writer."""
    data = orjson.dumps(dict(key.as_dict(private=True)))
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # os.open's mode is filtered by the umask; make it exact
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        # link() fails if the key appeared meanwhile (another process won the race): keep
        # theirs, so tokens it already issued stay verifiable.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        temporary.unlink()


def _read_key(path: Path) -> ECKey:
    mode = path.stat().st_mode
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PermissionError(
            f"{path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"run: chmod 600 {path}"
        )
    try:
        data = orjson.loads(path.read_bytes())
        key = ECKey.import_key(data)
    except (orjson.JSONDecodeError, JoseError, ValueError, TypeError) as error:
        raise ValueError(
            f"{path} is not a dev issuer key ({error}); delete it to create a new one"
        ) from error
    return key
