"""Regenerate the expected golden outputs: `python -m tests.mapping.update_golden`.

Review the diff against docs/stafettlogg-fhir.md before committing: a golden file is a claim
that the mapping is right, not a snapshot of whatever it does.
"""

from __future__ import annotations

import json

from mapping import MappingEngine
from tests.mapping.golden_support import dump, expected_path, golden_inputs, run_golden


def main() -> None:
    """Write `<spec>.expected.json` beside every `<spec>.input.json`."""
    engine = MappingEngine.from_directory()
    for path in golden_inputs():
        case = json.loads(path.read_text(encoding="utf-8"))
        expected_path(path).write_text(dump(run_golden(engine, case)), encoding="utf-8")
        print(f"wrote {expected_path(path).relative_to(path.parents[2])}")


if __name__ == "__main__":
    main()
