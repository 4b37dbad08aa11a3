"""Hybrid encryption and signatures of the messages: moved to `connectors.fiks.crypto`.

The message service and the agency use the same code as Stafett's connector; this module
re-exports it so that `simulators.child_welfare.crypto` keeps working.
"""

from __future__ import annotations

from connectors.fiks.crypto import (
    IV_BYTES,
    KEY_BITS,
    Sealed,
    b64decode,
    decrypt,
    encrypt,
    generate_private_key,
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_pem,
    sign,
    signing_input,
    verify,
)

__all__ = [
    "IV_BYTES",
    "KEY_BITS",
    "Sealed",
    "b64decode",
    "decrypt",
    "encrypt",
    "generate_private_key",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "sign",
    "signing_input",
    "verify",
]
