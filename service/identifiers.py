"""Format checks for Norwegian identifiers: fødselsnummer, D-nummer, HPR-nummer, org.nr.

These check the *shape* (length, plausible date, mod-11 check digits), not that the number has
been issued: Folkeregisteret and Enhetsregisteret are the only authorities for that.
"""

from __future__ import annotations

from typing import TypeGuard

__all__ = ["is_valid_fnr", "is_valid_hpr", "is_valid_orgnr"]

_FNR_K1_WEIGHTS = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_FNR_K2_WEIGHTS = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORGNR_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)
# February gets 29: the century is not knowable from the number alone without the
# individual-number ranges, so a leap day is accepted in any year.
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_D_NUMBER_DAY_OFFSET = 40
# Synthetic test persons: +40 on the month is used by NAV (Dolly) and H-nummer, +80 by
# Skatteetaten's Tenor test data. Accepting them lets test environments use realistic data.
_TEST_MONTH_OFFSETS = (0, 40, 80)


def _mod11_check_digit(digits: str, weights: tuple[int, ...]) -> int | None:
    """Return the mod-11 check digit for digits, or None when the remainder makes it invalid."""
    remainder = sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    check = (11 - remainder) % 11
    # A computed check digit of 10 cannot be written as one digit: such numbers are never issued.
    return None if check == 10 else check


def _is_ascii_digits(value: object, length: int) -> TypeGuard[str]:
    # str.isdigit alone accepts other scripts' digits (e.g. Arabic-Indic), which int() would
    # happily convert; identifiers are ASCII only.
    return isinstance(value, str) and len(value) == length and value.isascii() and value.isdigit()


def is_valid_fnr(value: object) -> bool:
    """Return whether value is a well-formed fødselsnummer or D-nummer (incl. synthetic ones)."""
    if not _is_ascii_digits(value, 11):
        return False
    day, month = int(value[0:2]), int(value[2:4])
    if day > _D_NUMBER_DAY_OFFSET:
        day -= _D_NUMBER_DAY_OFFSET
    for offset in reversed(_TEST_MONTH_OFFSETS):
        if month > offset:
            month -= offset
            break
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        return False
    k1 = _mod11_check_digit(value[:9], _FNR_K1_WEIGHTS)
    if k1 is None or k1 != int(value[9]):
        return False
    k2 = _mod11_check_digit(value[:10], _FNR_K2_WEIGHTS)
    return k2 is not None and k2 == int(value[10])


def is_valid_orgnr(value: object) -> bool:
    """Return whether value is a well-formed 9-digit organisasjonsnummer (mod-11 check digit)."""
    if not _is_ascii_digits(value, 9):
        return False
    check = _mod11_check_digit(value[:8], _ORGNR_WEIGHTS)
    return check is not None and check == int(value[8])


def is_valid_hpr(value: object) -> bool:
    """Return whether value looks like an HPR-nummer (1 to 9 digits; it has no check digit)."""
    return isinstance(value, str) and 1 <= len(value) <= 9 and value.isascii() and value.isdigit()
