"""Demo records (docs/vendor-formats.md examples): Nora at Fjellvik skole."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulators.school.system import SchoolSystem

__all__ = ["seed_demo"]

NORA = "15832151200"
MOTHER = "04868941214"
SCHOOL = "927364514"
HEALTH_STATION = "945182733"


def seed_demo(system: SchoolSystem) -> None:
    """Register the demo pupil, a measure and a consent as staff would (empty store only)."""
    if system.all_records("elev"):
        return
    author = "bruker"
    elev = system.create(
        kind="elev",
        author=author,
        body={
            "personnummer": NORA,
            "navn": {"fornavn": "Nora", "etternavn": "Eksempelsen"},
            "trinn": 1,
            "skole": SCHOOL,
            "stafettlogg": {
                "nivaa": 2,
                "kontaktlaerer": {"ansattnr": "L-3", "navn": "Per Lærer"},
                "aktiv": True,
                "bekymring": "Overgang fra barnehage: Nora trenger en fast voksen i overganger.",
            },
        },
    )
    elev_id = elev.data["elevId"]
    system.create(
        kind="tiltak",
        author=author,
        body={
            "elevId": elev_id,
            "tittel": "Fast voksen i overganger",
            "beskrivelse": "En fast voksen tar imot Nora om morgenen og etter friminutt.",
            "ansvarligEnhet": SCHOOL,
            "status": "AKTIV",
            "fra": "2026-08-17",
            "evaluerDato": "2026-11-30",
            "evaluering": None,
        },
    )
    system.create(
        kind="samtykke",
        author=author,
        body={
            "elevId": elev_id,
            "foresatt": [MOTHER],
            "signert": "2026-08-17",
            "utloper": "2027-08-16",
            "mottakere": [SCHOOL, HEALTH_STATION],
            "trukket": False,
            "vedlegg": {"pdf": "JVBERi0xLjQK"},
        },
    )
