"""Vendor-side field rules of a spec: required fields, JSON types, formats and code lists.

A rule is keyed by a path of field names with `[]` for array items (`foresatte[].navn`,
`deleMed[]`); a required field is required only where its parent object is present.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mapping._internal.identifiers import fnr_problem, orgnr_problem

__all__ = ["FieldProblem", "FieldRule", "compile_fields"]

_DATE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


def _date_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not _DATE.fullmatch(value):
        return f"{value!r} is not a date (YYYY-MM-DD)"
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not a valid date"
    return None


def _datetime_problem(value: Any) -> str | None:
    if not isinstance(value, str) or not _DATE.match(value):
        return f"{value!r} is not an ISO-8601 date-time"
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return f"{value!r} is not a valid ISO-8601 date-time"
    return None


def _is(kind: type | tuple[type, ...], name: str) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _tuple(kind))
        return None if ok else f"expected {name}, got {_json_type(value)} {value!r}"

    return check


def _tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "integer", float: "number", str: "string", dict: "object"}
    if isinstance(value, list):
        return "array"
    return names.get(type(value), type(value).__name__)


_CHECKS: Final[dict[str, Callable[[Any], str | None]]] = {
    "string": _is(str, "a string"),
    "integer": _is(int, "an integer"),
    "number": _is((int, float), "a number"),
    "boolean": _is(bool, "a boolean"),
    "object": _is(dict, "an object"),
    "array": _is(list, "an array"),
    "date": _date_problem,
    "datetime": _datetime_problem,
    "fnr": fnr_problem,
    "orgnr": orgnr_problem,
}
TYPES: Final = frozenset(_CHECKS)


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One field that breaks its rule: the concrete path and why."""

    path: str
    message: str
    source: str | None


@dataclass(frozen=True, slots=True)
class FieldRule:
    """A compiled rule for one field path."""

    path: str
    steps: tuple[str, ...]
    types: tuple[str, ...]
    required: bool
    values: frozenset[Any] | None
    nullable: bool
    source: str | None

    def problems(self, record: Any) -> Iterator[FieldProblem]:
        """Yield what is wrong with this field in record."""
        for where, present, value in _walk(record, self.steps, ""):
            if not present or value is None:
                if self.required and not (present and self.nullable):
                    why = "required field is missing" if not present else "required field is null"
                    yield FieldProblem(where, why, self.source)
                continue
            if self.types:
                found = [_CHECKS[t](value) for t in self.types]
                if all(found):
                    yield FieldProblem(where, " or ".join(p for p in found if p), self.source)
                    continue
            if self.values is not None and value not in self.values:
                allowed = ", ".join(sorted(repr(v) for v in self.values))
                yield FieldProblem(where, f"{value!r} is not one of {allowed}", self.source)


def _walk(node: Any, steps: tuple[str, ...], where: str) -> Iterator[tuple[str, bool, Any]]:
    """Yield (path, present, value) for every place the steps reach where the parent exists."""
    if not steps:
        yield where, True, node
        return
    step, rest = steps[0], steps[1:]
    if step == "[]":
        if isinstance(node, list):
            for index, item in enumerate(node):
                yield from _walk(item, rest, f"{where}[{index}]")
        return
    if not isinstance(node, Mapping):
        return
    here = f"{where}.{step}" if where else step
    if step not in node:
        if not rest or rest == ("[]",):
            yield here, False, None
        return
    value = node[step]
    if value is None and rest:
        return
    yield from _walk(value, rest, here)


def _steps(path: str) -> tuple[str, ...]:
    steps: list[str] = []
    for part in path.split("."):
        name, brackets = part, 0
        while name.endswith("[]"):
            name, brackets = name[:-2], brackets + 1
        if not name:
            raise ValueError(f"field path {path!r} has an empty name")
        steps.append(name)
        steps.extend(["[]"] * brackets)
    return tuple(steps)


def compile_fields(raw: Any, bindings: Mapping[str, Any]) -> tuple[FieldRule, ...]:
    """Compile a spec's `fields` mapping; raise ValueError naming the bad rule."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ValueError("`fields` must be a mapping of field path to rule")
    rules = []
    for path, rule in raw.items():
        if not isinstance(rule, Mapping):
            raise ValueError(f"fields.{path} must be a mapping")
        unknown = set(rule) - {"type", "required", "values", "nullable", "source"}
        if unknown:
            raise ValueError(f"fields.{path} has unknown keys {sorted(unknown)}")
        types = rule.get("type", ())
        types = (types,) if isinstance(types, str) else tuple(types)
        for name in types:
            if name not in TYPES:
                raise ValueError(f"fields.{path}: unknown type {name!r} (one of {sorted(TYPES)})")
        values = rule.get("values")
        if isinstance(values, str):
            table = bindings.get(values)
            if not isinstance(table, (Mapping, list)):
                raise ValueError(f"fields.{path}: values names {values!r}, not a binding table")
            values = frozenset(table)
        elif values is not None:
            values = frozenset(values)
        rules.append(
            FieldRule(
                path=str(path),
                steps=_steps(str(path)),
                types=types,
                required=bool(rule.get("required", False)),
                values=values,
                nullable=bool(rule.get("nullable", False)),
                source=rule.get("source"),
            )
        )
    return tuple(rules)
