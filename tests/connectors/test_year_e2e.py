"""One child's year through five vendor systems, end to end, on PostgreSQL and a real broker.

Everything runs at once (year_support.py): Stafett, one worker, the kindergarten, school,
health station, child welfare and NAV systems, and a source and a sink connector for each.
Every step acts only through a vendor system's own surface (staff in the kindergarten,
school and health station, NAV's advisor, the agency's caseworker) or through the family's
own login in Stafett, and then waits for the effect in Stafett and in the vendor stores.
Stafett is read as Nora's mother, who sees all of her own and Nora's logs.

1. Pregnancy: the health station opens a log for the pregnant mother, who consents herself.
2. Birth: the station evaluates and closes the pregnancy log and registers the newborn.
3. Kindergarten: staff register Nora with her mother (parental responsibility), open her log
   with a kindergarten teacher as stafettholder and record the mother's signed consent to
   the kindergarten and the health station; the station's nurse joins Nora's log.
4. Transition: the school enrols Nora with the mother's consent; the kindergarten's
   transition measure reaches the school system and the teacher's evaluation comes back.
5. Hand-over: the kindergarten hands the baton to the school teacher, the school opens its
   own log with him as stafettholder, the kindergarten closes its part.
6. School: the teacher's measures reach the kindergarten and the station; the one owned by
   NAV does not reach NAV: nothing names NAV in a consent.
7. The mother adds NAV in Stafett: the measure reaches NAV.
8. The mother withdraws: every system shows it, and a measure written in any system after
   it reaches no other system.
9. Each vendor store is checked, including what it must not hold.

What the vendor formats cannot say, and how the test goes round it:
- The station's format has no pregnancy category and no `CarePlan.replaces`: the pregnancy
  log is a log whose subject is the mother (§3), closed at birth; Nora's own log is opened by
  the kindergarten, the first system that records who has parental responsibility (the
  station cannot name a guardian, so it cannot record a consent for a newborn).
- Only the kindergarten's record can name a stafettholder from another unit, so the
  hand-over is written there; the school's format opens a log of its own. Vendor measures
  without a log of their own (kindergarten, child welfare, NAV) go to "the child's active
  log", which must be unique: the kindergarten closes its log once the school has one.
- NAV's grant fetches everything NAV may now read, so "nothing before the consent" means
  nothing *arrived* before it. The family withdraws one consent at a time, each taking
  effect before the next: withdrawn all at once, NAV would keep its copies
  of consents that do not name them as not withdrawn, since they may no longer read them.
- Stafett's own dates (hand-over period, consent validity) come from the real clock; the
  vendor records carry the story's dates.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.connectors.year_support import (
    CHILD_WELFARE,
    HEALTH,
    KINDERGARTEN,
    MOTHER,
    NAV,
    NORA,
    SCHOOL,
    Year,
    child_reference,
    pdf,
    sid,
    wait_for,
    year_stack,
)
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, fhir_headers

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.e2e]

STATION = "helsestasjon-fhir"
IRCP = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}
KARI = {"ansattId": "A-17", "navn": "Kari Pedagog", "enhet": KINDERGARTEN}
PER = {"ansattnr": "L-3", "navn": "Per Lærer"}
AFTER = "etter tilbaketrekningen"  # in every measure written after the withdrawal
# consents are checked against the real clock: the story's consents last a year from today
UNTIL = (date.today() + timedelta(days=365)).isoformat()


@pytest.fixture(scope="module")
def year(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Year]:
    def tmp(name: str) -> Path:
        return tmp_path_factory.mktemp(name)

    with year_stack(postgres_admin_url, kafka_bootstrap, tmp) as stack:
        yield stack


# -- small helpers ---------------------------------------------------------------------------
def _sim(client: Any, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.request(method, f"/_sim/{path}", json=body)
    assert response.status_code in (200, 201), f"{method} {path}: {response.text}"
    data: dict[str, Any] = response.json()
    return data


def _entries(year: Year, resource_type: str, **params: str) -> list[dict[str, Any]]:
    """Search Stafett as Nora's mother (she sees everything in her and Nora's logs)."""
    response = year.family().get(f"/{resource_type}", params={**params, "_count": "200"})
    assert response.status_code == 200, response.text
    return [
        e["resource"]
        for e in response.json().get("entry", [])
        if e.get("search", {}).get("mode", "match") == "match"
    ]


def _one(year: Year, resource_type: str, **params: str) -> dict[str, Any] | None:
    found = _entries(year, resource_type, **params)
    return found[0] if len(found) == 1 else None


@contextlib.contextmanager
def _quietly(year: Year, source: str) -> Iterator[None]:
    """Pause a source while staff enter several records, so its next poll sees them all."""
    name = f"{source}-inn-{year.state['run']}"
    year.runtime.pause(name)
    time.sleep(0.6)  # a poll already under way finishes first
    try:
        yield
    finally:
        year.runtime.resume(name)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _orgnr(year: Year, reference: dict[str, Any]) -> str | None:
    ref = reference.get("reference", "")
    if ref.startswith("Organization/"):
        return next((n for n, i in year.orgs.items() if f"Organization/{i}" == ref), None)
    ident = reference.get("identifier") or {}
    return ident.get("value") if ident.get("system") == ORGNR_SYSTEM else None


def _station_consent(
    patient: str,
    performer: str,
    actors: list[str],
    start: str,
    end: str,
    station_org: str,
    signed: str,
) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient},
        "dateTime": signed,
        "performer": [
            {"type": "Patient", "identifier": {"system": FNR_SYSTEM, "value": performer}}
        ],
        "organization": [{"reference": station_org}],
        "sourceAttachment": {"contentType": "application/pdf", "data": pdf("samtykke gravid")},
        "provision": {
            "type": "permit",
            "period": {"start": start, "end": end},
            "actor": [
                {"role": IRCP, "reference": {"identifier": {"system": ORGNR_SYSTEM, "value": o}}}
                for o in actors
            ],
        },
    }


# -- 1. pregnancy ----------------------------------------------------------------------------
def test_1_pregnancy_the_health_station_opens_a_log_for_the_mother(year: Year) -> None:
    station = year.station
    with _quietly(year, "helsestasjon"):
        org = _sim(
            station,
            "POST",
            "fhir/Organization",
            {
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": HEALTH}],
                "name": "Fjellvik helsestasjon",
            },
        )
        mother = _sim(
            station,
            "POST",
            "barn",
            {
                "fodselsnummer": MOTHER,
                "fornavn": "Mona",
                "etternavn": "Eksempelsen",
                "fodselsdato": "1989-06-04",
                "kjonn": "female",
            },
        )
        log = _sim(
            station,
            "POST",
            "logg",
            {
                "fodselsnummer": MOTHER,
                "niva": 1,
                "opprettet": "2020-10-05",
                "oppmerksomhet": "Svangerskap: Mona er sliten og bekymret for tiden etter.",
            },
        )
        measure = _sim(
            station,
            "POST",
            "tiltak",
            {
                "fodselsnummer": MOTHER,
                "startdato": "2020-10-12",
                "evalueringsdato": "2021-02-01",
                "beskrivelse": "Svangerskap: samtale med jordmor hver tredje uke",
            },
        )
        _sim(
            station,
            "POST",
            "fhir/Consent",
            _station_consent(
                f"Patient/{mother['id']}",
                MOTHER,
                [HEALTH],
                "2020-10-05",
                UNTIL,
                f"Organization/{org['id']}",
                "2020-10-05T10:00:00+02:00",
            ),
        )
    year.state.update(
        station_org=org["id"],
        station_mother=mother["id"],
        pregnancy_log=log["id"],
        pregnancy_measure=measure["id"],
    )

    careplan = wait_for(
        year, lambda: _one(year, "CarePlan", identifier=f"{sid(STATION, 'careplan')}|{log['id']}")
    )
    mother_ref = child_reference(year, MOTHER)
    assert mother_ref is not None
    assert careplan["subject"]["reference"] == mother_ref  # the log's subject: the mother
    assert careplan["status"] == "active"
    consents = _entries(year, "Consent", patient=mother_ref)
    assert [c["performer"] for c in consents] == [[{"reference": mother_ref}]]  # herself
    task = wait_for(
        year, lambda: _one(year, "Task", identifier=f"{sid(STATION, 'task')}|{measure['id']}")
    )
    assert task["basedOn"] == [{"reference": f"CarePlan/{careplan['id']}"}]
    assert task["for"]["reference"] == mother_ref
    year.state.update(mother=mother_ref, pregnancy_careplan=careplan["id"])


# -- 2. birth --------------------------------------------------------------------------------
def test_2_birth_closes_the_pregnancy_log(year: Year) -> None:
    station = year.station
    with _quietly(year, "helsestasjon"):
        _sim(
            station,
            "POST",
            f"tiltak/{year.state['pregnancy_measure']}/evaluering",
            {
                "tekst": "Nora er født 15. mars, mor og barn har det godt.",
                "tidspunkt": "2021-03-20T10:00:00+01:00",
                "status": "completed",
            },
        )
        log = next(
            p for p in year.station_store("CarePlan") if p["id"] == year.state["pregnancy_log"]
        )
        closed = {**log, "status": "completed", "period": {**log["period"], "end": "2021-03-15"}}
        closed.pop("meta", None)
        _sim(station, "PUT", f"fhir/CarePlan/{log['id']}", closed)
        _sim(
            station,
            "POST",
            "barn",
            {
                "fodselsnummer": NORA,
                "fornavn": "Nora",
                "etternavn": "Eksempelsen",
                "fodselsdato": "2021-03-15",
                "kjonn": "female",
            },
        )
    wait_for(
        year,
        lambda: (
            (p := _one(year, "CarePlan", _id=year.state["pregnancy_careplan"]))
            and p["status"] == "completed"
        ),
    )
    task = wait_for(
        year,
        lambda: (
            (
                t := _one(
                    year,
                    "Task",
                    identifier=f"{sid(STATION, 'task')}|{year.state['pregnancy_measure']}",
                )
            )
            and t["status"] == "completed"
            and t
        ),
    )
    assert [o["valueAnnotation"]["text"] for o in task["output"]] == [
        "Nora er født 15. mars, mor og barn har det godt."
    ]
    # the newborn is in the station's journal, but without a log or consent nothing is shared
    time.sleep(1.0)
    assert child_reference(year, NORA) is None


# -- 3. kindergarten -------------------------------------------------------------------------
def test_3_the_kindergarten_opens_noras_log_with_the_mothers_consent(year: Year) -> None:
    kg = year.kindergarten
    with _quietly(year, "barnehage"):
        child = _sim(
            kg,
            "POST",
            "barn",
            {
                "fodselsnummer": NORA,
                "fornavn": "Nora",
                "etternavn": "Eksempelsen",
                "fodselsdato": "2021-03-15",
                "logg": {
                    "opprettet": "2026-08-31",
                    "niva": "1",
                    "status": "aktiv",
                    "oppmerksomhet": "Nora sier lite i grupper og trekker seg ut av leken.",
                    "stafettholder": KARI,
                },
                "foresatte": [
                    {
                        "fodselsnummer": MOTHER,
                        "navn": "Mona Eksempelsen",
                        "foreldreansvar": "felles",
                    }
                ],
            },
        )
        consent = _sim(
            kg,
            "POST",
            "samtykker",
            {
                "barn": NORA,
                "signertAv": [MOTHER],
                "signertDato": "2026-08-31",
                "gyldigFra": "2026-08-31",
                "gyldigTil": UNTIL,
                "status": "gyldig",
                "deleMed": [KINDERGARTEN, HEALTH],
                "skjema": {"filnavn": "samtykke-barnehage.pdf", "pdfBase64": pdf("barnehage")},
            },
        )
        measure = _sim(
            kg,
            "POST",
            "tiltak",
            {
                "barn": NORA,
                "beskrivelse": "Språkgruppe: 20 minutter fire dager i uken",
                "ansvarlig": KINDERGARTEN,
                "status": "pagar",
                "startdato": "2026-09-07",
                "evalueringsdato": "2026-12-14",
            },
        )
    year.state.update(kg_child=child["id"], kg_consent=consent["id"], kg_measure=measure["id"])
    careplan = wait_for(
        year,
        lambda: _one(
            year, "CarePlan", identifier=f"{sid('barnehagesystem', 'barn')}|{child['id']}"
        ),
    )
    nora = child_reference(year, NORA)
    assert careplan["subject"]["reference"] == nora
    assert careplan["status"] == "active"
    team = _one(year, "CareTeam", identifier=f"{sid('barnehagesystem', 'barn')}|{child['id']}")
    assert team is not None
    holders = [
        p for p in team["participant"] if p["role"][0]["coding"][0]["code"] == "stafettholder"
    ]
    assert [(h["member"].get("display"), h["period"]) for h in holders] == [
        ("Kari Pedagog", {"start": "2026-08-31"})
    ]
    wait_for(
        year,
        lambda: _one(
            year, "Task", identifier=f"{sid('barnehagesystem', 'tiltak')}|{measure['id']}"
        ),
    )
    year.state.update(nora=nora, kg_careplan=careplan["id"], kg_team=team["id"])

    # the station's nurse joins Nora's log: her measure is based on the one log Nora has
    nurse = _sim(
        year.station,
        "POST",
        "tiltak",
        {
            "fodselsnummer": NORA,
            "startdato": "2026-09-14",
            "evalueringsdato": "2027-01-11",
            "beskrivelse": "Helsesykepleier: språk og hørsel ved fireårskontrollen følges opp",
        },
    )
    year.state["station_measure"] = nurse["id"]
    task = wait_for(
        year, lambda: _one(year, "Task", identifier=f"{sid(STATION, 'task')}|{nurse['id']}")
    )
    assert task["basedOn"] == [{"reference": f"CarePlan/{careplan['id']}"}]
    assert _orgnr(year, task["owner"]) == HEALTH
    # ... and reaches the kindergarten's system (the family permits the kindergarten)
    copy = wait_for(
        year,
        lambda: [
            m
            for m in year.kindergarten_store()["tiltak"]
            if m["beskrivelse"].startswith("Helsesykepleier")
        ],
    )
    assert copy[0]["ansvarlig"] == HEALTH


# -- 4. transition: kindergarten ⇄ school ----------------------------------------------------
def _pupil_body(pupil: dict[str, Any], **changes: Any) -> dict[str, Any]:
    body = {k: v for k, v in pupil.items() if k not in ("elevId", "endret", "endretAv")}
    return {**body, **changes}


def test_4_measures_flow_between_the_kindergarten_and_the_school(year: Year) -> None:
    school = year.school
    with _quietly(year, "skole"):
        # enrolment for next August: a pupil without a log yet, with the mother's consent
        pupil = _sim(
            school,
            "POST",
            "elever",
            {
                "personnummer": NORA,
                "navn": {"fornavn": "Nora", "etternavn": "Eksempelsen"},
                "trinn": 1,
                "skole": SCHOOL,
                "stafettlogg": None,
            },
        )
        consent = _sim(
            school,
            "POST",
            "samtykker",
            {
                "elevId": pupil["elevId"],
                "foresatt": [MOTHER],
                "signert": "2026-11-16",
                "utloper": UNTIL,
                "mottakere": [SCHOOL, KINDERGARTEN, HEALTH],
                "trukket": False,
                "vedlegg": {"pdf": pdf("skole")},
            },
        )
    year.state.update(pupil=pupil, school_consent=consent["id"])
    wait_for(
        year,
        lambda: _one(
            year, "Consent", identifier=f"{sid('skolesystem', 'samtykke')}|{consent['id']}"
        ),
    )

    # the kindergarten plans the transition, carried out by the school
    transition = _sim(
        year.kindergarten,
        "POST",
        "tiltak",
        {
            "barn": NORA,
            "beskrivelse": "Overgang: besøk på skolen og samtale med kontaktlærer",
            "ansvarlig": SCHOOL,
            "status": "avtalt",
            "startdato": "2026-11-23",
            "evalueringsdato": "2027-06-14",
        },
    )
    year.state["kg_transition"] = transition["id"]
    copy = wait_for(
        year,
        lambda: [
            m
            for m in year.school_store()["tiltak"]
            if str(m.get("beskrivelse", "")).startswith("Overgang:")
        ],
    )
    assert len(copy) == 1
    assert copy[0]["elevId"] == pupil["elevId"]
    assert copy[0]["ansvarligEnhet"] == SCHOOL
    assert copy[0]["evaluerDato"] == "2027-06-14"

    # the teacher evaluates it in the school system: it comes back to the kindergarten
    record = copy[0]
    body = {k: v for k, v in record.items() if k not in ("tiltakId", "endret", "endretAv")}
    evaluation = {"dato": "2026-11-30", "tekst": "Nora har besøkt klasserommet og gleder seg."}
    _sim(
        school,
        "PUT",
        f"tiltak/{record['tiltakId']}",
        {**body, "status": "AKTIV", "evaluering": evaluation},
    )
    year.state["school_transition"] = record["tiltakId"]
    measure = wait_for(
        year,
        lambda: [
            m
            for m in year.kindergarten_store()["tiltak"]
            if m["id"] == transition["id"] and m["evalueringer"]
        ],
    )
    assert [e["tekst"] for e in measure[0]["evalueringer"]] == [evaluation["tekst"]]
    assert measure[0]["status"] == "pagar"
    task = _one(year, "Task", identifier=f"{sid('barnehagesystem', 'tiltak')}|{transition['id']}")
    assert task is not None
    assert task["basedOn"] == [{"reference": f"CarePlan/{year.state['kg_careplan']}"}]
    assert [o["valueAnnotation"]["text"] for o in task["output"]] == [evaluation["tekst"]]


# -- 5. hand-over ----------------------------------------------------------------------------
def _holders(team: dict[str, Any]) -> list[tuple[str | None, dict[str, Any]]]:
    return [
        (p["member"].get("display"), p.get("period", {}))
        for p in team["participant"]
        if p["role"][0]["coding"][0]["code"] == "stafettholder"
    ]


def test_5_the_baton_passes_from_the_kindergarten_teacher_to_the_school_teacher(
    year: Year,
) -> None:
    kg = year.kindergarten
    child = next(b for b in year.kindergarten_store()["barn"] if b["id"] == year.state["kg_child"])
    body = {k: v for k, v in child.items() if k not in ("id", "skjult")}
    teacher = {"ansattId": PER["ansattnr"], "navn": PER["navn"], "enhet": SCHOOL}
    _sim(
        kg,
        "PUT",
        f"barn/{child['id']}",
        {**body, "logg": {**body["logg"], "stafettholder": teacher}},
    )

    team_id = year.state["kg_team"]
    team = wait_for(
        year,
        lambda: (
            (t := _one(year, "CareTeam", _id=team_id))
            and any(d == PER["navn"] for d, _ in _holders(t))
            and t
        ),
    )
    holders = _holders(team)
    assert [d for d, _ in holders] == ["Kari Pedagog", "Per Lærer"], holders
    (_, kari), (_, per) = holders
    assert kari.get("end")
    assert kari["end"] == per["start"]  # one date ends one holder and starts the next
    assert "end" not in per
    assert [_orgnr(year, o) for o in team["managingOrganization"]] == [SCHOOL]
    careplan = _one(year, "CarePlan", _id=year.state["kg_careplan"])
    assert careplan is not None
    assert careplan["author"]["display"] == PER["navn"]

    # the school teacher opens the school's own log, with himself as stafettholder
    pupil = year.state["pupil"]
    current = next(p for p in year.school_store()["elever"] if p["elevId"] == pupil["elevId"])
    log = {
        "nivaa": 1,
        "kontaktlaerer": PER,
        "aktiv": True,
        "bekymring": "Overgang fra barnehage: Nora trenger en fast voksen og små grupper.",
    }
    _sim(year.school, "PUT", f"elever/{pupil['elevId']}", _pupil_body(current, stafettlogg=log))
    elev = f"{sid('skolesystem', 'elev')}|{pupil['elevId']}"
    school_log = wait_for(year, lambda: _one(year, "CarePlan", identifier=elev))
    assert school_log["status"] == "active"
    assert school_log["subject"]["reference"] == year.state["nora"]
    school_team = _one(year, "CareTeam", identifier=elev)
    assert school_team is not None
    assert [(d, "end" in p) for d, p in _holders(school_team)] == [(PER["navn"], False)]
    year.state["school_careplan"] = school_log["id"]

    # Nora has left the kindergarten: it closes its part of the log, the history stays
    child = next(b for b in year.kindergarten_store()["barn"] if b["id"] == year.state["kg_child"])
    body = {k: v for k, v in child.items() if k not in ("id", "skjult")}
    _sim(
        kg, "PUT", f"barn/{child['id']}", {**body, "logg": {**body["logg"], "status": "avsluttet"}}
    )
    wait_for(
        year,
        lambda: (
            (p := _one(year, "CarePlan", _id=year.state["kg_careplan"]))
            and p["status"] == "completed"
        ),
    )
    team = wait_for(
        year, lambda: (t := _one(year, "CareTeam", _id=team_id)) and t["status"] == "inactive" and t
    )
    assert _holders(team) == holders  # nobody removed, no period changed
    history = year.family().get(f"/CareTeam/{team_id}/_history").json()
    versions = sorted(
        (e["resource"] for e in history["entry"]), key=lambda r: int(r["meta"]["versionId"])
    )
    assert [d for d, _ in _holders(versions[0])] == ["Kari Pedagog"]
    assert [d for d, _ in _holders(versions[-1])] == ["Kari Pedagog", "Per Lærer"]


# -- 6. school measures, NAV not yet ---------------------------------------------------------
def test_6_school_measures_reach_the_others_but_not_nav(year: Year) -> None:
    pupil = year.state["pupil"]["elevId"]
    refused = year.worker.counters.refused
    own = _sim(
        year.school,
        "POST",
        "tiltak",
        {
            "elevId": pupil,
            "tittel": "Fast voksen i overganger",
            "beskrivelse": "Skole: en fast voksen tar imot Nora om morgenen og etter friminutt.",
            "ansvarligEnhet": SCHOOL,
            "status": "AKTIV",
            "fra": "2026-11-23",
            "evaluerDato": "2027-01-29",
            "evaluering": None,
        },
    )
    for_nav = _sim(
        year.school,
        "POST",
        "tiltak",
        {
            "elevId": pupil,
            "tittel": "Familiesamtale med NAV",
            "beskrivelse": "NAV: samtale med familien om økonomi og bolig, sammen med skolen.",
            "ansvarligEnhet": NAV,
            "status": "PLANLAGT",
            "fra": None,
            "evaluerDato": "2027-02-15",
            "evaluering": None,
        },
    )
    year.state.update(school_measure=own["tiltakId"], nav_measure=for_nav["tiltakId"])
    for record in (own, for_nav):
        identifier = f"{sid('skolesystem', 'tiltak')}|{record['tiltakId']}"
        task = wait_for(year, partial(_one, year, "Task", identifier=identifier))
        assert task["basedOn"] == [{"reference": f"CarePlan/{year.state['school_careplan']}"}]
    # the kindergarten and the station get both (the family permits them) ...
    kg = wait_for(
        year,
        lambda: (
            (
                found := [
                    m
                    for m in year.kindergarten_store()["tiltak"]
                    if m["beskrivelse"].startswith(("Skole:", "NAV:"))
                ]
            )
            and len(found) == 2
            and found
        ),
    )
    assert sorted(m["ansvarlig"] for m in kg) == sorted([SCHOOL, NAV])
    wait_for(
        year,
        lambda: (
            len(
                [
                    t
                    for t in year.station_store("Task")
                    if t.get("description", "").startswith(("Skole:", "NAV:"))
                ]
            )
            == 2
        ),
    )
    # ... NAV owns one, but no consent names NAV: the router refuses it
    wait_for(year, lambda: year.worker.counters.refused > refused)
    time.sleep(1.5)  # a delivery, had there been one, would have arrived by now
    nav = year.nav_store()
    assert [r for kind in nav.values() for r in kind if r.get("fodselsnummer") == NORA] == []


# -- 7. the family adds NAV ------------------------------------------------------------------
def test_7_the_measure_reaches_nav_after_the_mother_adds_nav(year: Year) -> None:
    mother = year.family()
    related = next(
        r
        for r in _entries(year, "RelatedPerson", patient=year.state["nora"])
        if r["identifier"][0]["value"] == MOTHER
    )
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": year.state["nora"]},
        "dateTime": datetime.now(UTC).isoformat(timespec="seconds"),
        "performer": [{"reference": f"RelatedPerson/{related['id']}"}],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": {"start": date.today().isoformat(), "end": UNTIL},
            "actor": [
                {"role": IRCP, "reference": {"reference": f"Organization/{year.orgs[o]}"}}
                for o in (SCHOOL, NAV)
            ],
        },
    }
    year.state["nav_consent_at"] = datetime.now(UTC)
    added = mother.post("/Consent", json=consent, headers=fhir_headers())
    assert added.status_code == 201, added.text
    year.state["nav_consent"] = added.json()["id"]
    measure = wait_for(
        year, lambda: [m for m in year.nav_store()["tiltak"] if m["beskrivelse"].startswith("NAV:")]
    )
    assert measure[0]["fodselsnummer"] == NORA
    assert measure[0]["status"] == "PLANLAGT"
    assert measure[0]["evalueringsdato"] == "2027-02-15"
    samtykke = wait_for(
        year, lambda: [s for s in year.nav_store()["samtykker"] if NAV in s["mottakere"]]
    )
    assert samtykke[0]["trukket"] is False
    # NAV's grant fetches what it may now read, so earlier measures come too; but nothing
    # of Nora reached NAV before the mother's consent
    records = [r for kind in year.nav_store().values() for r in kind]
    assert records
    assert all(_instant(r["endret"]) >= year.state["nav_consent_at"] for r in records)


# -- 8. withdrawal ---------------------------------------------------------------------------
def _nav_consent_withdrawn(year: Year, consent_id: str) -> bool:
    found = [s for s in year.nav_store()["samtykker"] if s["samtykkeId"] == consent_id]
    return bool(found) and all(s["trukket"] for s in found)


def test_8_the_mothers_withdrawal_stops_every_flow(year: Year) -> None:
    mother = year.family()
    active = {
        c["id"]: c
        for c in _entries(year, "Consent", patient=year.state["nora"])
        if c["status"] == "active"
    }
    kg_consent = _one(
        year,
        "Consent",
        identifier=f"{sid('barnehagesystem', 'samtykke')}|{year.state['kg_consent']}",
    )
    school_consent = _one(
        year,
        "Consent",
        identifier=f"{sid('skolesystem', 'samtykke')}|{year.state['school_consent']}",
    )
    assert kg_consent is not None
    assert school_consent is not None
    order = [kg_consent["id"], school_consent["id"], year.state["nav_consent"]]
    assert sorted(order) == sorted(active)  # the family's three consents, all active
    revoked = year.worker.counters.revoked
    # one consent at a time, each taking effect before the next: while NAV may still see the
    # log it is told of each withdrawal (see the module notes for withdrawing all at once)
    for consent_id in order:
        current = mother.get(f"/Consent/{consent_id}").json()
        withdrawn = mother.put(
            f"/Consent/{consent_id}", json={**current, "status": "inactive"}, headers=fhir_headers()
        )
        assert withdrawn.status_code == 200, withdrawn.text
        wait_for(year, partial(_nav_consent_withdrawn, year, consent_id))
    # the kindergarten, the station, the school and NAV have each lost the log
    wait_for(year, lambda: year.worker.counters.revoked >= revoked + 4)

    # every system shows it, as far as its API allows
    def kindergarten_hid_nora() -> bool:
        store = year.kindergarten_store()
        return all(b["skjult"] for b in store["barn"]) and all(
            s["status"] == "trukket" for s in store["samtykker"]
        )

    wait_for(year, kindergarten_hid_nora)
    wait_for(year, lambda: all(s["trukket"] for s in year.school_store()["samtykker"]))
    wait_for(
        year,
        lambda: all(
            c["status"] == "inactive"
            for c in year.station_store("Consent")
            if c["patient"].get("identifier", {}).get("value") == NORA
        ),
    )
    assert all(s["trukket"] for s in year.nav_store()["samtykker"])
    year.state["after_withdrawal"] = {
        "kindergarten": year.kindergarten_store(),
        "school": year.school_store(),
        "station": year.station_store("Task"),
        "nav": year.nav_store(),
        "agency": year.agency_store(),
    }

    # afterwards a measure written in any of the five systems reaches no other system
    dead = year.worker.counters.dead_lettered
    _sim(
        year.kindergarten,
        "POST",
        "tiltak",
        {
            "barn": NORA,
            "beskrivelse": f"Barnehagen: lesestund ({AFTER})",
            "ansvarlig": KINDERGARTEN,
            "status": "foreslatt",
        },
    )
    _sim(
        year.school,
        "POST",
        "tiltak",
        {
            "elevId": year.state["pupil"]["elevId"],
            "tittel": "Leksehjelp",
            "beskrivelse": f"Skolen: leksehjelp ({AFTER})",
            "ansvarligEnhet": SCHOOL,
            "status": "PLANLAGT",
            "fra": None,
            "evaluerDato": None,
            "evaluering": None,
        },
    )
    _sim(
        year.station,
        "POST",
        "tiltak",
        {
            "fodselsnummer": NORA,
            "beskrivelse": f"Helsestasjonen: vektkontroll ({AFTER})",
            "startdato": "2027-01-04",
            "evalueringsdato": "2027-03-01",
        },
    )
    agency = year.agency.post(
        "/_sim/sak/tiltak",
        json={
            "fnr": NORA,
            "beskrivelse": f"Barnevernet: foreldreveiledning ({AFTER})",
            "status": "planlagt",
            "evalueres": "2027-03-01",
        },
    )
    assert agency.status_code == 201, agency.text
    _sim(
        year.nav,
        "POST",
        "tiltak",
        {
            "fodselsnummer": NORA,
            "beskrivelse": f"NAV: bostøtte ({AFTER})",
            "status": "PLANLAGT",
        },
    )
    # each source sent its measure to Stafett, which refused all five
    wait_for(year, lambda: year.worker.counters.dead_lettered >= dead + 5, timeout=45)
    everyone = {KINDERGARTEN, SCHOOL, HEALTH, CHILD_WELFARE, NAV}

    def senders(found: list[tuple[str, str, bytes]]) -> set[str]:
        return {orjson.loads(value)["sender"] for _, _, value in found}

    # (a message the agency sends again before its receipt comes is refused again: the
    # dead letters may hold one measure twice)
    refusals = year.dead_letters(lambda v: AFTER.encode() in v, lambda f: senders(f) >= everyone)
    assert senders(refusals) == everyone, refusals
    for _, reason, _ in refusals:  # refused for want of consent, nothing else
        issue = orjson.loads(reason)["issue"][0]
        assert issue["code"] == "forbidden", reason
        assert "No valid consent" in issue["diagnostics"], reason
    time.sleep(1.5)  # a delivery, had there been one, would have arrived by now
    assert not [
        t
        for t in _entries(year, "Task", patient=year.state["nora"])
        if AFTER in t.get("description", "")
    ]


# -- 9. each vendor store at the end ---------------------------------------------------------
def _texts(records: list[dict[str, Any]], key: str) -> list[str]:
    return sorted(str(r.get(key) or "") for r in records)


def _started(texts: list[str], *prefixes: str) -> list[str]:
    return [t for t in texts if t.startswith(prefixes)]


def test_9_each_vendor_store_holds_what_it_should_and_nothing_more(year: Year) -> None:
    before = year.state["after_withdrawal"]
    pregnancy = "Svangerskap"

    # the kindergarten: Nora hidden, its consent withdrawn; nothing written after the withdrawal
    kg = year.kindergarten_store()
    assert [(b["fodselsnummer"], b["skjult"]) for b in kg["barn"]] == [(NORA, True)]
    assert [(s["id"], s["status"]) for s in kg["samtykker"]] == [
        (year.state["kg_consent"], "trukket")
    ]
    own = [m for m in kg["tiltak"] if AFTER in m["beskrivelse"]]
    assert [m["beskrivelse"] for m in own] == [f"Barnehagen: lesestund ({AFTER})"]
    assert [m for m in kg["tiltak"] if m not in own] == before["kindergarten"]["tiltak"]
    assert kg["barn"] == before["kindergarten"]["barn"]
    assert _texts(before["kindergarten"]["tiltak"], "beskrivelse") == sorted(
        [
            "Språkgruppe: 20 minutter fire dager i uken",  # its own
            "Helsesykepleier: språk og hørsel ved fireårskontrollen følges opp",  # the station's
            "Overgang: besøk på skolen og samtale med kontaktlærer",  # its own, school-evaluated
            "Skole: en fast voksen tar imot Nora om morgenen og etter friminutt.",  # the school's
            "NAV: samtale med familien om økonomi og bolig, sammen med skolen.",  # the school's
        ]
    )
    assert not [m for m in kg["tiltak"] if pregnancy in m["beskrivelse"]]

    # the school: its consent withdrawn; what it got came before the withdrawal
    school = year.school_store()
    assert [p["personnummer"] for p in school["elever"]] == [NORA]
    assert [(s["id"], s["trukket"]) for s in school["samtykker"]] == [
        (year.state["school_consent"], True)
    ]
    texts = _texts(school["tiltak"], "beskrivelse")
    assert len(_started(texts, "Overgang:", "Skole:", "NAV:")) == 3
    assert [t for t in texts if AFTER in t] == [f"Skolen: leksehjelp ({AFTER})"]
    assert not [t for t in texts if pregnancy in t]
    assert len(texts) == len(set(texts))  # nothing twice (echoes, redeliveries)
    assert [m for m in school["tiltak"] if AFTER not in m["beskrivelse"]] == before["school"][
        "tiltak"
    ]
    assert school["samtykker"] == before["school"]["samtykker"]
    transition = next(m for m in school["tiltak"] if m["beskrivelse"].startswith("Overgang:"))
    assert transition["evaluering"]["tekst"] == "Nora har besøkt klasserommet og gleder seg."

    # the health station: the pregnancy log closed, Nora's consents inactive, the mother's own
    # consent untouched; nothing of another system after the withdrawal
    plans = year.station_store("CarePlan")
    own_log = next(p for p in plans if p["id"] == year.state["pregnancy_log"])
    assert own_log["status"] == "completed"
    patients = year.station_store("Patient")
    assert sorted(p["identifier"][0]["value"] for p in patients) == sorted([MOTHER, NORA])
    consents = year.station_store("Consent")
    mine = [
        c
        for c in consents
        if c["patient"]["reference"] == f"Patient/{year.state['station_mother']}"
    ]
    assert [c["status"] for c in mine] == ["active"]
    noras = [c for c in consents if c not in mine]
    assert noras
    assert all(c["status"] == "inactive" for c in noras)
    tasks = _texts(year.station_store("Task"), "description")
    assert [t for t in tasks if AFTER in t] == [f"Helsestasjonen: vektkontroll ({AFTER})"]
    assert len(_started(tasks, "Overgang:", "Skole:", "NAV:")) == 3
    assert len(tasks) == len(set(tasks))
    assert [
        t for t in year.station_store("Task") if AFTER not in t.get("description", "")
    ] == before["station"]

    # child welfare: no consent ever named it, so it never learnt anything about Nora; the
    # caseworker's own measure after the withdrawal stayed in the agency
    agency = year.agency_store()
    assert agency["logger"] == []
    assert agency["samtykker"] == []
    assert [m["beskrivelse"] for m in agency["tiltak"]] == [
        f"Barnevernet: foreldreveiledning ({AFTER})"
    ]
    assert before["agency"] == {"logger": [], "tiltak": [], "samtykker": []}

    # NAV: all its consent copies withdrawn; nothing arrived before the mother added NAV, or
    # after she withdrew
    nav = year.nav_store()
    assert nav["samtykker"]
    assert all(s["trukket"] for s in nav["samtykker"])
    received = [
        r for kind in ("tiltak", "samtykker") for r in nav[kind] if r["endretAv"] == "stafett"
    ]
    assert all(_instant(r["endret"]) >= year.state["nav_consent_at"] for r in received)
    texts = _texts(nav["tiltak"], "beskrivelse")
    assert [t for t in texts if AFTER in t] == [f"NAV: bostøtte ({AFTER})"]
    assert [m for m in nav["tiltak"] if AFTER not in m["beskrivelse"]] == before["nav"]["tiltak"]
    assert nav["samtykker"] == before["nav"]["samtykker"]
    assert _started(texts, "NAV: samtale med familien")
    assert not [t for t in texts if pregnancy in t]
    assert nav["oppfolging"] == []

    # Stafett, as the family sees it: two logs of Nora's (the kindergarten's closed, with the
    # hand-over in its CareTeam, the school's open), the closed pregnancy log of her mother,
    # each measure once, every consent of Nora's withdrawn, no measure from after it
    logs = {p["id"]: p for p in _entries(year, "CarePlan", patient=year.state["nora"])}
    assert {i: p["status"] for i, p in logs.items()} == {
        year.state["kg_careplan"]: "completed",
        year.state["school_careplan"]: "active",
    }
    pregnancy_log = _one(year, "CarePlan", _id=year.state["pregnancy_careplan"])
    assert pregnancy_log is not None
    assert pregnancy_log["subject"]["reference"] == year.state["mother"]
    assert pregnancy_log["status"] == "completed"
    measures = _texts(_entries(year, "Task", patient=year.state["nora"]), "description")
    assert measures == sorted(
        [
            "Språkgruppe: 20 minutter fire dager i uken",
            "Helsesykepleier: språk og hørsel ved fireårskontrollen følges opp",
            "Overgang: besøk på skolen og samtale med kontaktlærer",
            "Skole: en fast voksen tar imot Nora om morgenen og etter friminutt.",
            "NAV: samtale med familien om økonomi og bolig, sammen med skolen.",
        ]
    )
    consents = _entries(year, "Consent", patient=year.state["nora"])
    assert len(consents) == 3
    assert {c["status"] for c in consents} == {"inactive"}
    team = _one(year, "CareTeam", _id=year.state["kg_team"])
    assert team is not None
    assert [d for d, _ in _holders(team)] == ["Kari Pedagog", "Per Lærer"]

    # no connector dead-lettered anything all year: every refusal was Stafett's, for consent
    for name in year.runtime.names():
        status = year.runtime.status(name)
        assert status.dead_lettered == 0, (name, status.last_error)
