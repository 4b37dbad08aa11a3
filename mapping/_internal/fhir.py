"""R4B model validation (fhir.resources) with FHIRPath-like error paths."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

__all__ = ["fhir_problems", "is_resource_type"]


@cache
def _model(resource_type: str) -> type[BaseModel]:
    model: type[BaseModel] = get_fhir_model_class(resource_type)
    return model


def is_resource_type(name: str) -> bool:
    """Return whether name is an R4B resource type."""
    try:
        _model(name)
    except (KeyError, ValueError, AttributeError):
        return False
    return True


def _location(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier() or part.startswith("_"):
            path += f".{part}"
        # pydantic adds validator names (`function-after[...]`) that are not elements
    return path


def fhir_problems(resource: dict[str, Any], resource_type: str) -> list[tuple[str, str]]:
    """Validate with the fhir.resources R4B model; return (FHIRPath, message) per problem."""
    if resource.get("resourceType") != resource_type:
        found = resource.get("resourceType")
        return [(f"{resource_type}.resourceType", f"expected {resource_type}, got {found!r}")]
    try:
        _model(resource_type).model_validate(resource)
    except ValidationError as exc:
        return [
            (
                _location(resource_type, tuple(error["loc"])),
                str(error["msg"]).removeprefix("Value error, "),
            )
            for error in exc.errors()
        ]
    except (ValueError, TypeError) as exc:
        return [(resource_type, str(exc))]
    return []
