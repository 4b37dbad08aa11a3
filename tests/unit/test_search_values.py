"""Pure search logic: date ranges, string folding, reference parsing, value splitting."""

from __future__ import annotations

import pytest

from service.search.extract import ResourceIndexer, parse_reference
from service.search.query import split_values
from service.search.values import InvalidDate, micros_to_instant, normalise_string, parse_date_range

BASE = "http://stafett.test/fhir"


@pytest.mark.parametrize(
    ("value", "low", "high"),
    [
        ("2026", "2026-01-01T00:00:00.000Z", "2026-12-31T23:59:59.999Z"),
        ("2024-02", "2024-02-01T00:00:00.000Z", "2024-02-29T23:59:59.999Z"),
        ("2026-12", "2026-12-01T00:00:00.000Z", "2026-12-31T23:59:59.999Z"),
        ("2026-11-01", "2026-11-01T00:00:00.000Z", "2026-11-01T23:59:59.999Z"),
        ("2026-11-01T10:00:00+01:00", "2026-11-01T09:00:00.000Z", "2026-11-01T09:00:00.999Z"),
        ("2026-11-01T10:00:00.5Z", "2026-11-01T10:00:00.500Z", "2026-11-01T10:00:00.599Z"),
    ],
)
def test_date_ranges_follow_precision(value: str, low: str, high: str) -> None:
    start, end = parse_date_range(value)
    assert (micros_to_instant(start), micros_to_instant(end)) == (low, high)


@pytest.mark.parametrize(
    "value", ["2026-13", "2026-02-30", "26-01-01", "2026-01-01T25:00:00Z", "x"]
)
def test_invalid_dates(value: str) -> None:
    with pytest.raises(InvalidDate):
        parse_date_range(value)


@pytest.mark.parametrize(
    ("value", "folded"),
    [("Ødegård", "odegard"), ("ÆRLIG", "aerlig"), ("Müller", "muller"), ("Straße", "strasse")],
)
def test_string_folding(value: str, folded: str) -> None:
    assert normalise_string(value) == folded


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/123", ("Patient", "123", None)),
        ("Patient/123/_history/2", ("Patient", "123", None)),
        (f"{BASE}/Patient/abc", ("Patient", "abc", None)),
        (
            "https://other.example/fhir/Patient/1",
            (None, None, "https://other.example/fhir/Patient/1"),
        ),
        ("#contained", (None, None, None)),
        ("Patient/" + "x" * 65, (None, None, "Patient/" + "x" * 65)),
        ("Patient/" + "x" * 64, ("Patient", "x" * 64, None)),
        ("Patient/A-1.b", ("Patient", "A-1.b", None)),
        # ids are ASCII letters, digits, '-' and '.': anything else is not a local reference
        ("Patient/bjørn", (None, None, "Patient/bjørn")),
        ("Patient/a_b", (None, None, "Patient/a_b")),
        ("Patient/", (None, None, "Patient/")),
    ],
)
def test_parse_reference(reference: str, expected: tuple[str | None, ...]) -> None:
    assert parse_reference(reference, BASE) == expected


def test_split_values_honours_escapes() -> None:
    assert split_values("a,b\\,c,d") == ("a", "b,c", "d")
    assert split_values("x\\|y") == ("x|y",)


def test_indexer_extracts_every_kind() -> None:
    indexer = ResourceIndexer(base_url=BASE)
    rows = indexer.index(
        {
            "resourceType": "Task",
            "id": "t1",
            "status": "in-progress",
            "intent": "plan",
            "identifier": [{"system": "urn:x", "value": "1"}],
            "for": {"reference": "Patient/p1"},
            "owner": {
                "reference": f"{BASE}/Organization/o1",
                "identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": "912837467"},
            },
            "basedOn": [{"reference": "CarePlan/c1"}],
            "executionPeriod": {"start": "2026-09-01"},
            "meta": {"tag": [{"system": "urn:t", "code": "demo"}]},
        }
    )
    assert ("status", None, "in-progress") in rows.tokens
    assert ("identifier", "urn:x", "1") in rows.tokens
    assert ("_tag", "urn:t", "demo") in rows.tokens
    assert ("owner:identifier", "urn:oid:2.16.578.1.12.4.1.4.101", "912837467") in rows.tokens
    assert ("patient", "Patient", "p1", None) in rows.references  # for.where(resolve() is Patient)
    assert ("subject", "Patient", "p1", None) in rows.references
    assert ("owner", "Organization", "o1", None) in rows.references
    assert ("based-on", "CarePlan", "c1", None) in rows.references
    period = [r for r in rows.dates if r[0] == "period"]
    assert len(period) == 1
    assert micros_to_instant(period[0][1]) == "2026-09-01T00:00:00.000Z"


def test_indexer_patient_compartment_filter() -> None:
    indexer = ResourceIndexer(base_url=BASE)
    rows = indexer.index(
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "subject": {"reference": "Group/g1"},
        }
    )
    assert ("subject", "Group", "g1", None) in rows.references
    assert not [r for r in rows.references if r[0] == "patient"]


def test_indexer_names_and_contact_points() -> None:
    indexer = ResourceIndexer(base_url=BASE)
    rows = indexer.index(
        {
            "resourceType": "Patient",
            "name": [{"family": "Ødegård", "given": ["Åse", "Marie"]}],
            "telecom": [
                {"system": "email", "value": "a@b.no"},
                {"system": "phone", "value": "123"},
            ],
            "deceasedBoolean": False,
        }
    )
    assert ("family", "odegard", "Ødegård") in rows.strings
    assert ("given", "marie", "Marie") in rows.strings
    assert ("email", None, "a@b.no") in rows.tokens
    assert ("phone", None, "123") in rows.tokens
    assert ("email", None, "123") not in rows.tokens
    assert not [t for t in rows.tokens if t[0] == "deceased"]
