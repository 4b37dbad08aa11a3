"""The NAV connector end to end: NAV's simulator on its Kafka topic ⇄ Stafett on PostgreSQL.

The school has registered two children in Stafett with their guardians' signed consents: Ola
(17), whose consent also names NAV, and Emma (10), whose consent names only the school. A NAV
advisor's follow-up, measure and consent for Ola (signed by Ola) arrive in Stafett as events on
`nav.bti.v1`. A measure the school creates for Emma, owned by NAV, reaches NAV only after
Emma's mother adds NAV to her consent; her withdrawal sends NAV a withdrawn `bti_samtykke`
and stops what follows.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bus.kafka import KafkaBus
from connectors import ConnectorConfig, ConnectorRuntime, FileCheckpointStore
from connectors.registry import factories
from service.worker import Worker
from simulators.common.server import running
from simulators.nav import Settings, create_app
from tests.conftest import new_postgres_database
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, LiveServer, fhir_headers, live_server

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.e2e]

OLA, OLA_FATHER = "12850950057", "21847810014"  # born 2009 and 1978 (synthetic)
EMMA, EMMA_MOTHER = "03861650080", "07908010056"  # born 2016 and 1980 (synthetic)
NAV = "961728398"
NAV_OPERATOR = "889640782"
SCHOOL = "927364514"
SID = f"https://stafett.no/fhir/sid/{NAV_OPERATOR}/nav/"
FORM_URL = "https://arkiv.nav.example/samtykke/{id}"
PARENTAL = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "fetch_max_wait_ms": 20}


@dataclass
class Stack:
    server: LiveServer
    nav: httpx.Client
    runtime: ConnectorRuntime
    worker: Worker
    orgs: dict[str, str]
    children: dict[str, dict[str, str]]

    def stafett(self, org: str) -> httpx.Client:
        return self.server.client(self.server.system_token(org=org))

    def citizen(self, pid: str) -> httpx.Client:
        audience = self.server.settings.audience
        return self.server.client(self.server.issuer.issue_citizen(pid=pid, audience=audience))

    def store(self) -> dict[str, Any]:
        data: dict[str, Any] = self.nav.get("/_sim/store").json()
        return data


_STATE: dict[str, Any] = {}


def _wait(check: Callable[[], Any], timeout: float = 45.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out; {_diagnosis()}"
        time.sleep(0.2)


def _diagnosis() -> str:
    stack: Stack | None = _STATE.get("stack")
    if stack is None:
        return ""
    statuses = [stack.runtime.status(n) for n in stack.runtime.names()]
    nav = stack.store()
    return (
        f"connectors: {statuses}; worker: {stack.worker.counters}; "
        f"nav: {nav['statistikk']} {nav.get('sisteIgnorerte')}"
    )


def _consent(patient: str, performer: str, orgs: tuple[str, ...], *, form: bool) -> dict[str, Any]:
    consent: dict[str, Any] = {
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
        "dateTime": "2026-09-01T10:00:00+02:00",
        "performer": [{"reference": performer}],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": {"start": "2026-09-01", "end": "2027-12-31"},
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
                    "reference": {"identifier": {"system": ORGNR_SYSTEM, "value": org}},
                }
                for org in orgs
            ],
        },
    }
    if form:
        consent["sourceAttachment"] = {
            "contentType": "application/pdf",
            "data": base64.b64encode(b"%PDF-1.4 signert samtykke").decode(),
        }
    return consent


def _register_child(
    server: LiveServer, fnr: str, birth: str, guardian: str, orgs: tuple[str, ...]
) -> dict[str, str]:
    """The school registers a child, one guardian and the guardian's signed consent."""
    patient = f"urn:uuid:0d5e3c1a-7f00-4a3b-9c1d-{fnr.zfill(12)}"
    related = f"urn:uuid:0d5e3c1a-7f00-4a3b-9c1d-{guardian.zfill(12)}"
    entries = [
        {
            "fullUrl": patient,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
                "birthDate": birth,
            },
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": related,
            "resource": {
                "resourceType": "RelatedPerson",
                "patient": {"reference": patient},
                "identifier": [{"system": FNR_SYSTEM, "value": guardian}],
                "relationship": [{"coding": [{"system": PARENTAL, "code": "felles"}]}],
            },
            "request": {"method": "POST", "url": "RelatedPerson"},
        },
        {
            "resource": _consent(patient, related, orgs, form=True),
            "request": {"method": "POST", "url": "Consent"},
        },
        {
            "fullUrl": "urn:uuid:0d5e3c1a-7f00-4a3b-9c1d-000000000001",
            "resource": {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "category": [
                    {
                        "coding": [
                            {
                                "system": "https://stafett.no/fhir/CodeSystem/log-category",
                                "code": "stafettlogg",
                            }
                        ]
                    }
                ],
                "subject": {"reference": patient},
                "description": "Mye fravær",
            },
            "request": {"method": "POST", "url": "CarePlan"},
        },
    ]
    response = server.client(server.system_token(org=SCHOOL)).post(
        "",
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers=fhir_headers(),
    )
    assert response.status_code == 200, response.text
    ids = [e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]]
    return {"patient": ids[0], "guardian": ids[1], "consent": ids[2], "careplan": ids[3]}


