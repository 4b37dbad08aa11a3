"""Declarative vendor-format ↔ FHIR mappings: spec files run by a small, pure engine.

Connectors call `MappingEngine.map(system, direction, kind_or_resource, record, context)`;
inbound results are written with `transaction_bundle(...)`. Nothing here does I/O beyond
reading the packaged spec files, and nothing imports `service`, `connectors` or `bus`.
"""

from __future__ import annotations

from mapping.bundle import transaction_bundle
from mapping.context import MappingContext
from mapping.engine import MappingEngine
from mapping.errors import MappingError, MappingProblem, SpecError
from mapping.result import BatchResult, MappedResource, MappingResult
from mapping.sources import SourceError, parse_csv, parse_xml
from mapping.spec import DEFAULT_SPEC_DIR, Spec, load_spec, load_specs

__all__ = [
    "DEFAULT_SPEC_DIR",
    "BatchResult",
    "MappedResource",
    "MappingContext",
    "MappingEngine",
    "MappingError",
    "MappingProblem",
    "MappingResult",
    "SourceError",
    "Spec",
    "SpecError",
    "load_spec",
    "load_specs",
    "parse_csv",
    "parse_xml",
    "transaction_bundle",
]
