"""Extract search-index values from a resource with the R4 search parameters' FHIRPath.

The R4 definitions use a small FHIRPath subset for the types Stafett serves: dotted paths,
``(X as T)`` / ``.as(T)`` casts of choice elements, ``.where(resolve() is T)`` on references,
``.where(system='x')`` on contact points and one boolean test for Patient.deceased. Those are
compiled once into step lists; anything else is refused at start-up so an unsupported
parameter can never be advertised.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from consent.constants import ENH
from service.fhir import spec
from service.fhir.primitives import is_valid_id
from service.search.values import (
    MAX_MICROS,
    MIN_MICROS,
    InvalidDate,
    normalise_string,
    parse_date_range,
)

__all__ = [
    "CONSENT_ACTOR_PARAM",
    "LOG_OWNER_ORGNR",
    "LOG_OWNER_PARAM",
    "OPEN_EVALUATION_PARAM",
    "OPEN_TASK_STATUSES",
    "CompiledParam",
    "IndexRows",
    "ResourceIndexer",
    "UnsupportedExpression",
    "parse_reference",
]

# Search parameter types Stafett indexes; others (composite, quantity, number, special) are not
# used by the resource types served and are left out of the CapabilityStatement.
INDEXED_TYPES = frozenset({"token", "string", "date", "reference", "uri"})
# Parameters that need a full-text engine or server-side stored queries; not offered.
NOT_OFFERED = frozenset({"_content", "_text", "_query", "_list", "_has", "_type", "phonetic"})
_MAX_INDEXED = 512
# AuditEvents are written on every decision, so each index row costs every audited request.
# Index what a data protection officer searches by (who, whose log, what, when, outcome,
# which decision) and leave out the rest, which also leaves it out of the CapabilityStatement.
NOT_INDEXED_BY_TYPE: dict[str, frozenset[str]] = {
    "AuditEvent": frozenset(
        {
            "address",
            "agent-role",
            "altid",
            "entity-name",
            "entity-role",
            "entity-type",
            "policy",
            "site",
            "source",
            "_profile",
            "_source",
            "_tag",
            "_security",
        }
    )
}
#: Internal index parameter: every actor of every provision of a Consent (not advertised).
CONSENT_ACTOR_PARAM = "stafett-consent-actor"
#: Internal index parameter: the planned evaluation date (`restriction.period.end`) of a Task
#: that is still open, what the time-event scheduler scans (not advertised). Only open Tasks
#: are indexed, so the scan never touches the growing history of evaluated ones; migration 0004
#: backfilled it.
OPEN_EVALUATION_PARAM = "stafett-open-evaluation-date"
#: Internal index parameter: who owns a Task of which child's log, one token per pair with the
#: child's Patient id as code and the owner as system (`Organization/<id>`,
#: `PractitionerRole/<id>`, or `enh:<org.nr>` for an owner named by org.nr only). The consent
#: router reads a batch's participants from it with one index range per child instead of
#: looking up the owner of every Task of the log (not advertised; migration 0009 backfilled
#: it).
LOG_OWNER_PARAM = "stafett-log-owner"
#: How a `LOG_OWNER_PARAM` row names an owner given by org.nr only: this prefix, then the org.nr.
LOG_OWNER_ORGNR = "enh:"
#: Task statuses (R4 task-status) in which the planned evaluation is still to come.
OPEN_TASK_STATUSES = frozenset(
    {"requested", "received", "accepted", "ready", "in-progress", "on-hold"}
)


class UnsupportedExpression(ValueError):
    """A FHIRPath expression outside the subset this indexer compiles."""


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    cast: str | None = None  # choice type suffix, e.g. "CodeableConcept" for value[x]
    resolve_is: str | None = None  # keep references to this resource type only
    where_system: str | None = None  # keep ContactPoints of this system only


@dataclass(frozen=True, slots=True)
class _Path:
    steps: tuple[_Step, ...]
    truthy: bool = False  # "X.exists() and X != false": index a boolean token


@dataclass(frozen=True, slots=True)
class CompiledParam:
    """A search parameter compiled for one resource type."""

    code: str
    type: str
    paths: tuple[_Path, ...]
    target: tuple[str, ...]


@dataclass(slots=True)
class IndexRows:
    """Index values of one resource, grouped by index table."""

    tokens: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    strings: list[tuple[str, str, str]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)
    references: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)


_STEP_RE = re.compile(
    r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?:\.as\((?P<as>[A-Za-z]+)\))?"
    r"(?:\.where\(resolve\(\) is (?P<resolve>[A-Za-z]+)\))?"
    r"(?:\.where\(system='(?P<system>[a-z]+)'\))?$"
)


def _split_steps(path: str) -> list[str]:
    """Split a path on dots outside parentheses, keeping `.as()`/`.where()` attached."""
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in path:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    # re-attach function calls (`as(..)`, `where(..)`) to the element they apply to
    merged: list[str] = []
    for part in parts:
        if merged and (part.startswith(("as(", "where(", "exists(")) or part == "exists()"):
            merged[-1] += "." + part
        else:
            merged.append(part)
    return merged


def _compile_alternative(expression: str, resource_type: str) -> _Path:
    text = expression.strip()
    truthy = False
    deceased = re.fullmatch(r"(\S+)\.exists\(\) and (\S+) != false", text)
    if deceased and deceased.group(1) == deceased.group(2):
        text, truthy = deceased.group(1), True
    cast: str | None = None
    cast_match = re.fullmatch(r"\((.+) as ([A-Za-z]+)\)", text)
    if cast_match:
        text, cast = cast_match.group(1), cast_match.group(2)
    raw_steps = _split_steps(text)
    if raw_steps[0] not in (resource_type, "Resource", "DomainResource"):
        raise UnsupportedExpression(f"{expression!r} does not start at {resource_type}")
    steps: list[_Step] = []
    for raw in raw_steps[1:]:
        match = _STEP_RE.match(raw)
        if match is None:
            raise UnsupportedExpression(f"cannot compile step {raw!r} of {expression!r}")
        step_cast = match.group("as")
        steps.append(
            _Step(
                name=match.group("name"),
                cast=_upper_first(step_cast) if step_cast else None,
                resolve_is=match.group("resolve"),
                where_system=match.group("system"),
            )
        )
    if not steps:
        raise UnsupportedExpression(f"{expression!r} selects nothing")
    if cast is not None:
        last = steps[-1]
        steps[-1] = _Step(last.name, _upper_first(cast), last.resolve_is, last.where_system)
    return _Path(tuple(steps), truthy)


def _upper_first(name: str) -> str:
    return name[:1].upper() + name[1:]


def compile_param(definition: spec.SearchParamDef, resource_type: str) -> CompiledParam:
    """Compile one search parameter's expression for a resource type."""
    alternatives = [alt for alt in _split_union(definition.expression) if alt.strip()]
    paths = tuple(_compile_alternative(alt, resource_type) for alt in alternatives)
    return CompiledParam(definition.code, definition.type, paths, tuple(definition.target))