@pytest.fixture(scope="module")
def stack(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database = new_postgres_database(postgres_admin_url)
    nav_app = create_app(Settings(bootstrap=kafka_bootstrap, max_poll_interval_ms=5000, **GROUP))
    with (
        running(nav_app) as nav_url,
        live_server(database_url=database, data_dir=tmp_path_factory.mktemp("data")) as server,
    ):
        directory = server.client(server.system_token(org=SCHOOL))
        orgs: dict[str, str] = {}
        for number, name in ((NAV, "NAV Fjellvik"), (SCHOOL, "Fjellvik skole")):
            created = directory.post(
                "/Organization",
                json={
                    "resourceType": "Organization",
                    "identifier": [{"system": ORGNR_SYSTEM, "value": number}],
                    "name": name,
                },
                headers=fhir_headers(),
            )
            assert created.status_code == 201, created.text
            orgs[number] = created.json()["id"]
        children = {
            "ola": _register_child(server, OLA, "2009-05-12", OLA_FATHER, (SCHOOL, NAV)),
            "emma": _register_child(server, EMMA, "2016-06-03", EMMA_MOTHER, (SCHOOL,)),
        }
        bus = KafkaBus(kafka_bootstrap, max_poll_interval_ms=20000, **GROUP)
        worker = Worker(server.settings, bus=bus, components=("relay", "router", "ingest"))
        worker.start()
        common = {
            "system": "nav",
            "organization": NAV,
            "operator": NAV_OPERATOR,
            "source_system": "nav",
            "poll_interval_s": 0.2,
            "retry": {"max_attempts": 4, "backoff_s": 0.1, "max_backoff_s": 1.0},
        }
        kafka = {"bootstrap": kafka_bootstrap, "max_poll_interval_ms": 20000, **GROUP}
        source = {
            **common,
            "name": "nav-inn",
            "kind": "source",
            "settings": {
                **kafka,
                "consent_form_url": FORM_URL,
                "consent_signed_by": "youth",
            },
        }
        sink = {
            **common,
            "name": "nav-ut",
            "kind": "sink",
            "settings": {
                **kafka,
                "state_dir": str(tmp_path_factory.mktemp("state")),
                "stafett_url": server.fhir,
                "stafett_token": server.system_token(org=NAV, scopes="system/*.rs"),
            },
        }
        runtime = ConnectorRuntime(
            bus=bus,
            connectors=[ConnectorConfig.model_validate(c) for c in (source, sink)],
            checkpoints=FileCheckpointStore(tmp_path_factory.mktemp("checkpoints")),
            factories=factories(),
        )
        runtime.start()
        try:
            with httpx.Client(base_url=nav_url, timeout=10) as nav:
                _STATE["stack"] = Stack(server, nav, runtime, worker, orgs, children)
                yield _STATE["stack"]
        finally:
            runtime.stop()
            worker.stop()


def _found(stack: Stack, resource_type: str, **params: str) -> list[dict[str, Any]]:
    response = stack.stafett(NAV).get(f"/{resource_type}", params=params)
    entries = response.json().get("entry", []) if response.status_code == 200 else []
    return [entry["resource"] for entry in entries]


def test_an_advisors_follow_up_and_consent_arrive_in_stafett(stack: Stack) -> None:
    consent = stack.nav.post(
        "/_sim/samtykke",
        json={"fodselsnummer": OLA, "mottakere": [NAV, SCHOOL], "gyldigTilOgMed": "2027-06-30"},
    )
    assert consent.status_code == 201, consent.text
    follow_up = stack.nav.post(
        "/_sim/oppfolging",
        json={
            "fodselsnummer": OLA,
            "nivaa": "1",
            "veileder": {"navIdent": "Z990123", "navn": "Vera Veileder"},
        },
    )
    assert follow_up.status_code == 200, follow_up.text
    measure = stack.nav.post(
        "/_sim/tiltak",
        json={
            "fodselsnummer": OLA,
            "beskrivelse": "Arbeidstrening to dager i uken",
            "status": "GJENNOMFORES",
            "evalueringsdato": "2027-01-31",
        },
    )
    assert measure.status_code == 201, measure.text
    careplan = _wait(lambda: _found(stack, "CarePlan", identifier=f"{SID}oppfolging|{OLA}"))[0]
    assert careplan["status"] == "active"
    assert careplan["extension"][0]["valueCoding"]["code"] == "1"
    samtykke_id = consent.json()["post"]["samtykkeId"]
    recorded = _wait(lambda: _found(stack, "Consent", identifier=f"{SID}samtykke|{samtykke_id}"))
    assert recorded[0]["status"] == "active"
    assert recorded[0]["performer"] == [{"reference": stack.children["ola"]["patient"]}]
    assert recorded[0]["sourceAttachment"]["url"] == FORM_URL.format(id=samtykke_id)
    tiltaks_id = measure.json()["post"]["tiltaksId"]
    task = _wait(lambda: _found(stack, "Task", identifier=f"{SID}tiltak|{tiltaks_id}"))[0]
    assert task["basedOn"] == [{"reference": f"CarePlan/{careplan['id']}"}]
    assert task["restriction"]["period"]["end"] == "2027-01-31"
    assert stack.runtime.status("nav-inn").dead_lettered == 0


def _school_task(stack: Stack, description: str) -> None:
    emma = stack.children["emma"]
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "code": {
            "coding": [
                {"system": "https://stafett.no/fhir/CodeSystem/task-type", "code": "measure"}
            ]
        },
        "basedOn": [{"reference": emma["careplan"]}],
        "for": {"reference": emma["patient"]},
        "owner": {"reference": f"Organization/{stack.orgs[NAV]}"},
        "description": description,
        "restriction": {"period": {"start": "2026-12-01", "end": "2027-02-15"}},
    }
    before = stack.worker.counters.refused
    created = stack.stafett(SCHOOL).post("/Task", json=task, headers=fhir_headers())
    assert created.status_code == 201, created.text
    _STATE["refused_before"] = before


