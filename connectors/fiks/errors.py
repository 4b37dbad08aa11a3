"""The exceptions of the Fiks IO-style client: crypto, envelope shape and service answers."""

from __future__ import annotations

__all__ = [
    "CryptoError",
    "DecryptionFailed",
    "EnvelopeInvalid",
    "FiksError",
    "FiksRequestFailed",
    "KeyInvalid",
    "RequestInvalid",
    "SignatureInvalid",
    "WrongRecipient",
]


class FiksError(Exception):
    """Base of every error of the message service, its client and its simulator."""


class CryptoError(FiksError):
    """A message cannot be trusted or read."""


class SignatureInvalid(CryptoError):
    """The signature does not match the sender's key or the signed fields were changed."""


class DecryptionFailed(CryptoError):
    """The content key cannot be unwrapped or the ciphertext fails its GCM tag check."""


class WrongRecipient(CryptoError):
    """The envelope is addressed to another account."""


class RequestInvalid(FiksError):
    """A request to the message service has a field of the wrong shape."""


class KeyInvalid(RequestInvalid):
    """A PEM text is not an RSA key of the required size."""


class EnvelopeInvalid(RequestInvalid):
    """A message envelope lacks fields or has fields of the wrong shape."""


class FiksRequestFailed(FiksError):
    """The message service answered a client request with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"message service answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
