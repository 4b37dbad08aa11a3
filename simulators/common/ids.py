"""Format checks for Norwegian identifiers (mod-11), as the vendor systems do them."""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["is_valid_fnr", "is_valid_orgnr"]

_K1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_K2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORGNR = (3, 2, 7, 6, 5, 4, 3, 2)
_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _check_digit(digits: str, weights: tuple[int, ...]) -> int | None:
    check = (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11) % 11
    return None if check == 10 else check


def _digits(value: object, length: int) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == length and value.isascii() and value.isdigit()


def is_valid_fnr(value: object) -> bool:
    """Return whether value is a fødselsnummer/D-nummer with valid date and check digits."""
    if not _digits(value, 11):
        return False
    day, month = int(value[:2]), int(value[2:4])
    if day > 40:  # D-nummer
        day -= 40
    for offset in (80, 40):  # synthetic test persons (Tenor +80, Dolly/H-nummer +40)
        if month > offset:
            month -= offset
            break
    if not (1 <= month <= 12 and 1 <= day <= _DAYS[month - 1]):
        return False
    k1 = _check_digit(value[:9], _K1)
    k2 = _check_digit(value[:10], _K2)
    return k1 == int(value[9]) and k2 == int(value[10])


def is_valid_orgnr(value: object) -> bool:
    """Return whether value is a 9-digit organisasjonsnummer with a valid check digit."""
    if not _digits(value, 9):
        return False
    return _check_digit(value[:8], _ORGNR) == int(value[8])
