"""The settings table of docs/OPERATIONS.md, generated from `service.config.Settings`.

`python -m tests.ops.settings_table` rewrites the table in place after a setting changes;
tests/ops/test_operations_doc.py fails while the table and the code disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.config import Settings

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "OPERATIONS.md"
BEGIN = (
    "<!-- settings: generated from service.config.Settings by "
    "`python -m tests.ops.settings_table` -->"
)
END = "<!-- end of settings -->"


def _default(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def render_table() -> str:
    """Return the markdown table of every setting: variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = _default(field.get_default(call_default_factory=True))
        meaning = (field.description or "").replace("|", "/")
        rows.append(f"| `STAFETT_{name.upper()}` | `{default}` | {meaning} |")
    return "\n".join(rows)


def with_table(document: str) -> str:
    """Return the document with the text between the markers replaced by the table."""
    start = document.index(BEGIN) + len(BEGIN)
    end = document.index(END)
    return document[:start] + "\n\n" + render_table() + "\n\n" + document[end:]


def main() -> None:
    """Rewrite the table in docs/OPERATIONS.md."""
    OPERATIONS.write_text(with_table(OPERATIONS.read_text()))


if __name__ == "__main__":
    main()
