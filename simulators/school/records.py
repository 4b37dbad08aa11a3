"""The school system's records: validation into canonical form (vendor-formats.md, "School")."""

from __future__ import annotations

from typing import Any, Literal

from simulators.common.errors import Invalid, Problem
from simulators.common.validation import Checker

__all__ = ["ID_FIELD", "TILTAK_STATUS", "Kind", "check_elev", "check_samtykke", "check_tiltak"]

Kind = Literal["elev", "tiltak", "samtykke"]
ID_FIELD: dict[Kind, str] = {"elev": "elevId", "tiltak": "tiltakId", "samtykke": "id"}
TILTAK_STATUS = ("PLANLAGT", "AKTIV", "PAUSET", "FULLFORT", "AVBRUTT")
# kept by the system: accepted in a body, never taken from it
_SYSTEM_FIELDS = ("endret", "endretAv")
_MAX_ID = 2**31 - 1


def _start(body: Any, kind: Kind, fields: tuple[str, ...]) -> tuple[Checker, dict[str, Any]]:
    if not isinstance(body, dict):
        raise Invalid("Ugyldige data", [Problem("", "Innholdet må være et JSON-objekt")])
    checker = Checker()
    checker.known(body, (ID_FIELD[kind], *fields, *_SYSTEM_FIELDS))
    return checker, body


def _ref(c: Checker, b: dict[str, Any], key: str) -> int | None:
    return c.integer(b, key, low=1, high=_MAX_ID)


def check_elev(body: Any) -> dict[str, Any]:
    """Return a pupil in canonical form (without id and system fields) or raise Invalid."""
    fields = ("personnummer", "navn", "trinn", "skole", "stafettlogg")
    c, b = _start(body, "elev", fields)
    navn = c.obj(b, "navn")
    if navn is not None:
        c.known(navn, ("fornavn", "etternavn"), "navn.")
        navn = {
            "fornavn": c.text(navn, "fornavn", "navn."),
            "etternavn": c.text(navn, "etternavn", "navn."),
        }
    elev: dict[str, Any] = {
        "personnummer": c.fnr(b, "personnummer"),
        "navn": navn,
        "trinn": c.integer(b, "trinn", low=1, high=10),
        "skole": c.orgnr(b, "skole"),
        "stafettlogg": None,
    }
    logg = c.obj(b, "stafettlogg", required=False)
    if logg is not None:
        p = "stafettlogg."
        c.known(logg, ("nivaa", "kontaktlaerer", "aktiv", "bekymring"), p)
        teacher = c.obj(logg, "kontaktlaerer", p)
        if teacher is not None:
            q = p + "kontaktlaerer."
            c.known(teacher, ("ansattnr", "navn"), q)
            teacher = {
                "ansattnr": c.text(teacher, "ansattnr", q),
                "navn": c.text(teacher, "navn", q),
            }
        elev["stafettlogg"] = {
            "nivaa": c.integer(logg, "nivaa", p, low=0, high=3),
            "kontaktlaerer": teacher,
            "aktiv": c.boolean(logg, "aktiv", p),
            "bekymring": c.text(logg, "bekymring", p),
        }
    c.raise_if_any()
    return elev


def check_tiltak(body: Any) -> dict[str, Any]:
    """Return a measure in canonical form or raise Invalid."""
    fields = (
        "elevId",
        "tittel",
        "beskrivelse",
        "ansvarligEnhet",
        "status",
        "fra",
        "evaluerDato",
        "evaluering",
    )
    c, b = _start(body, "tiltak", fields)
    tiltak: dict[str, Any] = {
        "elevId": _ref(c, b, "elevId"),
        "tittel": c.text(b, "tittel"),
        "beskrivelse": c.text(b, "beskrivelse", required=False),
        "ansvarligEnhet": c.orgnr(b, "ansvarligEnhet"),
        "status": c.choice(b, "status", TILTAK_STATUS),
        "fra": c.date(b, "fra", required=False),
        "evaluerDato": c.date(b, "evaluerDato", required=False),
        "evaluering": None,
    }
    evaluering = c.obj(b, "evaluering", required=False)
    if evaluering is not None:
        c.known(evaluering, ("dato", "tekst"), "evaluering.")
        tiltak["evaluering"] = {
            "dato": c.date(evaluering, "dato", "evaluering."),
            "tekst": c.text(evaluering, "tekst", "evaluering."),
        }
    c.raise_if_any()
    return tiltak


def check_samtykke(body: Any) -> dict[str, Any]:
    """Return a consent in canonical form or raise Invalid."""
    fields = ("elevId", "foresatt", "signert", "utloper", "mottakere", "trukket", "vedlegg")
    c, b = _start(body, "samtykke", fields)
    guardians = c.array(b, "foresatt") or []
    if "foresatt" in b and not guardians:
        c.fail("foresatt", "Minst én foresatt må ha signert")
    receivers = c.array(b, "mottakere") or []
    samtykke: dict[str, Any] = {
        "elevId": _ref(c, b, "elevId"),
        "foresatt": [c.fnr({k: v}, k) for k, v in _indexed("foresatt", guardians)],
        "signert": c.date(b, "signert"),
        "utloper": c.date(b, "utloper"),
        "mottakere": [c.orgnr({k: v}, k) for k, v in _indexed("mottakere", receivers)],
        "trukket": c.boolean(b, "trukket"),
        "vedlegg": None,
    }
    signed, expires = samtykke["signert"], samtykke["utloper"]
    if signed and expires and expires < signed:
        c.fail("utloper", "Kan ikke være før signert")
    attachment = c.obj(b, "vedlegg", required=False)
    if attachment is not None:
        c.known(attachment, ("pdf",), "vedlegg.")
        samtykke["vedlegg"] = {"pdf": c.base64(attachment, "pdf", "vedlegg.")}
    c.raise_if_any()
    return samtykke


def _indexed(name: str, values: list[Any]) -> list[tuple[str, Any]]:
    return [(f"{name}[{i}]", v) for i, v in enumerate(values)]
