"""Golden files: every spec, both directions, against reviewed expected output.

Set STAFETT_UPDATE_GOLDEN=1 (or run `python -m tests.mapping.update_golden`) to rewrite the
expected files; review the diff against docs/stafettlogg-fhir.md before committing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from mapping import MappingEngine, transaction_bundle
from service.fhir.validation import validate_resource
from tests.mapping.golden_support import dump, expected_path, golden_inputs, run_golden

INPUTS = golden_inputs()
UPDATE = os.environ.get("STAFETT_UPDATE_GOLDEN") == "1"


def _case(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("path", INPUTS, ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}")
def test_golden(engine: MappingEngine, path: Path) -> None:
    actual = run_golden(engine, _case(path))
    expected = expected_path(path)
    if UPDATE or not expected.exists():
        expected.write_text(dump(actual), encoding="utf-8")
    assert actual == json.loads(expected.read_text(encoding="utf-8"))
    assert "error" not in actual, "golden inputs are valid records"


def _outputs() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in INPUTS:
        expected = json.loads(expected_path(path).read_text(encoding="utf-8"))
        for result in expected.get("results", [expected]):
            for entry in result.get("entries", []):
                found.append((f"{path.parent.name}/{entry['spec']}", entry["resource"]))
            record = result.get("record")
            if isinstance(record, dict) and "resourceType" in record:
                found.append((f"{path.parent.name}/{path.name} (vendor FHIR)", record))
    return found


@pytest.mark.parametrize(
    ("spec", "resource"), _outputs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_fhir_outputs_are_acceptable_to_stafett(spec: str, resource: dict[str, Any]) -> None:
    # Stafett's own write-path validation: R4B structure, primitives and required bindings
    assert validate_resource(resource) == resource["resourceType"]


def test_every_spec_has_a_golden_file(engine: MappingEngine) -> None:
    covered: set[str] = set()
    for path in INPUTS:
        expected = json.loads(expected_path(path).read_text(encoding="utf-8"))
        for result in expected.get("results", [expected]):
            covered.update(
                f"{path.parent.name}/{entry['spec']}" for entry in result.get("entries", [])
            )
        case = _case(path)
        if case["direction"] == "outbound":
            spec = engine.specs_for(case["system"], "outbound", case["kind"])[0]
            covered.add(spec.file)
    assert {spec.file for spec in engine.specs} == covered


@pytest.mark.parametrize(
    "path",
    [p for p in INPUTS if ".input." in p.name and "inbound" in p.name],
    ids=lambda p: f"{p.parent.name}/{p.name.split('.')[0]}",
)
def test_inbound_results_make_a_valid_transaction(engine: MappingEngine, path: Path) -> None:
    case = _case(path)
    if "record" not in case:
        pytest.skip("CSV case: one transaction per row is the same shape")
    result = engine.map(case["system"], "inbound", case["kind"], case["record"], case["context"])
    bundle = transaction_bundle([result])
    Bundle.model_validate(bundle)
    full_urls = {entry["fullUrl"] for entry in bundle["entry"]}
    conditional = {entry.conditional_url for entry in result.entries}
    text = json.dumps(bundle)
    for url in conditional - {None}:
        assert f'"reference": "{url}"' not in text, "references to siblings use their fullUrl"
    assert len(full_urls) == len(bundle["entry"])
