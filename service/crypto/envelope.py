"""Envelope encryption: a fresh AES-256-GCM data key per sealed value, wrapped by a KEK.

Format (version 1), all lengths in bytes::

    0x01 | len(key id):1 | key id | len(wrapped DEK):2 big-endian | wrapped DEK
         | nonce:12 | ciphertext + GCM tag:16

The data's associated data is the format tag plus a *context* naming where the value lives
(e.g. ``CarePlan/7f3c/_history/2``), so a ciphertext copied to another row does not open. The
key id is stored in clear so rotation can find and re-wrap values without decrypting the data.
"""

from __future__ import annotations

import base64
import os
import struct
import threading

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.crypto.errors import SealBroken
from service.crypto.keys import KeyProvider, generate_key

__all__ = ["FORMAT_VERSION", "TEXT_PREFIX", "Envelope", "key_id_of"]

FORMAT_VERSION = 1
_NONCE_BYTES = 12
_DATA_AAD = b"stafett-sealed\x01"
_CACHE_SIZE = 4096
#: Prefix of a sealed value kept in a text column (the outbox): prefix + base64 of the value.
TEXT_PREFIX = "stafett-sealed:"


def _parse(blob: bytes) -> tuple[str, bytes, bytes, bytes]:
    """Split a sealed value into key id, wrapped DEK, nonce and ciphertext."""
    try:
        if blob[0] != FORMAT_VERSION:
            raise SealBroken(f"unknown ciphertext format {blob[0]} (this version reads 1)")
        kid_len = blob[1]
        key_id = blob[2 : 2 + kid_len].decode("ascii")
        at = 2 + kid_len
        (wrapped_len,) = struct.unpack_from(">H", blob, at)
        at += 2
        wrapped = blob[at : at + wrapped_len]
        at += wrapped_len
        nonce = blob[at : at + _NONCE_BYTES]
        ciphertext = blob[at + _NONCE_BYTES :]
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise SealBroken("the ciphertext is truncated or malformed") from exc
    if len(wrapped) != wrapped_len or len(nonce) != _NONCE_BYTES or len(ciphertext) < 16:
        raise SealBroken("the ciphertext is truncated or malformed")
    return key_id, wrapped, nonce, ciphertext


def _pack(key_id: str, wrapped: bytes, nonce: bytes, ciphertext: bytes) -> bytes:
    kid = key_id.encode("ascii")
    return (
        bytes((FORMAT_VERSION, len(kid)))
        + kid
        + struct.pack(">H", len(wrapped))
        + wrapped
        + nonce
        + ciphertext
    )


def key_id_of(blob: bytes) -> str:
    """Return the id of the KEK a sealed value's data key is wrapped with."""
    return _parse(blob)[0]


class Envelope:
    """Seals and opens values with per-value data keys wrapped by the provider's KEKs."""

    def __init__(self, provider: KeyProvider, *, cache_size: int = _CACHE_SIZE) -> None:
        self.provider = provider
        # unwrapped data keys by wrapped form: a KMS provider is then called once per version
        # read, not once per read; bounded, and cleared whole when full (cheap, rarely hit)
        self._cache: dict[bytes, AESGCM] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def active_key_id(self) -> str:
        """Return the id of the KEK new values are sealed under."""
        return self.provider.active_key_id()

    def seal(self, plaintext: bytes, *, context: str, key_id: str | None = None) -> bytes:
        """Encrypt a value for the place `context` names, under the active (or given) KEK."""
        key_id = key_id or self.provider.active_key_id()
        dek = generate_key()
        nonce = os.urandom(_NONCE_BYTES)
        ciphertext = AESGCM(dek).encrypt(nonce, plaintext, _DATA_AAD + context.encode())
        return _pack(key_id, self.provider.wrap(key_id, dek), nonce, ciphertext)

    def open(self, blob: bytes, *, context: str) -> bytes:
        """Decrypt a sealed value; raise SealBroken if it was altered or belongs elsewhere."""
        key_id, wrapped, nonce, ciphertext = _parse(blob)
        cipher = self._data_cipher(key_id, wrapped)
        try:
            return cipher.decrypt(nonce, ciphertext, _DATA_AAD + context.encode())
        except InvalidTag as exc:
            raise SealBroken(
                f"the encrypted data of {context} failed its integrity check: it was altered "
                "or copied from another row"
            ) from exc

    def rewrap(self, blob: bytes, *, key_id: str | None = None) -> bytes:
        """Re-wrap a value's data key under another KEK (the active one by default)."""
        old_key, wrapped, nonce, ciphertext = _parse(blob)
        target = key_id or self.provider.active_key_id()
        if target == old_key:
            return blob
        dek = self.provider.unwrap(old_key, wrapped)
        return _pack(target, self.provider.wrap(target, dek), nonce, ciphertext)

    def seal_text(self, plaintext: bytes, *, context: str) -> str:
        """Seal a value for a text column: the prefix and the base64 of the sealed bytes."""
        return TEXT_PREFIX + base64.b64encode(self.seal(plaintext, context=context)).decode()

    def open_text(self, value: str, *, context: str) -> bytes:
        """Open a value sealed by `seal_text`."""
        return self.open(base64.b64decode(value[len(TEXT_PREFIX) :]), context=context)

    def reencrypt(self, blob: bytes, *, context: str) -> bytes:
        """Decrypt and seal again with a new data key under the active KEK."""
        return self.seal(self.open(blob, context=context), context=context)

    def _data_cipher(self, key_id: str, wrapped: bytes) -> AESGCM:
        cache_key = key_id.encode() + b"\x00" + wrapped
        cipher = self._cache.get(cache_key)
        if cipher is None:
            cipher = AESGCM(self.provider.unwrap(key_id, wrapped))
            with self._lock:
                if len(self._cache) >= self._cache_size:
                    self._cache.clear()
                self._cache[cache_key] = cipher
        return cipher
