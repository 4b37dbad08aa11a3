"""Strict FHIR JSON primitive types: booleans are JSON true/false, numbers are JSON numbers.

The pydantic models coerce ("yes" becomes true, "3" becomes 3); FHIR JSON does not allow that
(https://hl7.org/fhir/R4/json.html#primitive). Stafett stores the JSON it was sent, so it must
refuse such values instead of storing them. Tables come from the R4 element definitions.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from service.fhir import spec

__all__ = ["PrimitiveIssue", "check_primitive_types", "is_valid_id"]

# the R4 id datatype (https://hl7.org/fhir/R4/datatypes.html#id): ASCII only
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_BOOLEAN = "boolean"
_INTEGERS = frozenset({"integer", "positiveInt", "unsignedInt", "integer64"})
_DECIMAL = "decimal"
_RESOURCE_TYPES = frozenset({"Resource", "DomainResource"})


@dataclass(frozen=True, slots=True)
class PrimitiveIssue:
    """A primitive value of the wrong JSON type: FHIRPath location and message."""

    location: str
    message: str


@dataclass(frozen=True, slots=True)
class _Key:
    type_code: str
    context: str  # table to recurse into for complex types; "" for primitives


@cache
def _children() -> Mapping[str, frozenset[str]]:
    parents: dict[str, set[str]] = {}
    for table in _all_tables():
        for path in table:
            parent = path.rsplit(".", 1)[0]
            parents.setdefault(parent, set()).add(path)
    return {k: frozenset(v) for k, v in parents.items()}


def _all_tables() -> Iterator[Mapping[str, spec.ElementDef]]:
    for name in (*spec.covered_resource_types(), *spec.datatypes()):
        yield spec.elements(name)


@cache
def _table(context: str) -> Mapping[str, _Key]:
    """Return JSON key -> expected type for the elements directly under context."""
    root = context.split(".", 1)[0]
    elements = spec.elements(root)
    children = _children()
    keys: dict[str, _Key] = {}
    for path in children.get(context, frozenset()):
        element = elements.get(path)
        if element is None:
            continue
        name = path.rsplit(".", 1)[1]
        if element.content_reference is not None:
            keys[name] = _Key("BackboneElement", element.content_reference.lstrip("#"))
            continue
        if path in children:  # backbone element with its own children
            keys[name] = _Key("BackboneElement", path)
            continue
        choice = name.endswith("[x]")
        base = name[:-3] if choice else name
        for type_code in element.types:
            key = base + type_code[0].upper() + type_code[1:] if choice else base
            complex_type = type_code[0].isupper()
            keys[key] = _Key(type_code, type_code if complex_type else "")
    return keys


def _json_type_ok(type_code: str, value: Any) -> bool:
    if type_code == _BOOLEAN:
        return isinstance(value, bool)
    if type_code in _INTEGERS:
        return isinstance(value, int) and not isinstance(value, bool)
    if type_code == _DECIMAL:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, str)


def _expected(type_code: str) -> str:
    if type_code == _BOOLEAN:
        return "a JSON boolean (true or false)"
    if type_code in _INTEGERS or type_code == _DECIMAL:
        return "a JSON number"
    return "a JSON string"


def check_primitive_types(resource: Mapping[str, Any]) -> list[PrimitiveIssue]:
    """Return every primitive value in resource whose JSON type is wrong."""
    issues: list[PrimitiveIssue] = []
    resource_type = resource.get("resourceType")
    if isinstance(resource_type, str) and resource_type in spec.covered_resource_types():
        _walk(resource, resource_type, resource_type, issues)
    return issues


def _walk(
    node: Mapping[str, Any], context: str, location: str, issues: list[PrimitiveIssue]
) -> None:
    table = _table(context)
    for key, value in node.items():
        expected = table.get(key)
        if expected is None:
            continue  # `_x` extensions, resourceType, unknown keys (the models report those)
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            where = f"{location}.{key}" + (f"[{index}]" if isinstance(value, list) else "")
            if item is None:
                continue
            if expected.type_code in _RESOURCE_TYPES:
                inner = item.get("resourceType") if isinstance(item, dict) else None
                if isinstance(inner, str) and inner in spec.covered_resource_types():
                    _walk(item, inner, where, issues)
            elif expected.context:
                if isinstance(item, dict):
                    _walk(item, expected.context, where, issues)
            elif not _json_type_ok(expected.type_code, item):
                issues.append(
                    PrimitiveIssue(
                        where,
                        f"A FHIR {expected.type_code} must be {_expected(expected.type_code)}",
                    )
                )


def is_valid_id(value: str) -> bool:
    """Return whether value is a FHIR id: 1-64 of [A-Za-z0-9-.]."""
    return _ID.fullmatch(value) is not None
