"""The kindergarten system's records: validation into canonical form (vendor-formats.md)."""

from __future__ import annotations

from typing import Any, Literal

from simulators.common.errors import Invalid, Problem
from simulators.common.validation import Checker

__all__ = [
    "BARN_FIELDS",
    "SAMTYKKE_STATUS",
    "TILTAK_STATUS",
    "Kind",
    "check_barn",
    "check_evaluering",
    "check_samtykke",
    "check_tiltak",
]

Kind = Literal["barn", "tiltak", "samtykke"]

LOGG_STATUS = ("aktiv", "avsluttet")
NIVA = ("0", "1", "2", "3")
FORELDREANSVAR = ("felles", "mor", "far", "medmor", "andre", "ukjent")
TILTAK_STATUS = ("foreslatt", "avtalt", "pagar", "pause", "avsluttet", "avbrutt")
SAMTYKKE_STATUS = ("gyldig", "trukket", "utlopt")

# `id` and `skjult` belong to the system: accepted in a body, never taken from it
BARN_FIELDS = (
    "id",
    "fodselsnummer",
    "fornavn",
    "etternavn",
    "fodselsdato",
    "logg",
    "foresatte",
    "skjult",
)
_LOGG_FIELDS = ("opprettet", "niva", "oppmerksomhet", "stafettholder", "status")
_HOLDER_FIELDS = ("ansattId", "navn", "enhet")
_FORESATT_FIELDS = ("fodselsnummer", "navn", "foreldreansvar")
_TILTAK_FIELDS = (
    "id",
    "barn",
    "beskrivelse",
    "ansvarlig",
    "status",
    "startdato",
    "evalueringsdato",
    "evalueringer",
)
_EVALUERING_FIELDS = ("dato", "tekst", "ansattId")
_SAMTYKKE_FIELDS = (
    "id",
    "barn",
    "signertAv",
    "signertDato",
    "gyldigFra",
    "gyldigTil",
    "status",
    "deleMed",
    "skjema",
)
_SKJEMA_FIELDS = ("filnavn", "pdfBase64")


def _indexed(name: str, values: list[Any]) -> list[tuple[str, Any]]:
    return [(f"{name}[{i}]", v) for i, v in enumerate(values)]


def _start(body: Any) -> tuple[Checker, dict[str, Any]]:
    if not isinstance(body, dict):
        raise Invalid("Ugyldige data", [Problem("", "Innholdet må være et JSON-objekt")])
    return Checker(), body


def check_barn(body: Any) -> dict[str, Any]:
    """Return a child in canonical form (without `id`/`skjult`) or raise Invalid."""
    c, b = _start(body)
    c.known(b, BARN_FIELDS)
    barn: dict[str, Any] = {
        "fodselsnummer": c.fnr(b, "fodselsnummer"),
        "fornavn": c.text(b, "fornavn"),
        "etternavn": c.text(b, "etternavn"),
        "fodselsdato": c.date(b, "fodselsdato"),
        "logg": None,
        "foresatte": [],
    }
    logg = c.obj(b, "logg", required=False)
    if logg is not None:
        c.known(logg, _LOGG_FIELDS, "logg.")
        holder = c.obj(logg, "stafettholder", "logg.")
        if holder is not None:
            c.known(holder, _HOLDER_FIELDS, "logg.stafettholder.")
            p = "logg.stafettholder."
            holder = {
                "ansattId": c.text(holder, "ansattId", p),
                "navn": c.text(holder, "navn", p),
                "enhet": c.orgnr(holder, "enhet", p),
            }
        barn["logg"] = {
            "opprettet": c.date(logg, "opprettet", "logg."),
            "niva": c.choice(logg, "niva", NIVA, "logg."),
            "oppmerksomhet": c.text(logg, "oppmerksomhet", "logg."),
            "stafettholder": holder,
            "status": c.choice(logg, "status", LOGG_STATUS, "logg."),
        }
    for i, item in enumerate(c.array(b, "foresatte", required=False) or []):
        p = f"foresatte[{i}]."
        if not isinstance(item, dict):
            c.fail(p[:-1], "Må være et objekt")
            continue
        c.known(item, _FORESATT_FIELDS, p)
        barn["foresatte"].append(
            {
                "fodselsnummer": c.fnr(item, "fodselsnummer", p),
                "navn": c.text(item, "navn", p),
                "foreldreansvar": c.choice(item, "foreldreansvar", FORELDREANSVAR, p),
            }
        )
    c.raise_if_any()
    return barn


def check_evaluering(item: Any, prefix: str = "") -> dict[str, Any]:
    """Return one evaluation of a measure or raise Invalid."""
    c, e = _start(item)
    c.known(e, _EVALUERING_FIELDS, prefix)
    result = {
        "dato": c.date(e, "dato", prefix),
        "tekst": c.text(e, "tekst", prefix),
        # optional: an evaluation written in another service has no kindergarten employee
        "ansattId": c.text(e, "ansattId", prefix, required=False),
    }
    c.raise_if_any()
    return result


def check_tiltak(body: Any) -> dict[str, Any]:
    """Return a measure in canonical form (without `id`) or raise Invalid."""
    c, b = _start(body)
    c.known(b, _TILTAK_FIELDS)
    tiltak: dict[str, Any] = {
        "barn": c.fnr(b, "barn"),
        "beskrivelse": c.text(b, "beskrivelse"),
        "ansvarlig": c.orgnr(b, "ansvarlig"),
        "status": c.choice(b, "status", TILTAK_STATUS),
        "startdato": c.date(b, "startdato", required=False),
        "evalueringsdato": c.date(b, "evalueringsdato", required=False),
        "evalueringer": [],
    }
    for i, item in enumerate(c.array(b, "evalueringer", required=False) or []):
        try:
            tiltak["evalueringer"].append(check_evaluering(item, f"evalueringer[{i}]."))
        except Invalid as exc:
            c.problems.extend(exc.problems)
    c.raise_if_any()
    return tiltak


def check_samtykke(body: Any) -> dict[str, Any]:
    """Return a consent in canonical form (without `id`) or raise Invalid."""
    c, b = _start(body)
    c.known(b, _SAMTYKKE_FIELDS)
    signers = c.array(b, "signertAv") or []
    if "signertAv" in b and not signers:
        c.fail("signertAv", "Minst én foresatt må ha signert")
    share = c.array(b, "deleMed") or []
    samtykke: dict[str, Any] = {
        "barn": c.fnr(b, "barn"),
        "signertAv": [c.fnr({k: v}, k) for k, v in _indexed("signertAv", signers)],
        "signertDato": c.date(b, "signertDato"),
        "gyldigFra": c.date(b, "gyldigFra"),
        "gyldigTil": c.date(b, "gyldigTil"),
        "status": c.choice(b, "status", SAMTYKKE_STATUS),
        "deleMed": [c.orgnr({k: v}, k) for k, v in _indexed("deleMed", share)],
        "skjema": None,
    }
    start, end = samtykke["gyldigFra"], samtykke["gyldigTil"]
    if start and end and end < start:
        c.fail("gyldigTil", "Kan ikke være før gyldigFra")
    skjema = c.obj(b, "skjema", required=False)
    if skjema is not None:
        c.known(skjema, _SKJEMA_FIELDS, "skjema.")
        samtykke["skjema"] = {
            "filnavn": c.text(skjema, "filnavn", "skjema."),
            "pdfBase64": c.base64(skjema, "pdfBase64", "skjema."),
        }
    c.raise_if_any()
    return samtykke
