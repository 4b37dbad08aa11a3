"""Key encryption keys (KEKs): the `KeyProvider` seam and the local keyring implementation.

A KEK never touches data: it wraps the per-version data keys (DEKs) of `service.crypto.envelope`.
`KeyProvider` is the seam for a KMS or HSM (wrap and unwrap happen where the key lives); the
local provider holds the KEKs in memory, read from a keyring file and/or the environment.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.crypto.errors import KeyringInvalid, KeyUnavailable, SealBroken

__all__ = [
    "DEV_KEYRING_NAME",
    "KeyProvider",
    "Keyring",
    "LocalKeyProvider",
    "generate_key",
    "generate_key_id",
    "parse_env_keys",
    "read_keyring",
    "write_keyring",
]

_log = logging.getLogger("stafett.crypto")
DEV_KEYRING_NAME = "encryption-keyring.json"
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_KEY_BYTES = 32  # AES-256
_NONCE_BYTES = 12
_WRAP_AAD = b"stafett-dek\x01"
# a keyring file is re-read at most this often, so every process picks up a rotation by itself
_RELOAD_S = 5.0


@runtime_checkable
class KeyProvider(Protocol):
    """Holds the key encryption keys and wraps/unwraps data keys with them.

    Implement this for a KMS or HSM: `wrap` and `unwrap` are then calls to the service that
    holds the KEK (the envelope caches unwrapped data keys, so reads of the same version do not
    call it again). Key ids are stored beside every ciphertext and must never be reused for
    different key material.
    """

    def active_key_id(self) -> str:
        """Return the id of the key new data keys are wrapped with."""
        ...

    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of every key this provider can unwrap with."""
        ...

    def wrap(self, key_id: str, dek: bytes) -> bytes:
        """Encrypt a data key under a key encryption key."""
        ...

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """Decrypt a data key; raise KeyUnavailable or SealBroken."""
        ...


@dataclass(frozen=True, slots=True)
class Keyring:
    """KEKs by id and the one that wraps new data keys."""

    keys: Mapping[str, bytes]
    active: str


def generate_key() -> bytes:
    """Return a fresh random 256-bit key."""
    return secrets.token_bytes(_KEY_BYTES)


def generate_key_id() -> str:
    """Return a new key id that sorts by creation time, e.g. `k20261122T1337-3fa9`."""
    return f"k{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def _check_key(key_id: str, material: bytes, source: str) -> None:
    if not _KEY_ID.match(key_id):
        raise KeyringInvalid(f"{source}: key id {key_id!r} must be 1-64 of A-Z a-z 0-9 . _ -")
    if len(material) != _KEY_BYTES:
        raise KeyringInvalid(
            f"{source}: key {key_id!r} must be {_KEY_BYTES} bytes (base64), not {len(material)}"
        )


def _decode(value: str, key_id: str, source: str) -> bytes:
    try:
        return base64.b64decode(value.strip(), validate=True)
    except ValueError as exc:
        raise KeyringInvalid(f"{source}: key {key_id!r} is not valid base64") from exc


def parse_env_keys(value: str) -> dict[str, bytes]:
    """Parse `kid:base64,kid:base64` (STAFETT_ENCRYPTION_KEYS) into keys by id, in order."""
    keys: dict[str, bytes] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key_id, colon, encoded = item.strip().partition(":")
        if not colon:
            raise KeyringInvalid("STAFETT_ENCRYPTION_KEYS: expected kid:base64key[,kid:base64key]")
        material = _decode(encoded, key_id, "STAFETT_ENCRYPTION_KEYS")
        _check_key(key_id, material, "STAFETT_ENCRYPTION_KEYS")
        keys[key_id] = material
    return keys


def read_keyring(path: Path) -> Keyring:
    """Read a keyring file: `{"active": kid, "keys": {kid: base64}}`."""
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise KeyringInvalid(f"cannot read the keyring {path}: {exc}") from exc
    raw = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(raw, dict) or not raw:
        raise KeyringInvalid(f"{path}: expected {{'active': kid, 'keys': {{kid: base64}}}}")
    keys = {}
    for key_id, encoded in raw.items():
        material = _decode(str(encoded), key_id, str(path))
        _check_key(key_id, material, str(path))
        keys[key_id] = material
    active = document.get("active")
    if active not in keys:
        raise KeyringInvalid(f"{path}: the active key {active!r} is not in the keyring")
    return Keyring(keys=keys, active=str(active))


