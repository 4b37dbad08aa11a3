"""Round trips with hypothesis: vendor → FHIR → vendor gives the same record for the fields
each spec carries both ways (the specs' descriptions say what is lost and why)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mapping import MappingEngine
from tests.support import synthetic_fnr, synthetic_orgnr

OPERATOR = "936451284"
TODAY = "2026-11-01"
SETTINGS = settings(
    max_examples=25,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

fnrs = st.randoms(use_true_random=False).map(synthetic_fnr)
orgnrs = st.randoms(use_true_random=False).map(synthetic_orgnr)
dates = st.dates(dt.date(2020, 1, 1), dt.date(2030, 12, 31)).map(dt.date.isoformat)
texts = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=40)
    .filter(str.strip)
    .map(str.strip)
)
ids = st.from_regex(r"[A-Z]{1,3}-[0-9]{1,6}", fullmatch=True)
levels = st.sampled_from(["0", "1", "2", "3"])


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _round_trip(
    engine: MappingEngine,
    system: str,
    kind: str,
    resource: str,
    record: dict[str, Any],
    context: dict[str, Any],
) -> dict[str, Any]:
    inbound = engine.map(system, "inbound", kind, record, context)
    resources = inbound.resources
    data: Any = resources if len(resources) > 1 else resources[0]
    outbound = engine.map(system, "outbound", resource, data, context)
    assert outbound.record is not None
    return outbound.record


# -- kindergarten -------------------------------------------------------------------------------
kg_tiltak = st.fixed_dictionaries(
    {
        "id": ids,
        "barn": fnrs,
        "beskrivelse": texts,
        "ansvarlig": orgnrs,
        "status": st.sampled_from(
            ["foreslatt", "avtalt", "pagar", "pause", "avsluttet", "avbrutt"]
        ),
    },
    optional={
        "startdato": dates,
        "evalueringsdato": dates,
        "evalueringer": st.lists(
            st.fixed_dictionaries({"dato": dates, "tekst": texts}, optional={"ansattId": ids}),
            max_size=3,
        ),
    },
)


@SETTINGS
@given(record=kg_tiltak)
def test_kindergarten_tiltak(engine: MappingEngine, record: dict[str, Any]) -> None:
    back = _round_trip(
        engine, "barnehagesystem", "tiltak", "Task", record, {"operator_orgnr": OPERATOR}
    )
    assert back == {"evalueringer": [], **record}


@st.composite
def kg_samtykke(draw: st.DrawFn) -> dict[str, Any]:
    child = draw(fnrs)
    status = draw(st.sampled_from(["gyldig", "trukket", "utlopt"]))
    end = draw(
        dates.filter(lambda d: d < TODAY)
        if status == "utlopt"
        else dates.filter(lambda d: d >= TODAY)
    )
    record = {
        "id": draw(ids),
        "barn": child,
        "signertAv": draw(
            st.lists(fnrs.filter(lambda f: f != child), min_size=1, max_size=2, unique=True)
        ),
        "signertDato": draw(dates),
        "gyldigFra": draw(dates),
        "gyldigTil": end,
        "status": status,
        "deleMed": draw(st.lists(orgnrs, min_size=1, max_size=3, unique=True)),
    }
    if draw(st.booleans()):
        record["skjema"] = {"filnavn": draw(texts), "pdfBase64": "JVBERi0xLjQK"}
    return record


@SETTINGS
@given(record=kg_samtykke())
def test_kindergarten_samtykke(engine: MappingEngine, record: dict[str, Any]) -> None:
    back = _round_trip(
        engine,
        "barnehagesystem",
        "samtykke",
        "Consent",
        record,
        {"operator_orgnr": OPERATOR, "today": TODAY},
    )
    assert back == record


@st.composite
def kg_barn(draw: st.DrawFn) -> dict[str, Any]:
    logg: dict[str, Any] = {
        "opprettet": draw(dates),
        "niva": draw(levels),
        "status": draw(st.sampled_from(["aktiv", "avsluttet"])),
    }
    if draw(st.booleans()):
        logg["oppmerksomhet"] = draw(texts)
    if draw(st.booleans()):
        logg["stafettholder"] = {"ansattId": draw(ids), "navn": draw(texts), "enhet": draw(orgnrs)}
    guardians = draw(st.lists(fnrs, max_size=2, unique=True))
    record = {
        "id": draw(ids),
        "fodselsnummer": draw(fnrs),
        "fornavn": draw(texts),
        "etternavn": draw(texts),
        "logg": logg,
        "foresatte": [
            {
                "fodselsnummer": g,
                "navn": draw(texts),
                "foreldreansvar": draw(
                    st.sampled_from(["felles", "mor", "far", "medmor", "andre", "ukjent"])
                ),
            }
            for g in guardians
        ],
    }
    if draw(st.booleans()):
        record["fodselsdato"] = draw(dates)
    return record


@SETTINGS
@given(record=kg_barn())
def test_kindergarten_barn(engine: MappingEngine, record: dict[str, Any]) -> None:
    back = _round_trip(
        engine, "barnehagesystem", "barn", "CarePlan", record, {"operator_orgnr": OPERATOR}
    )
    assert back == record


def test_kindergarten_child_without_a_log(engine: MappingEngine) -> None:
    # the system's contract allows `logg: null`: the child and guardians only, no log
    record = {
        "id": "B-1001",
        "fodselsnummer": "15832151200",
        "fornavn": "Nora",
        "etternavn": "Eksempelsen",
        "fodselsdato": "2021-03-15",
        "logg": None,
        "foresatte": [{"fodselsnummer": "04868941214", "navn": "Kari", "foreldreansvar": "felles"}],
    }
    result = engine.map("barnehagesystem", "inbound", "barn", record, {"operator_orgnr": OPERATOR})
    assert sorted(r["resourceType"] for r in result.resources) == ["Patient", "RelatedPerson"]


# -- school -------------------------------------------------------------------------------------
school_tiltak = st.fixed_dictionaries(
    {
        "tiltakId": st.integers(1, 10**6),
        "elevId": st.integers(1, 10**6),
        "tittel": texts,
        "beskrivelse": texts,
        "ansvarligEnhet": orgnrs,
        "status": st.sampled_from(["PLANLAGT", "AKTIV", "PAUSET", "FULLFORT", "AVBRUTT"]),
        "fra": dates | st.none(),
        "evaluerDato": dates | st.none(),
        "evaluering": st.none() | st.fixed_dictionaries({"dato": dates, "tekst": texts}),
    }
)


@SETTINGS
@given(record=school_tiltak, child=fnrs)
def test_school_tiltak(engine: MappingEngine, record: dict[str, Any], child: str) -> None:
    context = {"operator_orgnr": OPERATOR, "fnr": child}
    back = _round_trip(engine, "skolesystem", "tiltak", "Task", record, context)
    assert back == record


@st.composite
def school_elev(draw: st.DrawFn) -> dict[str, Any]:
    logg: dict[str, Any] = {"nivaa": draw(st.integers(0, 3)), "aktiv": draw(st.booleans())}
    if draw(st.booleans()):
        logg["bekymring"] = draw(texts)
    if draw(st.booleans()):
        logg["kontaktlaerer"] = {"ansattnr": draw(ids), "navn": draw(texts)}
    return {
        "elevId": draw(st.integers(1, 10**6)),
        "personnummer": draw(fnrs),
        "navn": {"fornavn": draw(texts), "etternavn": draw(texts)},
        "trinn": draw(st.integers(1, 10)),
        "skole": draw(orgnrs),
        "stafettlogg": logg,
    }


@SETTINGS
@given(record=school_elev())
def test_school_elev(engine: MappingEngine, record: dict[str, Any]) -> None:
    back = _round_trip(
        engine, "skolesystem", "elev", "CarePlan", record, {"operator_orgnr": OPERATOR}
    )
    assert back == {k: v for k, v in record.items() if k != "trinn"}  # trinn has no place in FHIR


@st.composite
def school_samtykke(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    child = draw(fnrs)
    record = {
        "id": draw(st.integers(1, 10**6)),
        "elevId": draw(st.integers(1, 10**6)),
        "foresatt": draw(
            st.lists(fnrs.filter(lambda f: f != child), min_size=1, max_size=2, unique=True)
        ),
        "signert": draw(dates),
        "utloper": draw(dates),
        "mottakere": draw(st.lists(orgnrs, min_size=1, max_size=3, unique=True)),
        "trukket": draw(st.booleans()),
        "vedlegg": draw(st.none() | st.just({"pdf": "JVBERi0xLjQK"})),
    }
    return record, child


@SETTINGS
@given(case=school_samtykke())
def test_school_samtykke(engine: MappingEngine, case: tuple[dict[str, Any], str]) -> None:
    record, child = case
    context = {
        "operator_orgnr": OPERATOR,
        "fnr": child,
        "record_ids": {"elev": str(record["elevId"])},
    }
    assert _round_trip(engine, "skolesystem", "samtykke", "Consent", record, context) == record


# -- child welfare --------------------------------------------------------------------------------
bv_tiltak = st.fixed_dictionaries(
    {
        "tiltakId": ids,
        "fnr": fnrs,
        "beskrivelse": texts,
        "status": st.sampled_from(["planlagt", "iverksatt", "avsluttet"]),
        "oppstart": dates | st.none(),
        "evalueres": dates | st.none(),
        "evaluering": st.none() | st.fixed_dictionaries({"dato": dates, "tekst": texts}),
    }
)
BV = {"operator_orgnr": OPERATOR, "unit_orgnr": "974760673", "sent": "2026-09-07T09:12:00+02:00"}


@SETTINGS
@given(record=bv_tiltak)
def test_child_welfare_tiltak(engine: MappingEngine, record: dict[str, Any]) -> None:
    assert _round_trip(engine, "barnevern", "tiltak", "Task", record, BV) == record


bv_logg = st.fixed_dictionaries(
    {"fnr": fnrs, "niva": levels, "status": st.sampled_from(["apen", "lukket"])},
    optional={"saksbehandler": st.fixed_dictionaries({"id": ids, "navn": texts})},
)


@SETTINGS
@given(record=bv_logg)
def test_child_welfare_logg(engine: MappingEngine, record: dict[str, Any]) -> None:
    assert _round_trip(engine, "barnevern", "logg", "CarePlan", record, BV) == record


@st.composite
def bv_samtykke(draw: st.DrawFn) -> dict[str, Any]:
    child = draw(fnrs)
    return {
        "samtykkeId": draw(ids),
        "fnr": child,
        "foresatte": draw(
            st.lists(fnrs.filter(lambda f: f != child), min_size=1, max_size=2, unique=True)
        ),
        "gyldigTil": draw(dates),
        "mottakere": draw(st.lists(orgnrs, min_size=1, max_size=3, unique=True)),
        "trukket": draw(st.booleans()),
    }


@SETTINGS
@given(record=bv_samtykke())
def test_child_welfare_samtykke(engine: MappingEngine, record: dict[str, Any]) -> None:
    assert _round_trip(engine, "barnevern", "samtykke", "Consent", record, BV) == record


# -- NAV ----------------------------------------------------------------------------------------
NAV = {
    "operator_orgnr": "889640782",
    "unit_orgnr": "961728398",
    "event_id": "e-1",
    "event_time": "2027-03-10T10:00:00.000",
}
EVENT = {"@id": "n-1", "@opprettet": "2027-03-02T11:45:00.123", "@kilde": "nav"}


def _fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("@")}


nav_tiltak = st.fixed_dictionaries(
    {
        "tiltaksId": ids,
        "fodselsnummer": fnrs,
        "beskrivelse": texts,
        "status": st.sampled_from(["PLANLAGT", "GJENNOMFORES", "AVSLUTTET"]),
        "fraOgMed": dates | st.none(),
        "evalueringsdato": dates | st.none(),
        "evaluering": st.none() | st.fixed_dictionaries({"dato": dates, "tekst": texts}),
    }
)


@SETTINGS
@given(record=nav_tiltak)
def test_nav_tiltak(engine: MappingEngine, record: dict[str, Any]) -> None:
    event = {"@event_name": "bti_tiltak", **EVENT, **record}
    back = _round_trip(engine, "nav", "bti_tiltak", "Task", event, NAV)
    assert back["@event_name"] == "bti_tiltak"
    assert back["@kilde"] == "stafett"
    assert _fields(back) == record


nav_oppfolging = st.fixed_dictionaries(
    {"fodselsnummer": fnrs, "nivaa": levels, "kontor": orgnrs, "aktiv": st.booleans()},
    optional={
        "veileder": st.fixed_dictionaries(
            {"navIdent": st.from_regex(r"[A-Z][0-9]{6}", fullmatch=True), "navn": texts}
        )
    },
)


@SETTINGS
@given(record=nav_oppfolging)
def test_nav_oppfolging(engine: MappingEngine, record: dict[str, Any]) -> None:
    event = {"@event_name": "bti_oppfolging", **EVENT, **record}
    assert _fields(_round_trip(engine, "nav", "bti_oppfolging", "CarePlan", event, NAV)) == record


nav_samtykke = st.fixed_dictionaries(
    {
        "samtykkeId": ids,
        "fodselsnummer": fnrs,
        "mottakere": st.lists(orgnrs, min_size=1, max_size=3, unique=True),
        "gyldigTilOgMed": dates,
        "trukket": st.booleans(),
    }
)


@SETTINGS
@given(record=nav_samtykke)
def test_nav_samtykke(engine: MappingEngine, record: dict[str, Any]) -> None:
    event = {"@event_name": "bti_samtykke", **EVENT, **record}
    assert _fields(_round_trip(engine, "nav", "bti_samtykke", "Consent", event, NAV)) == record


# -- health station (FHIR → FHIR) -----------------------------------------------------------------
@st.composite
def hs_task(draw: st.DrawFn) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "id": draw(st.from_regex(r"hs-t-[0-9]{1,5}", fullmatch=True)),
        "status": draw(
            st.sampled_from(
                ["requested", "accepted", "in-progress", "on-hold", "completed", "cancelled"]
            )
        ),
        "intent": "plan",
        "code": {
            "coding": [{"system": "http://helsestasjon.example/kodeverk/oppgave", "code": "tiltak"}]
        },
        "description": draw(texts),
        "for": {
            "type": "Patient",
            "identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": draw(fnrs)},
        },
        "owner": {
            "type": "Organization",
            "identifier": {"system": "urn:oid:2.16.578.1.12.4.1.4.101", "value": draw(orgnrs)},
        },
        "restriction": {"period": {"end": draw(dates)}},
    }
    if draw(st.booleans()):
        task["basedOn"] = [{"reference": f"CarePlan/hs-cp-{draw(st.integers(1, 999))}"}]
    if draw(st.booleans()):
        task["executionPeriod"] = {"start": draw(dates)}
    notes = draw(
        st.lists(
            st.fixed_dictionaries({"time": dates, "text": texts}, optional={"authorString": texts}),
            max_size=2,
        )
    )
    if notes:
        task["note"] = notes
    return task


@SETTINGS
@given(task=hs_task())
def test_health_station_task(engine: MappingEngine, task: dict[str, Any]) -> None:
    back = _round_trip(
        engine, "helsestasjon-fhir", "task", "Task", task, {"operator_orgnr": OPERATOR}
    )
    assert back == task
