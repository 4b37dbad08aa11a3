"""Encryption at rest: sealed free-text fields, envelope keys and key rotation.

See docs/security/encryption-at-rest.md for what is encrypted, how keys are handled and what
it costs.
"""

from service.crypto.envelope import Envelope, key_id_of
from service.crypto.errors import CryptoError, KeyringInvalid, KeyUnavailable, SealBroken
from service.crypto.fields import PLAINTEXT, SEALED_FIELDS, FieldSealer
from service.crypto.keys import KeyProvider, LocalKeyProvider
from service.crypto.runtime import build_envelope, build_sealer, verify_keys

__all__ = [
    "PLAINTEXT",
    "SEALED_FIELDS",
    "CryptoError",
    "Envelope",
    "FieldSealer",
    "KeyProvider",
    "KeyUnavailable",
    "KeyringInvalid",
    "LocalKeyProvider",
    "SealBroken",
    "build_envelope",
    "build_sealer",
    "key_id_of",
    "verify_keys",
]
