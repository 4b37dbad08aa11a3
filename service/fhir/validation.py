"""Validate incoming resources: FHIR JSON shape, R4 structure (fhir.resources R4B), bindings."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from service.errors import BadRequest, InvalidResource, Issue
from service.fhir.bindings import check_required_bindings
from service.fhir.primitives import check_primitive_types
from service.fhir.spec import SUPPORTED_RESOURCE_TYPES

__all__ = ["WRITABLE_TYPES", "parse_json", "validate_resource"]

# AuditEvent is written only by Stafett itself.
WRITABLE_TYPES = frozenset(t for t in SUPPORTED_RESOURCE_TYPES if t != "AuditEvent")
_MAX_DEPTH = 64


def parse_json(body: bytes) -> Any:
    """Parse a request body as JSON or raise BadRequest naming the problem."""
    if not body.strip():
        raise BadRequest("The request body is empty; a FHIR JSON resource was expected")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc


@cache
def _model(resource_type: str) -> type[BaseModel]:
    model: type[BaseModel] = get_fhir_model_class(resource_type)
    return model


def _location(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() or part.startswith("_"):
            path += f".{part}"
        # pydantic adds validator names (e.g. "function-after[...]") that are not elements
    return path


def _shape_issues(value: Any, path: str, depth: int = 0) -> list[Issue]:
    """Find what FHIR JSON forbids and the models coerce: nulls, empty objects/arrays, depth."""
    if depth > _MAX_DEPTH:
        return [Issue("structure", f"Nested deeper than {_MAX_DEPTH} levels", expression=(path,))]
    issues: list[Issue] = []
    if isinstance(value, dict):
        if not value:
            issues.append(Issue("structure", "Empty objects are not allowed", expression=(path,)))
        for key, child in value.items():
            if child is None:
                issues.append(
                    Issue("structure", "null is not allowed", expression=(f"{path}.{key}",))
                )
            elif not key.startswith("_"):
                issues.extend(_shape_issues(child, f"{path}.{key}", depth + 1))
    elif isinstance(value, list):
        if not value:
            issues.append(Issue("structure", "Empty arrays are not allowed", expression=(path,)))
        for index, child in enumerate(value):
            # null in a primitive array is only allowed as a placeholder beside `_element`
            if child is not None:
                issues.extend(_shape_issues(child, f"{path}[{index}]", depth + 1))
    return issues


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def validate_resource(data: Any, *, expected_type: str | None = None) -> str:
    """Check that data is a valid R4 resource Stafett stores; return its resourceType."""
    if not isinstance(data, Mapping):
        raise BadRequest("A FHIR resource must be a JSON object")
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str):
        raise BadRequest("The resource has no resourceType")
    if expected_type is not None and resource_type != expected_type:
        raise BadRequest(
            f"The resourceType '{resource_type}' does not match the URL's type '{expected_type}'"
        )
    if resource_type not in WRITABLE_TYPES:
        if resource_type in SUPPORTED_RESOURCE_TYPES:
            raise BadRequest(f"{resource_type} resources are written by Stafett only")
        raise BadRequest(f"Resource type '{resource_type}' is not supported by this server")
    issues = _shape_issues(data, resource_type)
    if _has_nul(data):
        # PostgreSQL cannot store U+0000 in JSONB or text: refused here, or the write is a 500
        issues.append(Issue("structure", "Strings must not contain NUL (U+0000) characters"))
    issues.extend(
        Issue("structure", problem.message, expression=(problem.location,))
        for problem in check_primitive_types(data)
    )
    try:
        _model(resource_type).model_validate(data)
    except ValidationError as exc:
        for error in exc.errors():
            location = _location(resource_type, tuple(error["loc"]))
            message = str(error["msg"]).removeprefix("Value error, ")
            issues.append(Issue("structure", message, expression=(location,)))
    except (ValueError, TypeError) as exc:
        issues.append(Issue("structure", str(exc), expression=(resource_type,)))
    if not issues:
        for binding_issue in check_required_bindings(data):
            issues.append(
                Issue("code-invalid", binding_issue.message, expression=(binding_issue.location,))
            )
    if issues:
        summary = "; ".join(
            f"{issue.expression[0] if issue.expression else resource_type}: {issue.diagnostics}"
            for issue in issues[:5]
        )
        raise InvalidResource(f"The {resource_type} is not valid: {summary}", issues=issues)
    return resource_type
