"""Fuzz the mapping engine with garbage vendor records and garbage FHIR resources.

MappingEngine.map must answer a MappingResult or raise MappingError (which connectors turn
into a dead letter with an OperationOutcome); the source parsers only SourceError. Anything
else would stop a connector on one bad record.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping import MappingEngine, MappingError, SourceError, parse_csv, parse_xml
from tests.hardening.strategies import json_values, mutated

SCALE = float(os.environ.get("STAFETT_FUZZ_EXAMPLES_SCALE", "1"))
GOLDEN = Path(__file__).resolve().parents[1] / "mapping" / "golden"
CASES = [
    json.loads(path.read_text(encoding="utf-8")) for path in sorted(GOLDEN.glob("*/*.input.json"))
]
RECORD_CASES = [case for case in CASES if "record" in case]
ENGINE = MappingEngine.from_directory()


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


def map_or_mapping_error(case: dict[str, Any], record: Any) -> None:
    """Map record as the case says; only a MappingError may come out."""
    try:
        ENGINE.map(case["system"], case["direction"], case["kind"], record, case["context"])
    except MappingError as exc:
        error = exc
    else:
        return
    assert error.system == case["system"]
    assert str(error)


def test_the_golden_cases_cover_every_system() -> None:
    systems = {case["system"] for case in RECORD_CASES}
    assert systems == {"barnehagesystem", "barnevern", "helsestasjon-fhir", "nav", "skolesystem"}


@fuzz_settings(300)
@given(case=st.sampled_from(RECORD_CASES), record=json_values())
def test_arbitrary_records(case: dict[str, Any], record: Any) -> None:
    map_or_mapping_error(case, record)


@fuzz_settings(600)
@given(data=st.data())
def test_mutated_records(data: st.DataObject) -> None:
    case = data.draw(st.sampled_from(RECORD_CASES))
    map_or_mapping_error(case, data.draw(mutated(case["record"])))


@fuzz_settings(200)
@given(data=st.data())
def test_mutated_contexts(data: st.DataObject) -> None:
    case = dict(data.draw(st.sampled_from(RECORD_CASES)))
    case["context"] = data.draw(mutated(case["context"], max_mutations=2))
    if isinstance(case["context"], dict):
        map_or_mapping_error(case, case["record"])


@fuzz_settings(300)
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(bytes)))
def test_csv_source(text: str | bytes) -> None:
    with contextlib.suppress(SourceError):
        parse_csv(text, source="fuzz.csv")


@fuzz_settings(300)
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300),
        st.builds(
            lambda tag, body: f"<{tag}>{body}</{tag}>",
            st.from_regex(r"[a-z]{1,8}", fullmatch=True),
            st.text(max_size=100),
        ),
        st.just('<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;&a;</x>'),
    )
)
def test_xml_source(text: str | bytes) -> None:
    with contextlib.suppress(SourceError):
        parse_xml(text, source="fuzz.xml")


@pytest.mark.parametrize("case", RECORD_CASES, ids=lambda c: f"{c['system']}-{c['kind']}")
def test_golden_records_still_map(case: dict[str, Any]) -> None:
    # the mutations start from records that map, or they would test the wrong thing
    ENGINE.map(case["system"], case["direction"], case["kind"], case["record"], case["context"])


def _systems_as_lists(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: [value] if key == "system" else _systems_as_lists(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_systems_as_lists(item) for item in node]
    return node


@pytest.mark.parametrize(
    "case",
    [case for case in RECORD_CASES if case["system"] == "helsestasjon-fhir"],
    ids=lambda c: str(c["kind"]),
)
def test_regression_a_list_as_coding_system(case: dict[str, Any]) -> None:
    """test_mutated_records found it: a list as `system` was a TypeError in the cleaner."""
    map_or_mapping_error(case, _systems_as_lists(case["record"]))
