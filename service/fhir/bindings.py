"""Required-binding checks for FHIR R4 resources as posted by clients.

The pydantic models check structure, types and cardinality but not codes, so a resource with
`Patient.gender = "dragon"` passes them. This module walks the resource JSON with per-type
tables derived from the R4 extract (``service.fhir.spec``) and reports every code, Coding or
CodeableConcept that falls outside a *required* value set. Value sets the extract cannot
enumerate (MIME types, currencies) are skipped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from service.fhir import spec

__all__ = ["BindingIssue", "check_required_bindings"]


@dataclass(frozen=True, slots=True)
class BindingIssue:
    """One value outside a required value set: FHIRPath location and a readable message."""

    location: str
    message: str


_COMPLEX: Final = 0  # backbone element or datatype: recurse with another table
_CODE: Final = 1  # primitive (code, string, uri): the value must be a code of the set
_CODING: Final = 2  # Coding: system + code must be in the set
_CONCEPT: Final = 3  # CodeableConcept: at least one coding in the set
_RESOURCE: Final = 4  # contained / Bundle.entry.resource: recurse by its resourceType

# Extension values are not checked: we hold no extension definitions.
_SKIPPED_ELEMENTS: Final = frozenset({"extension", "modifierExtension"})


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # FHIRPath element name (`value` for `valueCoding`)
    type_filter: str  # `.ofType(Coding)` for a choice element, else empty
    kind: int
    context: str = ""  # table to recurse with (_COMPLEX)
    value_set: str = ""
    codes: frozenset[str] = frozenset()  # every code of the set, any system
    pairs: frozenset[tuple[str, str]] = frozenset()


_Table = dict[str, _Field]


def _fields_for(
    element: spec.ElementDef, has_children: bool, complex_types: frozenset[str]
) -> dict[str, _Field]:
    """Return the JSON keys an element can appear under, each with how to check it."""
    name = element.path.rsplit(".", 1)[1]
    choice = name.endswith("[x]")
    base = name[:-3] if choice else name
    pairs = spec.value_set_codes(element.value_set) if element.value_set else None
    out: dict[str, _Field] = {}
    if element.content_reference is not None or has_children:
        # A backbone element (or a reference to one, like Consent.provision.provision).
        context = element.content_reference or element.path
        out[base] = _Field(base, "", _COMPLEX, context=context)
        return out
    for type_code in element.types:
        key = base + type_code[0].upper() + type_code[1:] if choice else base
        type_filter = f".ofType({type_code})" if choice else ""
        if pairs is not None:
            codes = frozenset(code for _, code in pairs)
            url = element.value_set or ""
            if type_code == "Coding":
                out[key] = _Field(base, type_filter, _CODING, "", url, codes, pairs)
                continue
            if type_code == "CodeableConcept":
                out[key] = _Field(base, type_filter, _CONCEPT, "", url, codes, pairs)
                continue
            if type_code[0].islower():  # primitive types are spelt in lower camel case
                out[key] = _Field(base, type_filter, _CODE, "", url, codes, pairs)
                continue
        if type_code == "Resource":
            out[key] = _Field(base, type_filter, _RESOURCE)
        elif type_code in complex_types:
            out[key] = _Field(base, type_filter, _COMPLEX, context=type_code)
    return out


@cache
def _tables() -> Mapping[str, _Table]:
    """Build one lookup table per resource type, backbone element and datatype (once)."""
    structures = (*spec.covered_resource_types(), *spec.datatypes())
    complex_types = frozenset(spec.datatypes())
    raw: dict[str, _Table] = {}
    for type_name in structures:
        elements = spec.elements(type_name)
        parents = {path.rsplit(".", 1)[0] for path in elements}
        raw.setdefault(type_name, {})
        for path, element in elements.items():
            parent, name = path.rsplit(".", 1)
            raw.setdefault(parent, {})
            if name in _SKIPPED_ELEMENTS:
                continue
            fields = _fields_for(element, path in parents, complex_types)
            raw[parent].update(fields)

    # Keep only tables from which a check can be reached, so the walk skips Period, Meta, ...
    relevant = {
        ctx for ctx, table in raw.items() if any(f.kind != _COMPLEX for f in table.values())
    }
    changed = True
    while changed:
        changed = False
        for ctx, table in raw.items():
            if ctx not in relevant and any(
                f.kind == _COMPLEX and f.context in relevant for f in table.values()
            ):
                relevant.add(ctx)
                changed = True
    return {
        ctx: {key: f for key, f in raw[ctx].items() if f.kind != _COMPLEX or f.context in relevant}
        for ctx in relevant
    }


def _check_coding(
    field: _Field, coding: Mapping[str, Any], location: str, issues: list[BindingIssue]
) -> None:
    code = coding.get("code")
    system = coding.get("system")
    if not isinstance(code, str):
        issues.append(
            BindingIssue(
                location,
                f"Coding has no code; a code from the required value set "
                f"{field.value_set} is required",
            )
        )
    elif system is None:
        if code in field.codes:
            message = (
                f"Coding system missing for code '{code}' (required value set {field.value_set})"
            )
        else:
            message = f"Code '{code}' is not in the required value set {field.value_set}"
        issues.append(BindingIssue(location, message))
    elif (system, code) not in field.pairs:
        issues.append(
            BindingIssue(
                location,
                f"Code '{code}' (system {system}) is not in the required value set "
                f"{field.value_set}",
            )
        )


def _check_concept(
    field: _Field, concept: Mapping[str, Any], location: str, issues: list[BindingIssue]
) -> None:
    codings = concept.get("coding")
    if isinstance(codings, list):
        for coding in codings:
            if not isinstance(coding, dict):
                continue
            if (coding.get("system"), coding.get("code")) in field.pairs:
                return
    if not codings:
        message = (
            f"CodeableConcept has no coding; a coding from the required value set "
            f"{field.value_set} is required"
        )
    else:
        message = f"No coding is in the required value set {field.value_set}"
    issues.append(BindingIssue(location, message))


def _check_item(
    field: _Field,
    item: Any,
    location: str,
    tables: Mapping[str, _Table],
    issues: list[BindingIssue],
) -> None:
    kind = field.kind
    # Values of the wrong JSON type are skipped: the pydantic models report those.
    if kind == _COMPLEX:
        if isinstance(item, dict):
            _walk(item, tables[field.context], location, tables, issues)
    elif kind == _CODE:
        if isinstance(item, str) and item not in field.codes:
            issues.append(
                BindingIssue(
                    location, f"Code '{item}' is not in the required value set {field.value_set}"
                )
            )
    elif kind == _CODING:
        if isinstance(item, dict):
            _check_coding(field, item, location, issues)
    elif kind == _CONCEPT:
        if isinstance(item, dict):
            _check_concept(field, item, location, issues)
    elif isinstance(item, dict):  # _RESOURCE
        table = _resource_table(item, tables)
        if table is not None:
            _walk(item, table, location, tables, issues)


@cache
def _resource_types() -> frozenset[str]:
    return frozenset(spec.covered_resource_types())


def _resource_table(resource: Mapping[str, Any], tables: Mapping[str, _Table]) -> _Table | None:
    """Return the table for a resource's own type; None for types the extract does not cover."""
    resource_type = resource.get("resourceType")
    # Table names also include datatypes: {"resourceType": "Identifier"} is not a resource.
    if not isinstance(resource_type, str) or resource_type not in _resource_types():
        return None
    return tables.get(resource_type)


def _walk(
    node: Mapping[str, Any],
    table: _Table,
    location: str,
    tables: Mapping[str, _Table],
    issues: list[BindingIssue],
) -> None:
    for key, value in node.items():
        field = table.get(key)
        if field is None:
            continue
        path = f"{location}.{field.name}"
        if isinstance(value, list):
            for index, item in enumerate(value):
                _check_item(field, item, f"{path}[{index}]{field.type_filter}", tables, issues)
        else:
            _check_item(field, value, path + field.type_filter, tables, issues)


def check_required_bindings(resource: Mapping[str, Any]) -> list[BindingIssue]:
    """Return every value in the resource outside a required R4 value set (empty if none)."""
    tables = _tables()
    table = _resource_table(resource, tables)
    if table is None:
        return []
    issues: list[BindingIssue] = []
    _walk(resource, table, str(resource["resourceType"]), tables, issues)
    return issues
