"""Parse FHIR search parameters (https://hl7.org/fhir/R4/search.html) into a SearchQuery."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from service.errors import BadRequest
from service.search.extract import CompiledParam

__all__ = [
    "DATE_PREFIXES",
    "RESULT_PARAMS",
    "Criterion",
    "Include",
    "SearchQuery",
    "parse_search",
    "split_values",
]

DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
RESULT_PARAMS = frozenset(
    {
        "_count",
        "_offset",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_format",
        "_pretty",
    }
)
_MODIFIERS = {
    "token": {"missing", "not", "exact"},
    "uri": {"missing", "not", "below", "above"},
    "string": {"missing", "exact", "contains", "not"},
    "date": {"missing", "not"},
    "reference": {"missing", "not", "identifier"},
}
_SUMMARY = ("true", "false", "text", "data", "count")
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class Criterion:
    """One search parameter occurrence: values are ORed, criteria are ANDed."""

    code: str
    type: str
    values: tuple[str, ...]
    modifier: str | None = None
    target_type: str | None = None  # reference :Type modifier or chain type
    chain: Criterion | None = None  # the chained criterion on the referenced type
    chain_targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Include:
    """An _include or _revinclude: source type, reference parameter, optional target type."""

    source_type: str
    param: str
    target_type: str | None
    iterate: bool = False


@dataclass(slots=True)
class SearchQuery:
    """A parsed search on one resource type."""

    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[tuple[str, bool, str]] = field(default_factory=list)  # (code, descending, type)
    count: int = 20
    offset: int = 0
    includes: list[Include] = field(default_factory=list)
    revincludes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: tuple[str, ...] | None = None
    total: str = "accurate"
    ignored: list[str] = field(default_factory=list)
    # the parameters actually used, for the Bundle's self link
    used: list[tuple[str, str]] = field(default_factory=list)


def split_values(value: str) -> tuple[str, ...]:
    """Split an OR list on commas, honouring the FHIR escape ``\\,``."""
    parts: list[str] = []
    current = ""
    escaped = False
    for ch in value:
        if escaped:
            current += ch if ch in ",$|\\" else "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current + ("\\" if escaped else ""))
    return tuple(parts)


SPECIAL_PARAMS: Mapping[str, str] = {"_id": "token", "_lastUpdated": "date"}


def parse_search(
    resource_type: str,
    params: Iterable[tuple[str, str]],
    *,
    known: Mapping[str, Mapping[str, CompiledParam]],
    default_count: int,
    max_count: int,
    strict: bool,
) -> SearchQuery:
    """Turn query pairs into a SearchQuery; unknown parameters are ignored unless strict."""
    query = SearchQuery(resource_type=resource_type, count=default_count)
    type_params = known.get(resource_type, {})
    for raw_name, given_value in params:
        if "\x00" in raw_name or "\x00" in given_value:
            # PostgreSQL text cannot hold NUL: without this the database refuses the query (500)
            raise BadRequest("Search parameters must not contain NUL characters")
        name, raw_value = raw_name, given_value
        if raw_name.startswith(("_include:", "_revinclude:")):
            name, _, flag = raw_name.partition(":")
            if flag not in ("iterate", "recurse"):
                raise BadRequest(f"Unknown modifier ':{flag}' on {name}")
            raw_value = "iterate:" + given_value
        if name in RESULT_PARAMS:
            _parse_result_param(query, name, raw_value, known=known, max_count=max_count)
            if name not in ("_format", "_pretty"):
                query.used.append((name, raw_value))
            continue
        try:
            criterion = _parse_criterion(resource_type, name, raw_value, type_params, known)
        except _Unknown as exc:
            if strict:
                raise BadRequest(str(exc)) from exc
            query.ignored.append(name)
            continue
        query.criteria.append(criterion)
        query.used.append((name, raw_value))
    return query


class _Unknown(Exception):
    pass


def _param_type(code: str, params: Mapping[str, CompiledParam]) -> str | None:
    if code in SPECIAL_PARAMS:
        return SPECIAL_PARAMS[code]
    param = params.get(code)
    return param.type if param else None


def _parse_criterion(
    resource_type: str,
    name: str,
    raw_value: str,
    params: Mapping[str, CompiledParam],
    known: Mapping[str, Mapping[str, CompiledParam]],
) -> Criterion:
    head, _, chain_rest = name.partition(".")
    code, _, modifier = head.partition(":")
    param_type = _param_type(code, params)
    if param_type is None:
        raise _Unknown(f"Unknown search parameter '{code}' for {resource_type}")
    target_type: str | None = None
    mod: str | None = modifier or None
    if mod is not None and param_type == "reference" and _TYPE_NAME.match(mod):
        target_type, mod = mod, None
    if mod is not None and mod not in _MODIFIERS.get(param_type, set()):
        raise BadRequest(f"Modifier ':{mod}' is not supported on {param_type} parameter '{code}'")
    if chain_rest:
        if param_type != "reference":
            raise BadRequest(f"Parameter '{code}' is not a reference and cannot be chained")
        param = params[code]
        targets = (target_type,) if target_type else param.target
        chain_code = chain_rest.split(":")[0]
        usable = tuple(
            t for t in targets if chain_code in SPECIAL_PARAMS or chain_code in known.get(t, {})
        )
        if not usable:
            raise BadRequest(
                f"Chained parameter '{chain_rest}' is not defined on any target of '{code}'"
            )
        if "." in chain_rest:
            raise BadRequest("Chains longer than one link are not supported")
        inner = _parse_criterion(usable[0], chain_rest, raw_value, known.get(usable[0], {}), known)
        return Criterion(
            code=code,
            type="reference",
            values=(),
            target_type=target_type,
            chain=inner,
            chain_targets=usable,
        )
    if mod == "missing":
        if raw_value not in ("true", "false"):
            raise BadRequest(f"':missing' takes true or false, not '{raw_value}'")
        return Criterion(code=code, type=param_type, values=(raw_value,), modifier=mod)
    values = split_values(raw_value)
    if any(value == "" for value in values):
        raise BadRequest(f"Empty value in search parameter '{name}'")
    return Criterion(
        code=code, type=param_type, values=values, modifier=mod, target_type=target_type
    )


def _parse_result_param(
    query: SearchQuery,
    name: str,
    value: str,
    *,
    known: Mapping[str, Mapping[str, CompiledParam]],
    max_count: int,
) -> None:
    if name == "_count":
        if not value.isdigit():
            raise BadRequest(f"_count must be a non-negative integer, not '{value}'")
        query.count = min(int(value), max_count)
    elif name == "_offset":
        if not value.isdigit():
            raise BadRequest(f"_offset must be a non-negative integer, not '{value}'")
        query.offset = int(value)
    elif name == "_sort":
        for part in split_values(value):
            descending = part.startswith("-")
            code = part.lstrip("-")
            type_params = known.get(query.resource_type, {})
            if code in SPECIAL_PARAMS:
                query.sort.append((code, descending, SPECIAL_PARAMS[code]))
            elif code in type_params:
                query.sort.append((code, descending, type_params[code].type))
            else:
                raise BadRequest(f"Cannot sort {query.resource_type} by unknown '{code}'")
    elif name in ("_include", "_revinclude"):
        query_list = query.includes if name == "_include" else query.revincludes
        query_list.append(_parse_include(name, value, known))
    elif name == "_summary":
        if value not in _SUMMARY:
            raise BadRequest(f"_summary must be one of {', '.join(_SUMMARY)}, not '{value}'")
        query.summary = value
    elif name == "_elements":
        query.elements = tuple(part.strip() for part in value.split(",") if part.strip())
    elif name == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise BadRequest(f"_total must be none, estimate or accurate, not '{value}'")
        query.total = value


def _parse_include(
    name: str, value: str, known: Mapping[str, Mapping[str, CompiledParam]]
) -> Include:
    iterate = False
    if value.startswith(("iterate:", "recurse:")):  # tolerated spelling inside the value
        value = value.split(":", 1)[1]
        iterate = True
    parts = value.split(":")
    if len(parts) < 2 or len(parts) > 3:
        raise BadRequest(f"{name} must be Type:param[:targetType], not '{value}'")
    source_type, param = parts[0], parts[1]
    target_type = parts[2] if len(parts) == 3 else None
    source_params = known.get(source_type)
    if source_params is None:
        raise BadRequest(f"{name}: unknown resource type '{source_type}'")
    if param != "*" and (param not in source_params or source_params[param].type != "reference"):
        raise BadRequest(f"{name}: '{param}' is not a reference parameter of {source_type}")
    if target_type is not None and target_type not in known:
        raise BadRequest(f"{name}: unknown target type '{target_type}'")
    return Include(source_type, param, target_type, iterate)
