"""Errors of encryption at rest: one hierarchy, each message saying what an operator should do."""

from __future__ import annotations

__all__ = ["CryptoError", "KeyUnavailable", "KeyringInvalid", "SealBroken"]


class CryptoError(Exception):
    """Base of every encryption-at-rest error."""


class KeyringInvalid(CryptoError):
    """The configured key encryption keys cannot be used (malformed, missing, no active key)."""


class KeyUnavailable(CryptoError):
    """Data is sealed with a key id the key provider does not hold."""


class SealBroken(CryptoError):
    """A ciphertext failed authentication: tampered, moved to another row, or the wrong key."""
