"""Ed25519 keys of the audit chain: the sealer's signing key and the keys verify accepts.

The private key signs checkpoints and lives outside the database (a file or an environment
setting, so someone with database access alone cannot re-sign a rewritten chain); verifying
needs only public keys. Without a configured key the embedded mode generates a development
key under the data directory, as the development token issuer does; production refuses that.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from service.config import Settings

__all__ = [
    "DEV_KEY_FILE",
    "AuditKeyError",
    "key_id",
    "load_public_key",
    "load_signing_key",
    "parse_private_key",
    "private_pem",
    "public_pem",
    "verification_keys",
]

DEV_KEY_FILE: Final = "audit-signing-key.pem"


class AuditKeyError(ValueError):
    """The audit signing or verification key is missing or not an Ed25519 key."""


def key_id(key: Ed25519PublicKey) -> str:
    """Return the key's id: the first 16 hex digits of SHA-256 over the raw public key."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def parse_private_key(data: bytes) -> Ed25519PrivateKey:
    """Return the Ed25519 private key of a PEM (PKCS#8) document."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise AuditKeyError(f"not a PEM private key without password: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyError("the audit signing key must be an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Return the Ed25519 public key in a PEM file (a private key file gives its public key)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AuditKeyError(f"cannot read {path}: {exc.strerror}") from exc
    if b"PRIVATE KEY" in data:
        return parse_private_key(data).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise AuditKeyError(f"{path} is not a PEM public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyError(f"{path} is not an Ed25519 public key")
    return key


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """Return the private key as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: Ed25519PublicKey) -> str:
    """Return the public key as SubjectPublicKeyInfo PEM."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def _configured_key(settings: Settings) -> Ed25519PrivateKey | None:
    if settings.audit_signing_key is not None:
        return parse_private_key(settings.audit_signing_key.get_secret_value().encode())
    if settings.audit_signing_key_file is not None:
        try:
            return parse_private_key(settings.audit_signing_key_file.read_bytes())
        except OSError as exc:
            raise AuditKeyError(
                f"STAFETT_AUDIT_SIGNING_KEY_FILE: cannot read {settings.audit_signing_key_file}: "
                f"{exc.strerror}"
            ) from exc
    return None


def load_signing_key(settings: Settings, *, create: bool = True) -> Ed25519PrivateKey:
    """Return the configured signing key, or the development key under data_dir (not production)."""
    key = _configured_key(settings)
    if key is not None:
        return key
    if settings.environment == "production":
        raise AuditKeyError(
            "production needs an audit signing key: set STAFETT_AUDIT_SIGNING_KEY_FILE to an "
            "Ed25519 private key in PEM (openssl genpkey -algorithm ed25519)"
        )
    path = settings.data_dir / DEV_KEY_FILE
    if not path.exists():
        if not create:
            raise AuditKeyError(f"no audit signing key configured and no {path}")
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes starting at once must not each write (and sign with) a key
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as file:
                file.write(private_pem(Ed25519PrivateKey.generate()))
    return parse_private_key(path.read_bytes())


def verification_keys(
    settings: Settings, public_keys: Iterable[Path] = ()
) -> dict[str, Ed25519PublicKey]:
    """Return key id -> public key: the given files, else the signing key's and retired ones."""
    keys = [load_public_key(path) for path in public_keys]
    if not keys:
        # without one, verify reports every checkpoint as signed by an unknown key
        with contextlib.suppress(AuditKeyError):
            keys.append(load_signing_key(settings, create=False).public_key())
        keys.extend(load_public_key(path) for path in settings.audit_verify_keys)
    return {key_id(key): key for key in keys}
