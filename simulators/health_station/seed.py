"""Demo records: Nora at Fjellvik helsestasjon, in the station's own FHIR coding."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from simulators.health_station.journal import Journal

__all__ = ["seed_demo"]

NORA = "15832151200"
MOTHER = "04868941214"
KINDERGARTEN = "912837467"
HEALTH_STATION = "945182733"


def seed_demo(journal: Journal) -> None:
    """Register the station, Nora, her log, a measure and a consent (empty store only)."""
    with journal.repository.store.read() as data:
        if data["next_id"] > 1:
            return
    journal.organization(orgnr=HEALTH_STATION, name="Fjellvik helsestasjon og skolehelsetjeneste")
    journal.register_child(
        {
            "fodselsnummer": NORA,
            "fornavn": "Nora",
            "etternavn": "Eksempelsen",
            "fodselsdato": "2021-03-15",
            "kjonn": "female",
        }
    )
    journal.open_log(
        {
            "fodselsnummer": NORA,
            "niva": 2,
            "oppmerksomhet": "Språkutvikling: Nora sier lite i grupper; foreldrene er bekymret.",
            "opprettet": "2026-08-31",
        }
    )
    journal.add_measure(
        {
            "fodselsnummer": NORA,
            "beskrivelse": "Samtale med helsesykepleier hver fjerde uke",
            "startdato": "2026-09-14",
            "evalueringsdato": "2026-11-09",
        }
    )
    journal.record_consent(
        {
            "fodselsnummer": NORA,
            "deleMed": [HEALTH_STATION, KINDERGARTEN],
            "signertAv": [MOTHER],
            "gyldigFra": "2026-08-31",
            "gyldigTil": "2027-11-01",
        }
    )
