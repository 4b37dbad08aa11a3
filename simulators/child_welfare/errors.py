"""Exceptions of the child-welfare simulator (the client's own: `connectors.fiks.errors`)."""

from __future__ import annotations

from connectors.fiks.errors import (
    CryptoError,
    DecryptionFailed,
    EnvelopeInvalid,
    FiksError,
    FiksRequestFailed,
    KeyInvalid,
    RequestInvalid,
    SignatureInvalid,
    WrongRecipient,
)

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
