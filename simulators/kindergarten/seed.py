"""Demo records (docs/vendor-formats.md examples): Nora at Solsikken barnehage."""

from __future__ import annotations

from typing import TYPE_CHECKING

from simulators.common.store import JsonStore

if TYPE_CHECKING:
    from simulators.kindergarten.system import KindergartenSystem

__all__ = ["seed_demo"]

NORA = "15832151200"
MOTHER = "04868941214"
KINDERGARTEN = "912837467"
HEALTH_STATION = "945182733"


def seed_demo(system: KindergartenSystem, store: JsonStore) -> None:
    """Register the demo child, a measure and a consent as staff would (empty store only)."""
    with store.transaction() as data:
        if data["barn"]:
            return
        # continue the numbering of the documented example ids (T-<year>-0412, S-88)
        year = str(system.clock.now().year)
        data["teller"]["tiltak"][year] = 411
        data["teller"]["samtykke"] = 87
    system.create(
        kind="barn",
        source="bruker",
        body={
            "fodselsnummer": NORA,
            "fornavn": "Nora",
            "etternavn": "Eksempelsen",
            "fodselsdato": "2021-03-15",
            "logg": {
                "opprettet": "2026-08-31",
                "niva": "2",
                "oppmerksomhet": "Nora sier lite i grupper og trekker seg ofte ut av leken.",
                "stafettholder": {"ansattId": "A-17", "navn": "Kari Lærer", "enhet": KINDERGARTEN},
                "status": "aktiv",
            },
            "foresatte": [
                {"fodselsnummer": MOTHER, "navn": "Mona Eksempelsen", "foreldreansvar": "felles"}
            ],
        },
    )
    system.create(
        kind="tiltak",
        source="bruker",
        body={
            "barn": NORA,
            "beskrivelse": "Språkgruppe 20 minutter fire dager i uken",
            "ansvarlig": KINDERGARTEN,
            "status": "pagar",
            "startdato": "2026-09-07",
            "evalueringsdato": "2026-10-19",
            "evalueringer": [],
        },
    )
    system.create(
        kind="samtykke",
        source="bruker",
        body={
            "barn": NORA,
            "signertAv": [MOTHER],
            "signertDato": "2026-08-31",
            "gyldigFra": "2026-08-31",
            "gyldigTil": "2027-11-01",
            "status": "gyldig",
            "deleMed": [KINDERGARTEN, HEALTH_STATION],
            "skjema": {"filnavn": "samtykke.pdf", "pdfBase64": "JVBERi0xLjQK"},
        },
    )
