"""The health-station connector's parts without Stafett: paging, echo and copies, merging."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from connectors import ConnectorConfig
from connectors.health_station.client import StationClient
from connectors.health_station.sink import _merge
from connectors.health_station.source import StationSource
from simulators.common.server import running
from simulators.health_station.app import HealthStationConfig, create_app

HEALTH = "945182733"
OPERATOR = "936451284"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
OWN = "https://stafett.no/connectors/test"
CHILDREN = ["15832151200", "12851950085", "03828510036", "04868941214", "22918731958"]


@pytest.fixture(scope="module")
def station() -> Iterator[str]:
    with running(create_app(HealthStationConfig(data_dir=None, token="t"))) as url:
        for number, fnr in enumerate(CHILDREN):
            body = {
                "fodselsnummer": fnr,
                "fornavn": f"Barn{number}",
                "etternavn": "Test",
                "fodselsdato": "2019-05-12",
            }
            assert httpx.post(f"{url}/_sim/barn", json=body).status_code == 201
        yield url


def test_changes_are_paged_by_next_links_and_resumed_from_the_cursor(station: str) -> None:
    client = StationClient(f"{station}/fhir/", "t")  # the FHIR base works as well as the root
    try:
        first, more = client.changed("Patient", None, page_size=2, max_pages=2)
        assert len(first) == 4
        assert more
        rest, more = client.changed("Patient", first[-1]["meta"]["lastUpdated"], page_size=2)
        assert [p["identifier"][0]["value"] for p in rest] == CHILDREN[4:]
        assert not more
    finally:
        client.close()


def test_the_source_skips_its_echo_and_copies_of_stafett_resources(station: str) -> None:
    nora = CHILDREN[0]
    httpx.post(
        f"{station}/_sim/logg",
        json={
            "fodselsnummer": nora,
            "niva": 1,
            "oppmerksomhet": "Språk",
            "opprettet": "2026-09-01",
        },
    ).raise_for_status()
    patient = httpx.get(
        f"{station}/fhir/Patient",
        params={"identifier": f"{FNR}|{nora}"},
        headers={"Authorization": "Bearer t"},
    ).json()["entry"][0]["resource"]
    copy = {
        "resourceType": "CarePlan",
        "meta": {"source": "https://elsewhere.example"},
        "identifier": [{"system": "https://stafett.no/fhir/id/CarePlan", "value": "abc"}],
        "status": "active",
        "intent": "plan",
        "category": [
            {"coding": [{"system": "http://helsestasjon.example/kodeverk/plantype", "code": "bti"}]}
        ],
        "subject": {"reference": f"Patient/{patient['id']}"},
    }
    echo = {**copy, "identifier": [], "meta": {"source": OWN}}
    headers = {"Authorization": "Bearer t", "Content-Type": "application/fhir+json"}
    for body in (copy, echo):
        httpx.post(f"{station}/fhir/CarePlan", json=body, headers=headers).raise_for_status()
    config = ConnectorConfig.model_validate(
        {
            "name": "hs",
            "kind": "source",
            "system": "health_station",
            "organization": HEALTH,
            "operator": OPERATOR,
            "source_system": "helsestasjon-fhir",
            "settings": {"base_url": station, "token": "t", "source_uri": OWN},
        }
    )
    source = StationSource(config, StationClient(station, "t"))
    try:
        batch = source.poll(None)
        assert [r.record_id for r in batch.records] == ["CarePlan/hs-6"]  # the journal's log
        entries = [e["resource"] for e in batch.records[0].payload["entry"]]
        assert [e["resourceType"] for e in entries] == ["Patient", "CarePlan", "Provenance"]
        assert batch.checkpoint is not None
        assert set(batch.checkpoint) == {"CarePlan"}
    finally:
        source.close()


def test_measures_recorded_before_the_consent_follow_the_log_when_it_can_open(
    station: str,
) -> None:
    child = CHILDREN[1]
    post = {"Authorization": "Bearer t"}
    for path, body in (
        (
            "logg",
            {"fodselsnummer": child, "niva": 2, "oppmerksomhet": "Søvn", "opprettet": "2026-09-01"},
        ),
        (
            "tiltak",
            {
                "fodselsnummer": child,
                "beskrivelse": "Søvndagbok",
                "startdato": "2026-09-02",
                "evalueringsdato": "2026-10-01",
            },
        ),
    ):
        httpx.post(f"{station}/_sim/{path}", json=body).raise_for_status()
    patient = httpx.get(
        f"{station}/fhir/Patient", params={"identifier": f"{FNR}|{child}"}, headers=post
    ).json()["entry"][0]["resource"]
    config = ConnectorConfig.model_validate(
        {
            "name": "hs",
            "kind": "source",
            "system": "health_station",
            "organization": HEALTH,
            "operator": OPERATOR,
            "source_system": "helsestasjon-fhir",
            "settings": {"base_url": station, "token": "t", "source_uri": OWN},
        }
    )
    source = StationSource(config, StationClient(station, "t"))
    try:
        first = source.poll(None)
        mine = [r for r in first.records if r.subject == child]
        # the log travels without a consent (Stafett refuses it), the measure on its own
        assert [r.record_id.split("/")[0] for r in mine] == ["CarePlan", "Task"]
        measure = mine[1]
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
            "patient": {"reference": f"Patient/{patient['id']}"},
            "dateTime": "2026-09-03T10:00:00+02:00",
            "sourceAttachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK"},
            "provision": {
                "type": "permit",
                "period": {"start": "2026-09-03", "end": "2027-09-03"},
                "actor": [
                    {
                        "role": {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                    "code": "IRCP",
                                }
                            ]
                        },
                        "reference": {
                            "identifier": {
                                "system": "urn:oid:2.16.578.1.12.4.1.4.101",
                                "value": HEALTH,
                            }
                        },
                    }
                ],
            },
        }
        httpx.post(f"{station}/_sim/fhir/Consent", json=consent).raise_for_status()
        second = source.poll(first.checkpoint)
        mine = [r for r in second.records if r.subject == child]
        # the consent opens the log (it carries the log), and the measure follows it again,
        # with the same event id: Stafett applies it now, or drops it if it already holds it
        assert [r.record_id.split("/")[0] for r in mine] == ["Consent", "Task"]
        kinds = [e["resource"]["resourceType"] for e in mine[0].payload["entry"]]
        assert "CarePlan" in kinds
        assert "Consent" in kinds
        assert mine[1].event_id == measure.event_id
        assert mine[1].payload["entry"][0] == measure.payload["entry"][0]  # the same Task
        # nothing changed since: nothing is sent again
        assert [r for r in source.poll(second.checkpoint).records if r.subject == child] == []
    finally:
        source.close()


def test_a_station_task_keeps_its_notes_and_own_elements_when_stafett_updates_it() -> None:
    current: dict[str, Any] = {
        "resourceType": "Task",
        "id": "hs-9",
        "meta": {"versionId": "3", "source": "http://helsestasjon.example/fhir/journal"},
        "authoredOn": "2026-09-14T10:00:00+02:00",
        "status": "in-progress",
        "note": [{"time": "2026-10-01T10:00:00+02:00", "text": "Første samtale"}],
    }
    record = {
        "resourceType": "Task",
        "id": "hs-9",
        "status": "on-hold",
        "note": [
            {"time": "2026-10-01T10:00:00+02:00", "text": "Første samtale"},
            {"time": "2026-11-01T10:00:00+01:00", "text": "Skolen: god uke"},
        ],
        "meta": {"source": OWN},
    }
    merged = _merge(current, record)
    assert merged["status"] == "on-hold"
    assert merged["authoredOn"] == current["authoredOn"]
    assert [n["text"] for n in merged["note"]] == ["Første samtale", "Skolen: god uke"]
    assert merged["meta"]["source"] == OWN
