"""Norwegian identifier systems and their mod-11 checks (stafettlogg-fhir.md §2)."""

from __future__ import annotations

from typing import Final

FNR_SYSTEM: Final = "urn:oid:2.16.578.1.12.4.1.4.1"
DNR_SYSTEM: Final = "urn:oid:2.16.578.1.12.4.1.4.2"
HPR_SYSTEM: Final = "urn:oid:2.16.578.1.12.4.1.4.4"
ORGNR_SYSTEM: Final = "urn:oid:2.16.578.1.12.4.1.4.101"
SID_BASE: Final = "https://stafett.no/fhir/sid/"

_FNR_K1: Final = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_FNR_K2: Final = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ORGNR: Final = (3, 2, 7, 6, 5, 4, 3, 2)


def _check_digit(digits: str, weights: tuple[int, ...]) -> int | None:
    check = (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11) % 11
    return None if check == 10 else check


def fnr_problem(value: object) -> str | None:
    """Return why value is not a valid fødselsnummer/D-nummer, or None when it is."""
    if not isinstance(value, str) or len(value) != 11 or not value.isascii() or not value.isdigit():
        return f"{value!r} is not a fødselsnummer (11 digits)"
    if _check_digit(value[:9], _FNR_K1) != int(value[9]):
        return f"fødselsnummer {value} has a wrong first check digit (mod 11)"
    if _check_digit(value[:10], _FNR_K2) != int(value[10]):
        return f"fødselsnummer {value} has a wrong second check digit (mod 11)"
    return None


def orgnr_problem(value: object) -> str | None:
    """Return why value is not a valid organisasjonsnummer, or None when it is."""
    if not isinstance(value, str) or len(value) != 9 or not value.isascii() or not value.isdigit():
        return f"{value!r} is not an organisasjonsnummer (9 digits)"
    if _check_digit(value[:8], _ORGNR) != int(value[8]):
        return f"organisasjonsnummer {value} has a wrong check digit (mod 11)"
    return None


def sid_base(orgnr: str, source_system: str) -> str:
    """Return the vendor record identifier prefix `https://stafett.no/fhir/sid/<orgnr>/<slug>/`."""
    return f"{SID_BASE}{orgnr}/{source_system}/"