def _split_union(expression: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    current = ""
    for ch in expression:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "|" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    parts.append(current)
    return parts


@cache
def _choice_names() -> frozenset[str]:
    """Return every element name that is a choice (`value[x]`) somewhere in the covered types."""
    names: set[str] = set()
    for type_name in (*spec.covered_resource_types(), *spec.datatypes()):
        for path in spec.elements(type_name):
            if path.endswith("[x]"):
                names.add(path.rsplit(".", 1)[1][:-3])
    return frozenset(names)


def _children(node: Any, step: _Step) -> Iterator[Any]:
    if not isinstance(node, dict):
        return
    if step.cast is not None:
        values = node.get(step.name + step.cast)
    else:
        values = node.get(step.name)
        if values is None and step.name in _choice_names():
            # a choice element (value[x]) without a cast: any of its typed forms
            prefix_len = len(step.name)
            for key, candidate in node.items():
                if (
                    len(key) > prefix_len
                    and key.startswith(step.name)
                    and key[prefix_len].isupper()
                ):
                    yield from _flatten(candidate)
            return
    yield from _flatten(values)


def _flatten(values: Any) -> Iterator[Any]:
    if values is None:
        return
    if isinstance(values, list):
        yield from (value for value in values if value is not None)
    else:
        yield values


def parse_reference(reference: str, base_url: str) -> tuple[str | None, str | None, str | None]:
    """Split a reference into (type, id, url): local refs get type/id, foreign ones keep url."""
    if reference.startswith("#"):
        return None, None, None
    local = reference
    if reference.startswith(base_url + "/"):
        local = reference[len(base_url) + 1 :]
    elif "://" in reference or reference.startswith(("urn:", "http:", "https:")):
        return None, None, reference
    parts = local.split("/")
    if len(parts) >= 2 and parts[0][:1].isupper() and is_valid_id(parts[1]):
        return parts[0], parts[1], None
    return None, None, reference


class ResourceIndexer:
    """Turns a resource into index rows, one compiled parameter set per resource type."""

    def __init__(self, *, base_url: str) -> None:
        self._base_url = base_url.rstrip("/")
        self._params: dict[str, tuple[CompiledParam, ...]] = {}
        for resource_type in spec.SUPPORTED_RESOURCE_TYPES:
            self._params[resource_type] = tuple(self._compile_all(resource_type))
        # built once: every search and conditional create looks parameters up here
        self._by_code: Mapping[str, Mapping[str, CompiledParam]] = {
            resource_type: {param.code: param for param in params}
            for resource_type, params in self._params.items()
        }

    def _compile_all(self, resource_type: str) -> Iterator[CompiledParam]:
        definitions: dict[str, spec.SearchParamDef] = {
            **{
                code: definition
                for code, definition in spec.common_search_params().items()
                if code not in ("_id", "_lastUpdated")  # served from the resources table
            },
            **spec.search_params(resource_type),
        }
        skipped = NOT_INDEXED_BY_TYPE.get(resource_type, frozenset())
        for code, definition in sorted(definitions.items()):
            if definition.type not in INDEXED_TYPES or code in NOT_OFFERED or code in skipped:
                continue
            if not definition.expression:
                continue
            yield compile_param(definition, resource_type)

    def params(self, resource_type: str) -> Mapping[str, CompiledParam]:
        """Return the indexed parameters of a resource type by code."""
        return self._by_code.get(resource_type, {})

    def all_params(self) -> Mapping[str, Mapping[str, CompiledParam]]:
        """Return the indexed parameters of every served type, by type and code."""
        return self._by_code

    def index(self, resource: Mapping[str, Any]) -> IndexRows:
        """Extract every index value of a resource."""
        rows = IndexRows()
        for param in self._params.get(str(resource["resourceType"]), ()):
            for path in param.paths:
                for value in self._evaluate(resource, path):
                    self._add(rows, param, path, value)
        if resource["resourceType"] == "Consent":
            self._consent_actors(rows, resource.get("provision"))
        elif resource["resourceType"] == "Task":
            _open_evaluation_date(rows, resource)
            _log_owners(rows)
        return rows

    def _consent_actors(self, rows: IndexRows, provision: Any) -> None:
        # The R4 `actor` parameter sees only the top-level provision; consent enforcement must
        # find every organisation a nested provision names, so index them all (internal).
        if not isinstance(provision, dict):
            return
        for actor in _flatten(provision.get("actor")):
            if isinstance(actor, dict):
                self._add_reference(rows, CONSENT_ACTOR_PARAM, actor.get("reference"))
        for nested in _flatten(provision.get("provision")):
            self._consent_actors(rows, nested)

    def _evaluate(self, resource: Mapping[str, Any], path: _Path) -> Iterator[Any]:
        nodes: list[Any] = [resource]
        for step in path.steps:
            next_nodes: list[Any] = []
            for node in nodes:
                for child in _children(node, step):
                    if step.where_system is not None and (
                        not isinstance(child, dict) or child.get("system") != step.where_system
                    ):
                        continue
                    if step.resolve_is is not None and not self._reference_is(
                        child, step.resolve_is
                    ):
                        continue
                    next_nodes.append(child)
            nodes = next_nodes
            if not nodes:
                return
        if path.truthy:
            yield from (True for node in nodes[:1] if node is not False)
            return
        yield from nodes

    def _reference_is(self, node: Any, resource_type: str) -> bool:
        if not isinstance(node, dict) or not isinstance(node.get("reference"), str):
            return False
        target_type, _, _ = parse_reference(node["reference"], self._base_url)
        return target_type == resource_type

    def _add(self, rows: IndexRows, param: CompiledParam, path: _Path, value: Any) -> None:
        kind = param.type
        if kind in ("token", "uri"):
            for system, code in _tokens(value):
                rows.tokens.append((param.code, _clip(system), _clip(code)))
        elif kind == "string":
            for text in _strings(value):
                rows.strings.append((param.code, normalise_string(text)[:_MAX_INDEXED], text))
        elif kind == "date":
            for low, high in _dates(value):
                rows.dates.append((param.code, low, high))
        elif kind == "reference":
            self._add_reference(rows, param.code, value)

    def _add_reference(self, rows: IndexRows, code: str, value: Any) -> None:
        if isinstance(value, str):  # canonical
            rows.references.append((code, None, None, value))
            return
        if not isinstance(value, dict):
            return
        reference = value.get("reference")
        if isinstance(reference, str):
            target_type, target_id, url = parse_reference(reference, self._base_url)
            if target_type or url:
                rows.references.append((code, target_type, target_id, url))
        identifier = value.get("identifier")
        if isinstance(identifier, dict) and isinstance(identifier.get("value"), str):
            # serves the :identifier modifier (logical references by e.g. org.nr)
            rows.tokens.append(
                (f"{code}:identifier", _clip(identifier.get("system")), _clip(identifier["value"]))
            )


def _log_owners(rows: IndexRows) -> None:
    # derived from the Task's own `patient`, `owner` and `owner:identifier` rows, so it can
    # never disagree with them (migration 0009 derives it from the same rows in SQL)
    children = {i for p, t, i, _u in rows.references if p == "patient" and t == "Patient" and i}
    if not children:
        return
    owners = {
        f"{t}/{i}"
        for p, t, i, _u in rows.references
        if p == "owner" and t in ("Organization", "PractitionerRole") and i
    }
    owners |= {
        f"{LOG_OWNER_ORGNR}{c}"
        for p, s, c in rows.tokens
        if p == "owner:identifier" and s == ENH and c
    }
    rows.tokens.extend(
        (LOG_OWNER_PARAM, owner, child) for child in sorted(children) for owner in sorted(owners)
    )


def _open_evaluation_date(rows: IndexRows, task: Mapping[str, Any]) -> None:
    # docs/stafettlogg-fhir.md §11: planned evaluation = restriction.period.end, nowhere else;
    # no R4 Task parameter indexes it, and the scheduler needs only the open Tasks' dates
    if task.get("status") not in OPEN_TASK_STATUSES:
        return
    restriction = task.get("restriction")
    period = restriction.get("period") if isinstance(restriction, dict) else None
    end = period.get("end") if isinstance(period, dict) else None
    if isinstance(end, str):
        rows.dates.extend((OPEN_EVALUATION_PARAM, low, high) for low, high in _dates(end))


def _clip(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return value[:_MAX_INDEXED]


def _tokens(value: Any) -> Iterator[tuple[str | None, str | None]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "value" not in value):
            for coding in _flatten(value.get("coding")):
                if isinstance(coding, dict) and "code" in coding:
                    yield coding.get("system"), coding.get("code")
        elif "code" in value:  # Coding
            yield value.get("system"), value.get("code")
        elif "value" in value:  # Identifier, ContactPoint
            system = value.get("system")
            if system in ("phone", "fax", "email", "pager", "url", "sms", "other"):
                system = None  # ContactPoint.system is a kind, not a namespace
            yield system, value.get("value")


_NAME_PARTS = ("family", "given", "text", "prefix", "suffix")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        keys = _NAME_PARTS if ("family" in value or "given" in value) else _ADDRESS_PARTS
        if not any(key in value for key in keys):
            keys = _NAME_PARTS
        for key in keys:
            yield from (part for part in _flatten(value.get(key)) if isinstance(part, str))


def _dates(value: Any) -> Iterator[tuple[int, int]]:
    try:
        if isinstance(value, str):
            yield parse_date_range(value)
        elif isinstance(value, dict):
            if "start" in value or "end" in value:  # Period: open ends are unbounded
                low = parse_date_range(value["start"])[0] if "start" in value else None
                high = parse_date_range(value["end"])[1] if "end" in value else None
                yield (MIN_MICROS if low is None else low, MAX_MICROS if high is None else high)
            elif "event" in value:  # Timing
                for event in _flatten(value.get("event")):
                    yield parse_date_range(event)
    except InvalidDate:
        # validation has already accepted the resource; a value we cannot place is not indexed
        return
