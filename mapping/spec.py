"""The mapping spec format: one YAML file per system, direction and resource.

A spec lives at `specs/<system>/<direction>-<kind>[-<resource>].yaml` and holds:

- `system`, `direction` (`inbound` = vendor → FHIR, `outbound` = FHIR → vendor), `kind` (the
  vendor record kind) and `resource` (the FHIR type on the Stafett side);
- `description`: what the spec carries and what it cannot carry both ways;
- `record_id`: JSONata giving the record's id for error messages;
- `when` (optional): records that do not apply are skipped; JSONata on the vendor record for
  inbound, FHIRPath on the FHIR input for outbound;
- `expression`: JSONata producing the output (inbound: one resource or an array of them);
- `fields` (optional): rules for the vendor-side record (required, type, values);
- `checks` (optional): FHIRPath expressions that must be true on the FHIR side, with messages;
- `bindings` (optional): lookup tables and constants, visible as `$name` in JSONata and, for
  tables, as `%name` (the list of keys) in FHIRPath;
- inbound only: `match` (JSONata on the output giving the conditional-update criteria) and
  `create_only` (write with `ifNoneExist`: the resource is shared, never overwritten);
- outbound only: `input: bundle` when the vendor record is built from several resources, and
  `vendor_resource` when the vendor side is FHIR too (the output is then validated as well).

`specs/_common.yaml` holds bindings shared by every spec (codings of stafettlogg-fhir.md §18).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from mapping._internal.expressions import ExpressionSyntaxError, FhirPath, Jsonata
from mapping._internal.fhir import is_resource_type
from mapping._internal.fields import FieldRule, compile_fields
from mapping.errors import SpecError

__all__ = ["DEFAULT_SPEC_DIR", "Check", "Direction", "Spec", "load_spec", "load_specs"]

Direction = Literal["inbound", "outbound"]
DEFAULT_SPEC_DIR: Final = Path(__file__).parent / "specs"
COMMON_FILE: Final = "_common.yaml"
_KEYS: Final = frozenset(
    {
        "system",
        "direction",
        "kind",
        "resource",
        "description",
        "record_id",
        "when",
        "expression",
        "fields",
        "checks",
        "bindings",
        "match",
        "create_only",
        "input",
        "vendor_resource",
    }
)
_FIELD: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REQUIRED: Final = ("system", "direction", "kind", "resource", "description", "record_id")


@dataclass(frozen=True, slots=True)
class Check:
    """A FHIRPath expression that must be true on the FHIR side, and what to say if not."""

    expression: FhirPath
    message: str
    path: str | None


@dataclass(frozen=True, slots=True)
class Spec:
    """One loaded, compiled spec file."""

    file: str
    system: str
    direction: Direction
    kind: str
    resource: str
    description: str
    record_id: Jsonata
    expression: Jsonata
    when_jsonata: Jsonata | None = None
    when_fhirpath: FhirPath | None = None
    fields: tuple[FieldRule, ...] = ()
    checks: tuple[Check, ...] = ()
    bindings: Mapping[str, Any] = field(default_factory=dict)
    fhirpath_vars: Mapping[str, Any] = field(default_factory=dict)
    match: Jsonata | None = None
    create_only: bool = False
    input: Literal["resource", "bundle"] = "resource"
    vendor_resource: str | None = None
    record_id_field: str | None = None

    @property
    def name(self) -> str:
        """Return the spec's file name, e.g. `inbound-tiltak.yaml`."""
        return self.file.rsplit("/", 1)[-1]