def _nav_measures(stack: Stack, text: str) -> list[dict[str, Any]]:
    return [m for m in stack.store()["tiltak"].values() if text in m["beskrivelse"]]


def test_a_school_measure_reaches_nav_only_after_the_guardian_adds_nav(stack: Stack) -> None:
    _school_task(stack, "Kartlegging av skolefravær med NAV")
    # the router decided: NAV (the task's owner) may not see Emma's log yet
    _wait(lambda: stack.worker.counters.refused > _STATE["refused_before"])
    time.sleep(1.0)
    assert not _nav_measures(stack, "Kartlegging av skolefravær")
    emma = stack.children["emma"]
    mother = stack.citizen(EMMA_MOTHER)
    added = mother.post(
        "/Consent",
        json=_consent(emma["patient"], emma["guardian"], (SCHOOL, NAV), form=False),
        headers=fhir_headers(),
    )
    assert added.status_code == 201, added.text
    _STATE["emma_consent"] = added.json()["id"]
    measure = _wait(lambda: _nav_measures(stack, "Kartlegging av skolefravær"))[0]
    assert measure["fodselsnummer"] == EMMA
    assert measure["status"] == "PLANLAGT"
    assert measure["evalueringsdato"] == "2027-02-15"
    consent = _wait(lambda: _samtykke(stack, _STATE["emma_consent"]))
    assert consent["trukket"] is False
    assert sorted(consent["mottakere"]) == sorted([SCHOOL, NAV])
    # NAV's source skipped Stafett's own events: nothing came back as a NAV measure
    assert not _found(stack, "Task", identifier=f"{SID}tiltak|{measure['tiltaksId']}")
    assert stack.runtime.status("nav-ut").dead_lettered == 0


def _samtykke(stack: Stack, samtykke_id: str) -> dict[str, Any] | None:
    found: list[dict[str, Any]] = [
        s for s in stack.store()["samtykker"].values() if s["samtykkeId"] == samtykke_id
    ]
    return found[0] if found else None


def test_a_withdrawal_sends_nav_a_withdrawn_consent_and_stops_events(stack: Stack) -> None:
    consent_id = _STATE["emma_consent"]
    _wait(lambda: _samtykke(stack, consent_id))
    mother = stack.citizen(EMMA_MOTHER)
    current = mother.get(f"/Consent/{consent_id}").json()
    withdrawn = mother.put(
        f"/Consent/{consent_id}", json={**current, "status": "inactive"}, headers=fhir_headers()
    )
    assert withdrawn.status_code == 200, withdrawn.text
    record = _wait(lambda: found if (found := _samtykke(stack, consent_id))["trukket"] else None)
    assert record["fodselsnummer"] == EMMA
    assert stack.worker.counters.revoked >= 1
    _school_task(stack, "Oppfølging etter tilbaketrekning")
    _wait(lambda: stack.worker.counters.refused > _STATE["refused_before"])
    time.sleep(1.0)
    assert not _nav_measures(stack, "etter tilbaketrekning")
    assert stack.runtime.status("nav-ut").dead_lettered == 0
