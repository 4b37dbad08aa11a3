"""The mapping engine: runs the specs on vendor records and FHIR resources.

Pure data transformation: no I/O beyond reading the spec files at start, no network, no
database. Every FHIR output is validated with the fhir.resources R4B models; errors name the
system, the spec file, the record id and the field path.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from mapping._internal.clean import clean_resource, plain
from mapping._internal.expressions import JsonataFunction
from mapping._internal.fhir import fhir_problems
from mapping._internal.identifiers import FNR_SYSTEM, orgnr_problem, sid_base
from mapping._internal.references import (
    RuleViolation,
    build_index,
    child_reference,
    guardian_reference,
    identifier_of,
    organization_reference,
)
from mapping.context import MappingContext
from mapping.errors import MappingError
from mapping.result import BatchResult, MappedResource, MappingResult
from mapping.spec import Direction, Spec, load_specs

__all__ = ["MappingEngine"]

# Order of the resources of one record, so that what others point to comes first.
_ORDER: Final = ("PractitionerRole", "Patient", "RelatedPerson", "CareTeam", "CarePlan")
_LOG_CATEGORY: Final = "https://stafett.no/fhir/CodeSystem/log-category|stafettlogg"
ContextArg = Mapping[str, Any] | Callable[[Any], Mapping[str, Any]] | None


def _rank(spec: Spec) -> int:
    return _ORDER.index(spec.resource) if spec.resource in _ORDER else len(_ORDER)


def _num(value: Any = None) -> Any:
    """Return a string of digits as an integer (school ids are numbers), anything else as is."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    return value


def _fail(message: Any = None, path: Any = None) -> None:
    raise RuleViolation(str(message or "the record breaks a rule of the spec"), path and str(path))


def _default_match(resource: Mapping[str, Any]) -> str | None:
    identifiers = resource.get("identifier")
    if isinstance(identifiers, list) and identifiers:
        first = identifiers[0]
        if isinstance(first, Mapping) and first.get("system") and first.get("value"):
            return f"identifier={first['system']}|{first['value']}"
    return None


