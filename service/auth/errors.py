"""The auth package's one exception hierarchy; each class knows its HTTP status."""

from __future__ import annotations

from typing import ClassVar

__all__ = ["AccessError", "AuthError", "InsufficientScope"]

_NORWEGIAN_TO_ASCII = str.maketrans({"æ": "ae", "ø": "o", "å": "a", "Æ": "AE", "Ø": "O", "Å": "A"})


class AccessError(Exception):
    """Base of every auth refusal; the HTTP layer turns it into `status_code` + OperationOutcome.

    `message` is safe to show the caller: it never contains a token, a key or a personal
    identifier. `www_authenticate` is the RFC 6750 section 3 challenge for the response header.
    """

    status_code: ClassVar[int] = 401
    error_code: ClassVar[str] = "invalid_token"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def www_authenticate(self) -> str:
        """Return the `WWW-Authenticate` header value for this refusal."""
        # RFC 6750 error_description is printable ASCII without '"' or '\'; the full message
        # (with æøå) goes in the response body.
        ascii_message = self.message.translate(_NORWEGIAN_TO_ASCII)
        description = "".join(
            ch for ch in ascii_message if 0x20 <= ord(ch) < 0x7F and ch not in '"\\'
        )
        return f'Bearer error="{self.error_code}", error_description="{description}"'


class AuthError(AccessError):
    """The bearer token is missing, malformed, untrusted or expired (HTTP 401)."""


class InsufficientScope(AccessError):
    """The token is valid but its scopes do not allow this interaction (HTTP 403)."""

    status_code: ClassVar[int] = 403
    error_code: ClassVar[str] = "insufficient_scope"

    def __init__(self, *, interaction: str, resource_type: str, message: str | None = None) -> None:
        super().__init__(
            message or f"token scopes do not allow interaction '{interaction}' on {resource_type}"
        )
        self.interaction = interaction
        self.resource_type = resource_type
