"""The one place where errors become OperationOutcome responses with their HTTP status."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from starlette.responses import Response

from service.errors import FhirError, Issue

__all__ = ["FHIR_JSON", "error_response", "operation_outcome", "outcome_bytes"]

FHIR_JSON = "application/fhir+json; charset=utf-8"


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    """Build an OperationOutcome resource from issues."""
    rendered = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            item["expression"] = list(issue.expression)
        rendered.append(item)
    return {"resourceType": "OperationOutcome", "issue": rendered}


def outcome_bytes(issues: Iterable[Issue]) -> bytes:
    """Serialise an OperationOutcome."""
    return orjson.dumps(operation_outcome(issues))


def error_response(error: FhirError, *, headers: dict[str, str] | None = None) -> Response:
    """Turn a domain error into its HTTP response."""
    all_headers = dict(headers or {})
    if error.status == 401:
        all_headers.setdefault(
            "WWW-Authenticate",
            f'Bearer error="invalid_token", error_description="{_header_safe(error.diagnostics)}"',
        )
    return Response(
        outcome_bytes(error.issues),
        status_code=error.status,
        media_type=FHIR_JSON,
        headers=all_headers,
    )


def _header_safe(text: str) -> str:
    return "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:200]