class MappingEngine:
    """Maps vendor records to FHIR resources and back, as the spec files say."""

    def __init__(self, specs: Iterable[Spec]) -> None:
        self._specs = tuple(specs)
        self._by_key: dict[tuple[str, str, str], list[Spec]] = {}
        for spec in sorted(self._specs, key=_rank):
            self._by_key.setdefault((spec.system, spec.direction, spec.kind), []).append(spec)
        for spec in self._specs:
            if spec.direction == "outbound":
                key = (spec.system, "outbound", spec.resource)
                self._by_key.setdefault(key, []).append(spec)

    @classmethod
    def from_directory(cls, path: str | Path | None = None) -> MappingEngine:
        """Load and compile every spec under path (default: the packaged specs)."""
        return cls(load_specs(Path(path) if path is not None else None))

    @property
    def specs(self) -> tuple[Spec, ...]:
        """Return the loaded specs."""
        return self._specs

    def specs_for(self, system: str, direction: Direction, kind_or_resource: str) -> list[Spec]:
        """Return the specs that map this kind (or FHIR type) of record, in write order."""
        found = self._by_key.get((system, direction, kind_or_resource))
        if found is None and direction == "inbound":
            found = [
                s
                for s in self._specs
                if (s.system, s.direction, s.resource) == (system, direction, kind_or_resource)
            ]
        if not found:
            known = sorted(
                {s.kind for s in self._specs if (s.system, s.direction) == (system, direction)}
            )
            raise MappingError(
                f"no {direction} spec for {kind_or_resource!r} (known kinds: {known or 'none'})",
                system=system,
            )
        return found

    def map(
        self,
        system: str,
        direction: Direction,
        kind_or_resource: str,
        record: Any,
        context: Mapping[str, Any] | MappingContext | None = None,
    ) -> MappingResult:
        """Map one record; raise MappingError naming system, spec, record id and field path."""
        specs = self.specs_for(system, direction, kind_or_resource)
        ctx: Mapping[str, Any] = context or {}
        if direction == "inbound":
            return self._inbound(system, kind_or_resource, specs, record, ctx)
        return self._outbound(system, specs[0], record, ctx)

    def map_many(
        self,
        system: str,
        direction: Direction,
        kind_or_resource: str,
        records: Iterable[Any],
        context: ContextArg = None,
    ) -> BatchResult:
        """Map many records, collecting each failing record's error instead of stopping."""
        results: list[MappingResult] = []
        errors: list[MappingError] = []
        for index, record in enumerate(records):
            ctx = context(record) if callable(context) else context
            try:
                results.append(self.map(system, direction, kind_or_resource, record, ctx))
            except MappingError as exc:
                errors.append(exc.with_index(index))
        return BatchResult(tuple(results), tuple(errors))

    # -- bindings ------------------------------------------------------------------------------
    def _bindings(
        self, spec: Spec, ctx: Mapping[str, Any], index: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        orgnr = ctx.get("operator_orgnr")
        problem = orgnr_problem(orgnr)
        if problem:
            raise MappingError(
                f"the context must give the operator's org.nr: {problem}",
                system=spec.system,
                spec=spec.name,
                path="context.operator_orgnr",
            )
        slug = str(ctx.get("source_system") or spec.system)
        sid = sid_base(str(orgnr), slug)
        patient = ctx.get("patient")
        context_fnr = ctx.get("fnr")
        careplan = ctx.get("careplan")
        lookup = index if index is not None else ctx.get("identifiers") or {}

        def child(fnr: Any = None) -> str | None:
            if patient:
                return str(patient)
            fnr = fnr or context_fnr
            return child_reference(str(fnr)) if fnr else None

        def log(fnr: Any = None) -> str | None:
            if careplan:
                return str(careplan)
            fnr = fnr or context_fnr
            if not fnr:
                return None
            subject = f"subject.identifier={FNR_SYSTEM}|{fnr}"
            return f"CarePlan?{subject}&category={_LOG_CATEGORY}&status=active"

        def idof(reference: Any = None, system: Any = None) -> str | None:
            return identifier_of(reference, str(system), lookup) if reference is not None else None

        return {
            **spec.bindings,
            "orgnr": orgnr,
            "slug": slug,
            "sid": sid,
            "unit": ctx.get("unit_orgnr"),
            "fnr": context_fnr,
            "ids": ctx.get("ids") or {},
            "vendor_id": ctx.get("vendor_id"),
            "record_ids": ctx.get("record_ids") or {},
            "today": ctx.get("today") or dt.date.today().isoformat(),
            "sent": ctx.get("sent"),
            "event_id": ctx.get("event_id"),
            "event_time": ctx.get("event_time"),
            "child": JsonataFunction(child),
            "careplan": JsonataFunction(log),
            "idof": JsonataFunction(idof),
            "org": JsonataFunction(lambda n=None: organization_reference(str(n)) if n else None),
            "guardian": JsonataFunction(
                lambda g=None, c=None: (
                    guardian_reference(str(g), str(c or context_fnr)) if g else None
                )
            ),
            "role": JsonataFunction(
                lambda a=None: f"PractitionerRole?identifier={sid}ansatt|{a}" if a else None
            ),
            "num": JsonataFunction(_num),
            "fail": JsonataFunction(_fail),
        }

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _record_id(spec: Spec, record: Any, bindings: Mapping[str, Any]) -> str | None:
        if spec.record_id_field is not None:  # the common case: a plain field, no interpreter
            value = record.get(spec.record_id_field) if isinstance(record, Mapping) else None
            return None if value is None or isinstance(value, (dict, list)) else str(value)
        try:
            value = spec.record_id.evaluate(record, bindings)
        except Exception:
            return None
        return None if value is None or isinstance(value, (dict, list)) else str(value)

    @staticmethod
    def _run(spec: Spec, record: Any, bindings: Mapping[str, Any], record_id: str | None) -> Any:
        try:
            return spec.expression.evaluate(record, bindings)
        except RuleViolation as exc:
            raise MappingError(
                exc.message, system=spec.system, spec=spec.name, record_id=record_id, path=exc.path
            ) from None
        except Exception as exc:
            raise MappingError(
                f"the expression failed: {exc}",
                system=spec.system,
                spec=spec.name,
                record_id=record_id,
            ) from exc

    @staticmethod
    def _check_fields(spec: Spec, record: Any, record_id: str | None, side: str) -> None:
        for rule in spec.fields:
            for problem in rule.problems(record):
                message = problem.message
                if problem.source:
                    message = f"{side} field {problem.path} {problem.message}"
                raise MappingError(
                    message,
                    system=spec.system,
                    spec=spec.name,
                    record_id=record_id,
                    path=problem.source or problem.path,
                )

    @staticmethod
    def _check_fhir(
        spec: Spec, resource: dict[str, Any], resource_type: str, record_id: str | None
    ) -> None:
        problems = fhir_problems(resource, resource_type)
        if problems:
            path, message = problems[0]
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise MappingError(
                f"not a valid R4 {resource_type}: {message}{more}",
                system=spec.system,
                spec=spec.name,
                record_id=record_id,
                path=path,
            )

    @staticmethod
    def _check_rules(spec: Spec, resource: Any, record_id: str | None) -> None:
        for check in spec.checks:
            if not check.expression.is_true(resource, spec.fhirpath_vars):
                raise MappingError(
                    check.message,
                    system=spec.system,
                    spec=spec.name,
                    record_id=record_id,
                    path=check.path or spec.resource,
                )

    # -- inbound -------------------------------------------------------------------------------
    def _inbound(
        self, system: str, kind: str, specs: list[Spec], record: Any, ctx: Mapping[str, Any]
    ) -> MappingResult:
        entries: list[MappedResource] = []
        skipped: list[str] = []
        record_id: str | None = None
        ids = ctx.get("ids") or {}
        for spec in specs:
            bindings = self._bindings(spec, ctx)
            record_id = self._record_id(spec, record, bindings)
            if not isinstance(record, Mapping):
                raise MappingError(
                    f"a {spec.kind} record must be a JSON object, not {type(record).__name__}",
                    system=system,
                    spec=spec.name,
                )
            self._check_fields(spec, record, record_id, "vendor")
            if spec.when_jsonata is not None and not spec.when_jsonata.evaluate(record, bindings):
                skipped.append(spec.name)
                continue
            output = self._run(spec, record, bindings, record_id)
            for item in output if isinstance(output, list) else [output]:
                if not isinstance(item, Mapping):
                    raise MappingError(
                        f"the expression gave {type(item).__name__}, not a {spec.resource}",
                        system=system,
                        spec=spec.name,
                        record_id=record_id,
                    )
                entries.append(
                    self._finish(
                        spec,
                        item=item,
                        record=record,
                        bindings=bindings,
                        record_id=record_id,
                        ids=ids,
                    )
                )
        return MappingResult(
            system, "inbound", kind, record_id, tuple(entries), None, tuple(skipped)
        )

    def _finish(
        self,
        spec: Spec,
        *,
        item: Mapping[str, Any],
        record: Any,
        bindings: dict[str, Any],
        record_id: str | None,
        ids: Mapping[str, str],
    ) -> MappedResource:
        raw = {"resourceType": spec.resource, **item}
        if spec.resource in ids:
            raw["id"] = ids[spec.resource]
        resource, id_problems = clean_resource(raw, spec.resource)
        if id_problems:
            path, message = id_problems[0]
            raise MappingError(
                message, system=spec.system, spec=spec.name, record_id=record_id, path=path
            )
        self._check_fhir(spec, resource, spec.resource, record_id)
        self._check_rules(spec, resource, record_id)
        if spec.match is not None:
            match = spec.match.evaluate(resource, {**bindings, "record": record})
            match = str(match) if match else None
        else:
            match = _default_match(resource)
        return MappedResource(resource, spec.name, match, spec.create_only)

    # -- outbound ------------------------------------------------------------------------------
    def _outbound(
        self, system: str, spec: Spec, data: Any, ctx: Mapping[str, Any]
    ) -> MappingResult:
        data, resources = self._outbound_input(spec, data)
        index = build_index(ctx.get("identifiers"), resources)
        bindings = self._bindings(spec, ctx, index)
        record_id = self._record_id(spec, data, bindings)
        if spec.when_fhirpath is not None and not spec.when_fhirpath.is_true(
            data, spec.fhirpath_vars
        ):
            return MappingResult(system, "outbound", spec.kind, record_id, skipped=(spec.name,))
        self._check_rules(spec, data, record_id)
        output = self._run(spec, data, bindings, record_id)
        if not isinstance(output, Mapping):
            raise MappingError(
                f"the expression gave {type(output).__name__}, not a {spec.kind} record",
                system=system,
                spec=spec.name,
                record_id=record_id,
            )
        record = plain(output)
        if spec.vendor_resource:
            record, id_problems = clean_resource(record, spec.vendor_resource)
            if id_problems:
                path, message = id_problems[0]
                raise MappingError(
                    message, system=system, spec=spec.name, record_id=record_id, path=path
                )
            self._check_fhir(spec, record, spec.vendor_resource, record_id)
        self._check_fields(spec, record, record_id, "vendor")
        return MappingResult(system, "outbound", spec.kind, record_id, record=record)

    @staticmethod
    def _outbound_input(
        spec: Spec, data: Any
    ) -> tuple[Any, list[tuple[str | None, Mapping[str, Any]]]]:
        """Return the input as the spec expects it and the resources it holds (for the index)."""
        if isinstance(data, list):
            entries = [{"resource": r} for r in data]
            data = {"resourceType": "Bundle", "type": "collection", "entry": entries}
        if not isinstance(data, Mapping) or not isinstance(data.get("resourceType"), str):
            raise MappingError(
                "the input must be a FHIR resource (a JSON object with resourceType)",
                system=spec.system,
                spec=spec.name,
            )
        if spec.input == "bundle":
            if data["resourceType"] != "Bundle":
                data = {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "entry": [{"resource": data}],
                }
            entries = data.get("entry") or []
            if not isinstance(entries, list):
                raise MappingError(
                    "Bundle.entry must be an array", system=spec.system, spec=spec.name
                )
            found = [
                (
                    full_url if isinstance(full_url := entry.get("fullUrl"), str) else None,
                    entry["resource"],
                )
                for entry in entries
                if isinstance(entry, Mapping) and isinstance(entry.get("resource"), Mapping)
            ]
            return data, found
        if data["resourceType"] != spec.resource:
            raise MappingError(
                f"expected a {spec.resource}, got a {data['resourceType']}",
                system=spec.system,
                spec=spec.name,
                path=f"{spec.resource}.resourceType",
            )
        return data, []
