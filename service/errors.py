"""Domain errors of the FHIR service; service/api/outcomes.py renders them as OperationOutcome."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BadRequest",
    "Conflict",
    "FhirError",
    "Forbidden",
    "Gone",
    "InvalidResource",
    "Issue",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedMediaType",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One OperationOutcome.issue: severity, code (issue-type), text and FHIRPath locations."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()


class FhirError(Exception):
    """Base of every error that becomes an OperationOutcome with an HTTP status."""

    status: int = 500
    code: str = "exception"

    def __init__(self, diagnostics: str, *, issues: tuple[Issue, ...] | list[Issue] = ()) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.issues: tuple[Issue, ...] = tuple(issues) or (Issue(self.code, diagnostics),)


class BadRequest(FhirError):
    """The request is malformed (400)."""

    status, code = 400, "invalid"


class Unauthorized(FhirError):
    """No or no valid credentials (401)."""

    status, code = 401, "login"


class Forbidden(FhirError):
    """Authenticated, but not allowed (403)."""

    status, code = 403, "forbidden"


class NotFound(FhirError):
    """No such resource, or the caller may not know it exists (404)."""

    status, code = 404, "not-found"


class MethodNotAllowed(FhirError):
    """The interaction is not supported on this path (405)."""

    status, code = 405, "not-supported"


class NotAcceptable(FhirError):
    """The requested format is not served (406)."""

    status, code = 406, "not-supported"


class Conflict(FhirError):
    """The write conflicts with the current state (409)."""

    status, code = 409, "conflict"


class Gone(FhirError):
    """The resource was deleted (410)."""

    status, code = 410, "deleted"


class PreconditionFailed(FhirError):
    """If-Match or a conditional criterion did not hold (412)."""

    status, code = 412, "conflict"


class PayloadTooLarge(FhirError):
    """The request body is over the configured limit (413)."""

    status, code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    """The request body is not FHIR JSON (415)."""

    status, code = 415, "not-supported"


class InvalidResource(FhirError):
    """The resource fails validation (422); issues carry FHIRPath locations."""

    status, code = 422, "processing"


class StoredDataUnreadable(FhirError):
    """Stored data failed to decrypt or its integrity check: served to nobody (500)."""

    status, code = 500, "exception"


class ServiceUnavailable(FhirError):
    """A dependency such as the database is down (503)."""

    status, code = 503, "transient"
