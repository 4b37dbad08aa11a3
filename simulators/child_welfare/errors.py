"""The exceptions of the child-welfare messaging simulator and its client."""

from __future__ import annotations

__all__ = [
    "AccountConflict",
    "CryptoError",
    "DecryptionFailed",
    "EnvelopeInvalid",
    "FiksError",
    "FiksRequestFailed",
    "Forbidden",
    "KeyInvalid",
    "NotAuthenticated",
    "NotLeased",
    "PayloadInvalid",
    "RecordNotFound",
    "RequestInvalid",
    "SignatureInvalid",
    "UnknownAccount",
    "UnknownMessageType",
    "WrongRecipient",
]


class FiksError(Exception):
    """Base of every error raised by `simulators.child_welfare`."""


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


class PayloadInvalid(FiksError):
    """A decrypted payload does not match its message type."""


class UnknownMessageType(FiksError):
    """The receiving system does not handle this message type."""


class UnknownAccount(FiksError):
    """No account with this id is registered."""


class AccountConflict(FiksError):
    """The account exists and the caller did not present its token."""


class NotAuthenticated(FiksError):
    """The request has no token or an unknown one."""


class Forbidden(FiksError):
    """The token belongs to another account."""


class NotLeased(FiksError):
    """The account has not received (or already acknowledged) this message."""


class RecordNotFound(FiksError):
    """The case system has no record with this id."""


class FiksRequestFailed(FiksError):
    """The message service answered a client request with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"message service answered {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail
