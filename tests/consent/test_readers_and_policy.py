"""The FHIR readers under the rules (dates, identifiers, references) and policy checks."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from consent import ConsentPolicy, InvalidPolicy
from consent._internal.fhir import (
    age_on,
    birth_date_from_pid,
    parse_bound,
    reference_parts,
)
from tests.consent.builders import OSLO


@pytest.mark.parametrize(
    ("pid", "born"),
    [
        pytest.param("15832151200", date(2021, 3, 15), id="synthetic-month-plus-80"),
        pytest.param("04868941214", date(1989, 6, 4), id="synthetic-1900s"),
        pytest.param("15032151200", date(2021, 3, 15), id="ordinary-2000s"),
        pytest.param("55032151200", date(2021, 3, 15), id="d-nummer-day-plus-40"),
        pytest.param("15432151200", date(2021, 3, 15), id="nav-synthetic-month-plus-40"),
        pytest.param("55832151200", date(2021, 3, 15), id="synthetic-d-nummer"),
        pytest.param("01019099912", date(1990, 1, 1), id="individual-9xx-1900s"),
        pytest.param("01016055512", date(1860, 1, 1), id="individual-5xx-1800s"),
        pytest.param("01016080012", None, id="individual-8xx-before-2000-unassigned"),
        pytest.param("31022151200", None, id="impossible-date"),
        pytest.param("1583215120", None, id="too-short"),
        pytest.param("1583215120X", None, id="not-digits"),
    ],
)
def test_birth_date_from_pid(pid: str, born: date | None) -> None:
    assert birth_date_from_pid(pid) == born


@pytest.mark.parametrize(
    ("birth", "day", "age"),
    [
        (date(2010, 10, 1), date(2026, 10, 1), 16),
        (date(2010, 10, 2), date(2026, 10, 1), 15),
        (date(2012, 2, 29), date(2024, 2, 28), 11),
        (date(2012, 2, 29), date(2024, 2, 29), 12),
    ],
)
def test_age_on(birth: date, day: date, age: int) -> None:
    assert age_on(birth, day) == age


@pytest.mark.parametrize(
    ("value", "end", "parsed"),
    [
        ("2027", False, date(2027, 1, 1)),
        ("2027", True, date(2027, 12, 31)),
        ("2028-02", True, date(2028, 2, 29)),
        ("2027-11-01", True, date(2027, 11, 1)),
        ("2027-11-01T10:00:00+01:00", True, datetime.fromisoformat("2027-11-01T10:00:00+01:00")),
        ("2027-11-01T10:00:00Z", True, datetime.fromisoformat("2027-11-01T10:00:00+00:00")),
    ],
)
def test_parse_bound(value: str, end: bool, parsed: date) -> None:
    assert parse_bound(value, end=end) == parsed


@pytest.mark.parametrize("value", ["27-11-01", "2027-13", "soon", None, 2027])
def test_parse_bound_refuses(value: object) -> None:
    with pytest.raises(ValueError):
        parse_bound(value, end=True)


@pytest.mark.parametrize(
    ("reference", "parts"),
    [
        ("Organization/abc", ("Organization", "abc")),
        ("https://stafett.example/fhir/Organization/abc", ("Organization", "abc")),
        ("Organization/abc/_history/2", ("Organization", "abc")),
        ("urn:uuid:316564b6-dd16-5efe-9cca-c26dc927c894", None),
        ("#contained", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_reference_parts(reference: str | None, parts: tuple[str, str] | None) -> None:
    assert reference_parts(reference) == parts


def test_policy_defaults() -> None:
    policy = ConsentPolicy()
    assert policy.consent_age_for("default") == 16
    assert policy.consent_age_for("unlisted-domain") == 16
    assert policy.guardians_required == "one"
    assert policy.youth_read_age == 12
    assert policy.parental_codes == {"felles", "mor", "far", "medmor"}
    assert ("https://stafett.no/fhir/CodeSystem/security-label", "hidden-from-guardians") in (
        policy.hidden_labels
    )
    assert ("urn:stafett:security-label", "hidden-from-guardians") in policy.hidden_labels


def test_policy_domain_ages() -> None:
    policy = ConsentPolicy(consent_age={"default": 15, "child-welfare": 18})
    assert policy.consent_age_for("child-welfare") == 18
    assert policy.consent_age_for("health") == 15


@pytest.mark.parametrize(
    "kwargs",
    [
        {"guardians_required": "both"},
        {"youth_read_age": -1},
        {"consent_age": {"default": -3}},
        {"family_write_types": frozenset({"Consent"})},
        {"family_write_types": frozenset({"Organization"})},
    ],
)
def test_policy_refuses_inconsistent_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidPolicy):
        ConsentPolicy(**kwargs)  # type: ignore[arg-type]


def test_oslo_fixture_is_aware() -> None:
    assert datetime(2026, 1, 1, tzinfo=OSLO).utcoffset() is not None