def _read_yaml(path: Path, label: str) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(label, f"cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SpecError(label, f"is not valid YAML: {exc}") from exc


def _text(raw: Mapping[str, Any], key: str, label: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise SpecError(label, f"`{key}` must be a non-empty string")
    return value


def _jsonata(raw: Mapping[str, Any], key: str, label: str) -> Jsonata:
    source = _text(raw, key, label)
    try:
        return Jsonata(source)
    except ExpressionSyntaxError as exc:
        raise SpecError(label, f"`{key}`: {exc}") from exc


def _fhirpath(source: Any, where: str, label: str) -> FhirPath:
    if not isinstance(source, str) or not source.strip():
        raise SpecError(label, f"`{where}` must be a non-empty FHIRPath string")
    try:
        return FhirPath(source)
    except ExpressionSyntaxError as exc:
        raise SpecError(label, f"`{where}`: {exc}") from exc


def _checks(raw: Any, label: str) -> tuple[Check, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SpecError(label, "`checks` must be a list of {expression, message}")
    checks = []
    for number, item in enumerate(raw):
        where = f"checks[{number}]"
        if not isinstance(item, Mapping) or set(item) - {"expression", "message", "path"}:
            raise SpecError(label, f"`{where}` must have expression, message and optional path")
        message = item.get("message")
        if not isinstance(message, str) or not message:
            raise SpecError(label, f"`{where}.message` must be a non-empty string")
        path = item.get("path")
        if path is not None and not isinstance(path, str):
            raise SpecError(label, f"`{where}.path` must be a string")
        checks.append(
            Check(_fhirpath(item.get("expression"), f"{where}.expression", label), message, path)
        )
    return tuple(checks)


def _bindings(raw: Any, common: Mapping[str, Any], label: str) -> dict[str, Any]:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) for k in raw):
        raise SpecError(label, "`bindings` must be a mapping of names to values")
    return {**common, **raw}


def load_spec(path: Path, *, root: Path, common: Mapping[str, Any] | None = None) -> Spec:
    """Load, check and compile one spec file; raise SpecError naming the file and problem."""
    label = path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)
    raw = _read_yaml(path, label)
    if not isinstance(raw, Mapping):
        raise SpecError(label, "must be a YAML mapping")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise SpecError(label, f"unknown keys {unknown} (allowed: {sorted(_KEYS)})")
    for key in _REQUIRED:
        _text(raw, key, label)
    system, direction, kind, resource = (
        raw[k] for k in ("system", "direction", "kind", "resource")
    )
    if direction not in ("inbound", "outbound"):
        raise SpecError(label, f"`direction` must be inbound or outbound, not {direction!r}")
    if path.parent.name != system:
        raise SpecError(label, f"`system` is {system!r} but the file is in {path.parent.name}/")
    stem = path.name.removesuffix(".yaml")
    if stem not in (f"{direction}-{kind}", f"{direction}-{kind}-{resource.lower()}"):
        raise SpecError(
            label,
            f"file name must be {direction}-{kind}.yaml"
            f" or {direction}-{kind}-{resource.lower()}.yaml",
        )
    if not is_resource_type(resource):
        raise SpecError(label, f"`resource` {resource!r} is not an R4 resource type")
    vendor_resource = raw.get("vendor_resource")
    if vendor_resource is not None and not is_resource_type(str(vendor_resource)):
        raise SpecError(label, f"`vendor_resource` {vendor_resource!r} is not an R4 resource type")
    if direction == "inbound" and ("input" in raw or vendor_resource):
        raise SpecError(label, "`input` and `vendor_resource` are for outbound specs")
    if direction == "outbound" and ("match" in raw or "create_only" in raw):
        raise SpecError(label, "`match` and `create_only` are for inbound specs")
    input_kind = raw.get("input", "resource")
    if input_kind not in ("resource", "bundle"):
        raise SpecError(label, f"`input` must be resource or bundle, not {input_kind!r}")
    bindings = _bindings(raw.get("bindings"), common or {}, label)
    try:
        fields = compile_fields(raw.get("fields"), bindings)
    except ValueError as exc:
        raise SpecError(label, str(exc)) from exc
    when = raw.get("when")
    return Spec(
        file=label,
        system=system,
        direction=direction,
        kind=kind,
        resource=resource,
        description=raw["description"].strip(),
        record_id=_jsonata(raw, "record_id", label),
        expression=_jsonata(raw, "expression", label),
        when_jsonata=_jsonata(raw, "when", label)
        if when is not None and direction == "inbound"
        else None,
        when_fhirpath=_fhirpath(when, "when", label)
        if when is not None and direction == "outbound"
        else None,
        fields=fields,
        checks=_checks(raw.get("checks"), label),
        bindings=bindings,
        fhirpath_vars={k: list(v) for k, v in bindings.items() if isinstance(v, (Mapping, list))},
        match=_jsonata(raw, "match", label) if "match" in raw else None,
        create_only=bool(raw.get("create_only", False)),
        input=input_kind,
        vendor_resource=vendor_resource,
        record_id_field=raw["record_id"].strip()
        if _FIELD.fullmatch(raw["record_id"].strip())
        else None,
    )


def load_specs(directory: Path | None = None) -> tuple[Spec, ...]:
    """Load every spec under directory (default: the packaged specs); fail on a broken one."""
    root = Path(directory) if directory is not None else DEFAULT_SPEC_DIR
    if not root.is_dir():
        raise SpecError(str(root), "is not a directory of mapping specs")
    common: Mapping[str, Any] = {}
    common_path = root / COMMON_FILE
    if common_path.exists():
        raw = _read_yaml(common_path, COMMON_FILE)
        if not isinstance(raw, Mapping) or set(raw) - {"bindings", "description"}:
            raise SpecError(COMMON_FILE, "must hold only `description` and `bindings`")
        common = _bindings(raw.get("bindings"), {}, COMMON_FILE)
    specs = [load_spec(path, root=root, common=common) for path in sorted(root.glob("*/*.yaml"))]
    seen: dict[tuple[str, str, str, str], str] = {}
    for spec in specs:
        key = (spec.system, spec.direction, spec.kind, spec.resource)
        if key in seen:
            raise SpecError(
                spec.file, f"maps the same system, direction, kind and resource as {seen[key]}"
            )
        seen[key] = spec.file
    return tuple(specs)
