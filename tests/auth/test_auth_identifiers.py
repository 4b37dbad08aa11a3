"""Format checks for fødselsnummer, D-nummer, org.nr and HPR-nummer."""

from __future__ import annotations

import pytest

from service.identifiers import is_valid_fnr, is_valid_hpr, is_valid_orgnr


@pytest.mark.parametrize(
    ("value", "expected", "why"),
    [
        ("15031510012", True, "ordinary fødselsnummer"),
        ("29021210097", True, "leap day"),
        ("45031510035", True, "D-nummer: day + 40"),
        ("15431550056", True, "synthetic (NAV Dolly / H-nummer): month + 40"),
        ("15831550039", True, "synthetic (Skatteetaten Tenor): month + 80"),
        ("55831550022", True, "synthetic D-nummer: day + 40 and month + 80"),
        ("15031510013", False, "second check digit wrong"),
        ("15031510002", False, "first check digit wrong"),
        ("15531510043", False, "month 53 is neither real nor synthetic"),
        ("31041510008", False, "31 April"),
        ("00031510012", False, "day 0"),
        ("1503151001", False, "10 digits"),
        ("150315100120", False, "12 digits"),
        ("1503151001a", False, "letter"),
        ("١٥٠٣١٥١٠٠١٢", False, "non-ASCII digits"),
        (15031510012, False, "not a string"),
        (None, False, "missing"),
    ],
)
def test_fnr(value: object, expected: bool, why: str) -> None:
    assert is_valid_fnr(value) is expected, why


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("974760673", True),
        ("991825827", True),
        ("974760674", False),  # wrong check digit
        ("97476067", False),
        ("9747606733", False),
        ("97476067x", False),
        (974760673, False),
    ],
)
def test_orgnr(value: object, expected: bool) -> None:
    assert is_valid_orgnr(value) is expected


def test_orgnr_whose_check_digit_would_be_10_is_invalid() -> None:
    # Weighted sum of 00000001 is 2 → remainder 2 → check 9; of 10000000 is 3 → check 8.
    # Search a prefix whose remainder is 1 (check digit 10): such numbers are never issued.
    weights = (3, 2, 7, 6, 5, 4, 3, 2)
    prefix = next(
        f"{n:08d}"
        for n in range(10_000_000, 10_001_000)
        if sum(int(d) * w for d, w in zip(f"{n:08d}", weights, strict=True)) % 11 == 1
    )
    assert not any(is_valid_orgnr(prefix + str(digit)) for digit in range(10))


@pytest.mark.parametrize(
    ("value", "expected"),
    [("565501872", True), ("1234567", True), ("", False), ("1234567890", False), ("12a", False)],
)
def test_hpr(value: object, expected: bool) -> None:
    assert is_valid_hpr(value) is expected
