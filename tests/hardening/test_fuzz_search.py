"""Fuzz search: parameter parsing, date parsing, and whole searches over HTTP on both backends.

Parsing may only refuse with BadRequest (a 400 OperationOutcome); a search over HTTP may
answer 200 or a 4xx, never a 500.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.errors import FhirError
from service.fhir.spec import SUPPORTED_RESOURCE_TYPES
from service.search.extract import ResourceIndexer
from service.search.query import DATE_PREFIXES, RESULT_PARAMS, parse_search
from service.search.values import InvalidDate, parse_date_range
from tests.hardening.strategies import edge_text
from tests.support import FNR_SYSTEM, LiveServer

SCALE = float(os.environ.get("STAFETT_FUZZ_EXAMPLES_SCALE", "1"))
KNOWN = ResourceIndexer(base_url="http://127.0.0.1/fhir").all_params()
TYPES = sorted(SUPPORTED_RESOURCE_TYPES)
MODIFIERS = [
    "missing",
    "not",
    "exact",
    "contains",
    "identifier",
    "below",
    "above",
    "text",
    "iterate",
    "Patient",
    "Task",
    "",
]


def fuzz_settings(examples: int) -> settings:
    """Return bounded Hypothesis settings: examples times the scale, no deadline."""
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,
        # `make test` replays the same inputs (a CI run fails only on a change of ours);
        # `make fuzz` draws new ones (STAFETT_FUZZ_RANDOM=1)
        derandomize=os.environ.get("STAFETT_FUZZ_RANDOM") != "1",
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def search_name(draw: st.DrawFn, resource_type: str) -> str:
    """Return a parameter name: real, with modifiers or chains, or garbage."""
    codes = sorted(KNOWN[resource_type]) or ["_id"]
    base = draw(
        st.one_of(
            st.sampled_from(codes),
            st.sampled_from(sorted(RESULT_PARAMS | {"_id", "_lastUpdated"})),
            edge_text(),
        )
    )
    shape = draw(st.sampled_from(["plain", "modifier", "chain", "chain-modifier", "include"]))
    if shape == "modifier":
        return f"{base}:{draw(st.sampled_from(MODIFIERS))}"
    if shape == "chain":
        return f"{base}.{draw(st.one_of(st.sampled_from(codes), edge_text()))}"
    if shape == "chain-modifier":
        return f"{base}:{draw(st.sampled_from(TYPES))}.{draw(st.sampled_from(codes))}"
    if shape == "include":
        return draw(st.sampled_from(["_include", "_revinclude"])) + ":" + draw(edge_text())
    return base


@st.composite
def search_value(draw: st.DrawFn) -> str:
    """Return a value in one of the search syntaxes, or garbage."""
    return str(
        draw(
            st.one_of(
                edge_text(),
                st.builds(
                    lambda p, d: p + d,
                    st.sampled_from(["", *DATE_PREFIXES]),
                    st.one_of(edge_text(), st.dates().map(str), st.datetimes().map(str)),
                ),
                st.builds(lambda s, c: f"{s}|{c}", edge_text(), edge_text()),
                st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(TYPES), edge_text()),
                st.builds(
                    lambda t, p, v: f"{t}:{p}:{v}",
                    st.sampled_from(TYPES),
                    st.sampled_from(["subject", "patient", "owner", "*"]),
                    st.sampled_from(["", "Patient", "x"]),
                ),
                st.lists(edge_text(), max_size=4).map(",".join),
                st.integers().map(str),
            )
        )
    )


@st.composite
def searches(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    """Return a resource type and up to eight parameter pairs."""
    resource_type = draw(st.sampled_from(TYPES))
    pairs = draw(
        st.lists(st.tuples(search_name(resource_type), search_value()), min_size=1, max_size=8)
    )
    return resource_type, pairs


def _parse(resource_type: str, pairs: list[tuple[str, str]], *, strict: bool) -> Any:
    return parse_search(
        resource_type, pairs, known=KNOWN, default_count=20, max_count=500, strict=strict
    )


@fuzz_settings(500)
@given(search=searches(), strict=st.booleans())
@example(search=("Task", [("_count", "9" * 400)]), strict=False)
@example(search=("Task", [("subject:Patient.identifier:missing", "x")]), strict=True)
@example(search=("Task", [("_include:iterate", "*")]), strict=False)
def test_search_parameter_parsing(search: tuple[str, list[tuple[str, str]]], strict: bool) -> None:
    resource_type, pairs = search
    try:
        _parse(resource_type, pairs, strict=strict)
    except FhirError as exc:
        error = exc
    else:
        return
    assert error.status == 400, error


@fuzz_settings(1000)
@given(text=st.one_of(edge_text(), st.datetimes().map(str), st.dates().map(str)))
@example(text="2026-01-01T10:00:00+14:01")
@example(text="10000-01-01")
def test_date_parsing(text: str) -> None:
    try:
        low, high = parse_date_range(text)
    except InvalidDate:
        return
    assert low <= high


@pytest.mark.e2e
@fuzz_settings(150)
@given(search=searches())
@example(search=("Patient", [("identifier", f"{FNR_SYSTEM}|\x00")]))
@example(search=("Patient", [("name", "a\x00b")]))
@example(search=("Task", [("subject.identifier", f"{FNR_SYSTEM}|1\x00")]))
@example(search=("Task", [("_lastUpdated", "gt9999-12-31T23:59:59Z")]))
def test_searches_over_http(server: LiveServer, search: tuple[str, list[tuple[str, str]]]) -> None:
    """Run the search on both backends: 200 or a 4xx OperationOutcome, never a 500."""
    resource_type, pairs = search
    with server.client(server.system_token(org="974760673")) as client:
        response = client.get(f"/{resource_type}", params=pairs)
    assert response.status_code < 500, (pairs, response.text)
    if response.status_code != 200:
        assert response.json()["resourceType"] == "OperationOutcome"