def write_keyring(path: Path, keyring: Keyring) -> None:
    """Write a keyring file atomically, readable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "active": keyring.active,
        "keys": {kid: base64.b64encode(key).decode() for kid, key in keyring.keys.items()},
    }
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class LocalKeyProvider:
    """KEKs held in process memory, from a keyring file and/or `kid:base64` pairs.

    A keyring file is re-read when it changes (checked every few seconds) and whenever data
    names a key id not yet known, so a rotation reaches running processes without a restart.
    """

    def __init__(
        self,
        *,
        env_keys: Mapping[str, bytes] | None = None,
        keyring_file: Path | None = None,
        active: str | None = None,
    ) -> None:
        self._env_keys = dict(env_keys or {})
        self._file = keyring_file
        self._configured_active = active
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._checked = 0.0
        self._keys: dict[str, bytes] = {}
        self._active = ""
        self._wrappers: dict[str, AESGCM] = {}
        self._load()

    @property
    def keyring_file(self) -> Path | None:
        """Return the keyring file this provider reads, if any."""
        return self._file

    def _load(self) -> None:
        keys = dict(self._env_keys)
        file_active: str | None = None
        if self._file is not None:
            keyring = read_keyring(self._file)
            for key_id, material in keyring.keys.items():
                if key_id in keys and keys[key_id] != material:
                    raise KeyringInvalid(
                        f"key id {key_id!r} has different material in {self._file} and "
                        "STAFETT_ENCRYPTION_KEYS; a key id must name one key only"
                    )
                keys[key_id] = material
            file_active = keyring.active
            self._mtime = self._file.stat().st_mtime
        if not keys:
            raise KeyringInvalid("no key encryption keys are configured")
        active = self._configured_active or file_active or list(self._env_keys)[-1]
        if active not in keys:
            raise KeyringInvalid(f"the active key {active!r} is not among the configured keys")
        self._keys, self._active = keys, active
        self._wrappers = {key_id: AESGCM(material) for key_id, material in keys.items()}
        self._checked = time.monotonic()

    def _refresh(self, *, force: bool = False) -> None:
        if self._file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < _RELOAD_S:
            return
        with self._lock:
            self._checked = now
            try:
                changed = self._file.stat().st_mtime != self._mtime
            except OSError:
                return  # keep the keys we have; a vanished file is reported on the next start
            if not changed and not force:
                return
            try:
                self._load()
            except KeyringInvalid:
                if force:
                    raise
                # a half-edited file must not stop every write: keep the keys already loaded
                _log.exception("the keyring %s cannot be read; keeping the loaded keys", self._file)

    def reload(self) -> None:
        """Re-read the keyring file now."""
        self._refresh(force=True)

    def active_key_id(self) -> str:
        """Return the id of the key new data keys are wrapped with."""
        self._refresh()
        return self._active

    def key_ids(self) -> tuple[str, ...]:
        """Return the ids of every configured key."""
        return tuple(self._keys)

    def _wrapper(self, key_id: str) -> AESGCM:
        wrapper = self._wrappers.get(key_id)
        if wrapper is None:
            self._refresh(force=True)  # a rotation in another process may have added it
            wrapper = self._wrappers.get(key_id)
        if wrapper is None:
            raise KeyUnavailable(
                f"data is encrypted with key {key_id!r}, which is not configured "
                "(STAFETT_ENCRYPTION_KEYS or the keyring file)"
            )
        return wrapper

    def wrap(self, key_id: str, dek: bytes) -> bytes:
        """Encrypt a data key under a KEK (AES-256-GCM, the key id as associated data)."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._wrapper(key_id).encrypt(nonce, dek, _WRAP_AAD + key_id.encode())

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        """Decrypt a data key wrapped by `wrap`."""
        wrapper = self._wrapper(key_id)
        try:
            return wrapper.decrypt(
                wrapped[:_NONCE_BYTES], wrapped[_NONCE_BYTES:], _WRAP_AAD + key_id.encode()
            )
        except InvalidTag as exc:
            raise SealBroken(
                f"the data key wrapped with {key_id!r} does not open: the configured key "
                f"{key_id!r} is not the one the data was encrypted with, or the row was altered"
            ) from exc
