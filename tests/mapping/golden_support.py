"""Run a golden input through the engine and render what the mapping produced as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mapping import MappingEngine, MappingError, MappingResult, parse_csv

GOLDEN_DIR = Path(__file__).parent / "golden"


def _render(result: MappingResult) -> dict[str, Any]:
    if result.direction == "inbound":
        return {
            "record_id": result.record_id,
            "skipped": list(result.skipped),
            "entries": [
                {
                    "spec": entry.spec,
                    "match": entry.match,
                    "create_only": entry.create_only,
                    "resource": entry.resource,
                }
                for entry in result.entries
            ],
        }
    return {"record_id": result.record_id, "skipped": list(result.skipped), "record": result.record}


def run_golden(engine: MappingEngine, case: dict[str, Any]) -> Any:
    """Map a golden case: one `record`, or every row of a `csv` text."""
    args = (case["system"], case["direction"], case["kind"])
    if "csv" in case:
        rows = parse_csv(case["csv"], source="golden.csv")
        batch = engine.map_many(*args, rows, case["context"])
        return {
            "results": [_render(r) for r in batch.results],
            "errors": [e.as_dict() for e in batch.errors],
        }
    try:
        return _render(engine.map(*args, case["record"], case["context"]))
    except MappingError as exc:
        return {"error": exc.as_dict()}


def golden_inputs() -> list[Path]:
    """Return every golden input file."""
    return sorted(GOLDEN_DIR.glob("*/*.input.json"))


def expected_path(input_path: Path) -> Path:
    """Return the expected-output file beside an input file."""
    return input_path.with_name(input_path.name.replace(".input.json", ".expected.json"))


def dump(value: Any) -> str:
    """Render JSON the way golden files are stored."""
    return json.dumps(value, ensure_ascii=False, indent=2) + "\n"
