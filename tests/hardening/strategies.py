"""Hypothesis strategies for hostile input: edge-case primitives, JSON, and mutated examples."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples" / "stafettlogg"

# The strings that break parsers: empty, blank, NUL and control characters, surrogates as
# escapes, lookalike dates and identifiers, separators of the search syntax, very long text.
EDGE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x1f",
    "\ufeff",
    "\u202e",
    "\ud7ff",
    "😀",
    "null",
    "-0",
    "1e999",
    "0000",
    "2026",
    "2026-02-30",
    "2026-13-01",
    "2026-01-01T25:00:00Z",
    "2026-01-01T10:00:00+99:00",
    "9999-12-31T23:59:59.999999999Z",
    "0001-01-01",
    "gt2026",
    "ap",
    "eq",
    "|",
    "||",
    "a|b|c",
    ",",
    ",,",
    "$",
    "\\,",
    ":",
    ".",
    "..",
    "Patient/",
    "/Patient/1",
    "Patient/../Task/1",
    "http://",
    "urn:oid:",
    "urn:oid:2.16.578.1.12.4.1.4.1|",
    "%00",
    "%",
    "'; DROP TABLE resources; --",
    "*",
    "_",
    "x" * 5000,
]


def edge_text() -> st.SearchStrategy[str]:
    """Return edge-case strings mixed with arbitrary text."""
    return st.one_of(st.sampled_from(EDGE_STRINGS), st.text(max_size=40))


def json_scalars() -> st.SearchStrategy[Any]:
    """Return JSON scalars, including the extremes FHIR's primitives must refuse."""
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        edge_text(),
    )


def json_values(max_leaves: int = 20) -> st.SearchStrategy[Any]:
    """Return arbitrary JSON values (objects, arrays, scalars)."""
    return st.recursive(
        json_scalars(),
        lambda children: st.one_of(
            st.lists(children, max_size=4),
            st.dictionaries(edge_text(), children, max_size=4),
        ),
        max_leaves=max_leaves,
    )


def load_examples() -> list[dict[str, Any]]:
    """Return the example resources of examples/stafettlogg (not the Bundles)."""
    found = []
    for path in sorted(EXAMPLES_DIR.glob("*.json")):
        resource = json.loads(path.read_text(encoding="utf-8"))
        if resource.get("resourceType") != "Bundle":
            found.append(resource)
    return found


def _slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Yield (container, key) of every value below node."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield node, key
            yield from _slots(child)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield node, index
            yield from _slots(child)


@st.composite
def mutated(draw: st.DrawFn, document: Any, max_mutations: int = 4) -> Any:
    """Return a copy of document with a few values replaced, removed or retyped."""
    result = copy.deepcopy(document)
    for _ in range(draw(st.integers(min_value=1, max_value=max_mutations))):
        slots = list(_slots(result))
        if not slots:
            break
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "scalar", "remove", "wrap", "add"]))
        if action == "remove":
            del container[key]
        elif action == "wrap":  # the right value, the wrong shape
            container[key] = draw(st.sampled_from([[container[key]], {"value": container[key]}]))
        elif action == "add" and isinstance(container, dict):
            container[draw(edge_text())] = draw(json_values(max_leaves=4))
        elif action == "scalar":
            container[key] = draw(json_scalars())
        else:
            container[key] = draw(json_values(max_leaves=6))
    return result
