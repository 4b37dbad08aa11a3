"""Field checks for the vendors' JSON bodies, with Norwegian messages as the systems give them."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from simulators.common.errors import Invalid, Problem
from simulators.common.ids import is_valid_fnr, is_valid_orgnr

__all__ = ["Checker"]

MISSING = "Feltet må fylles ut"


class Checker:
    """Collects problems while reading fields; `raise_if_any` ends validation with Invalid.

    Every reader takes the object, the key and the path prefix of the object (`"logg."`),
    and returns the value when it is acceptable, else None (after recording a problem when
    the value was present or required).
    """

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def fail(self, path: str, message: str) -> None:
        """Record a problem."""
        self.problems.append(Problem(path, message))

    def raise_if_any(self, message: str = "Ugyldige data") -> None:
        """Raise Invalid when any problem was recorded."""
        if self.problems:
            raise Invalid(message, self.problems)

    def known(self, obj: Mapping[str, Any], allowed: Iterable[str], prefix: str = "") -> None:
        """Reject fields the system does not have."""
        for key in sorted(set(obj) - set(allowed)):
            self.fail(prefix + key, "Ukjent felt")

    def value(self, obj: Mapping[str, Any], key: str, prefix: str, *, required: bool) -> Any:
        """Return the raw value, recording a problem when a required one is missing."""
        value = obj.get(key)
        if value is None and required:
            self.fail(prefix + key, MISSING)
        return value

    def obj(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> dict[str, Any] | None:
        """Return a nested object."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(prefix + key, "Må være et objekt")
            return None
        return value

    def array(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> list[Any] | None:
        """Return a list."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(prefix + key, "Må være en liste")
            return None
        return value

    def text(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> str | None:
        """Return a non-empty string."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(prefix + key, "Må være en tekst som ikke er tom")
            return None
        return value

    def date(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> str | None:
        """Return an ISO date (ÅÅÅÅ-MM-DD)."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        try:
            if not isinstance(value, str) or len(value) != 10:
                raise ValueError(value)
            date.fromisoformat(value)
        except ValueError:
            self.fail(prefix + key, "Må være en dato på formen ÅÅÅÅ-MM-DD")
            return None
        return value

    def timestamp(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> datetime | None:
        """Return an ISO time with offset."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        try:
            parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            self.fail(prefix + key, "Må være et tidspunkt med tidssone (ISO 8601)")
            return None
        return parsed

    def fnr(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> str | None:
        """Return a fødselsnummer with valid check digits."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if not is_valid_fnr(value):
            self.fail(prefix + key, "Ugyldig fødselsnummer (11 siffer med gyldige kontrollsiffer)")
            return None
        return str(value)

    def orgnr(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> str | None:
        """Return an organisasjonsnummer with a valid check digit."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if not is_valid_orgnr(value):
            self.fail(prefix + key, "Ugyldig organisasjonsnummer (9 siffer, gyldig kontrollsiffer)")
            return None
        return str(value)

    def choice(
        self,
        obj: Mapping[str, Any],
        key: str,
        options: tuple[str, ...],
        prefix: str = "",
        *,
        required: bool = True,
    ) -> str | None:
        """Return one of the allowed codes."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if value not in options:
            self.fail(prefix + key, f"Ugyldig verdi; tillatt er {', '.join(options)}")
            return None
        return str(value)

    def integer(
        self,
        obj: Mapping[str, Any],
        key: str,
        prefix: str = "",
        *,
        low: int,
        high: int,
        required: bool = True,
    ) -> int | None:
        """Return an integer within [low, high]."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(prefix + key, f"Må være et heltall fra {low} til {high}")
            return None
        return value

    def boolean(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> bool | None:
        """Return true or false."""
        value = self.value(obj, key, prefix, required=required)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.fail(prefix + key, "Må være true eller false")
            return None
        return value

    def base64(
        self, obj: Mapping[str, Any], key: str, prefix: str = "", *, required: bool = True
    ) -> str | None:
        """Return a base64 string."""
        value = self.text(obj, key, prefix, required=required)
        if value is None:
            return None
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            self.fail(prefix + key, "Må være gyldig base64")
            return None
        return value
