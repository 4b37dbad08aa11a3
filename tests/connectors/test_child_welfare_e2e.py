"""The child-welfare connector end to end: Fiks simulator ⇄ Kafka ⇄ Stafett on PostgreSQL.

The family is known in Stafett (the kindergarten recorded the child, the mother and her signed
consent). A caseworker records a consent and the child's log in the agency's case system; they
travel as separate signed, encrypted messages and open the agency's log in Stafett. A measure
the kindergarten writes in Stafett reaches the agency's store. With the message service
dropping and duplicating 20 % of all messages (receipts included), twenty measures each way
still end up applied exactly once. The family's withdrawal in Stafett reaches the agency as a
withdrawn consent.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bus.kafka import KafkaBus
from connectors import ConnectorConfig, ConnectorRuntime, FileCheckpointStore
from connectors.registry import factories
from service.worker import Worker
from simulators.child_welfare import Settings, create_app
from simulators.common.server import running
from tests.conftest import new_postgres_database
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, LiveServer, fhir_headers, live_server

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.e2e]

NORA = "15832151200"
MOTHER = "04868941214"
CHILD_WELFARE = "974760673"
KINDERGARTEN = "912837467"
OPERATOR = "936451284"
SID = f"https://stafett.no/fhir/sid/{OPERATOR}/barnevern/"
FORM_URL = "https://fagsystem.barnevern.example/samtykker/{id}/skjema.pdf"
MEASURES = 20


@dataclass
class Stack:
    server: LiveServer
    vendor: httpx.Client
    runtime: ConnectorRuntime
    worker: Worker
    orgs: dict[str, str]

    def stafett(self, org: str) -> httpx.Client:
        return self.server.client(self.server.system_token(org=org))

    def agency(self) -> dict[str, Any]:
        data: dict[str, Any] = self.vendor.get("/_sim/sak").json()
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
    service = stack.vendor.get("/_sim/store").json().get("statistikk")
    return f"connectors: {statuses}; worker: {stack.worker.counters}; fiks: {service}"


def _register_family(server: LiveServer) -> dict[str, Any]:
    """The kindergarten registers Nora, her mother and the mother's signed consent."""
    patient = "urn:uuid:6c1f0d7e-1b1a-4c39-9a57-3b5bfa0e0001"
    mother = "urn:uuid:6c1f0d7e-1b1a-4c39-9a57-3b5bfa0e0002"
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
        "patient": {"reference": patient},
        "dateTime": "2026-08-31T10:00:00+02:00",
        "performer": [{"reference": mother}],
        "sourceAttachment": {
            "contentType": "application/pdf",
            "data": base64.b64encode(b"%PDF-1.4 signert samtykke").decode(),
        },
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": {"start": "2026-08-31", "end": "2027-12-31"},
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
                for org in (KINDERGARTEN, CHILD_WELFARE)
            ],
        },
    }
    entries = [
        {
            "fullUrl": patient,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": FNR_SYSTEM, "value": NORA}],
                "birthDate": "2021-03-15",
                "name": [{"family": "Eksempelsen", "given": ["Nora"]}],
            },
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": mother,
            "resource": {
                "resourceType": "RelatedPerson",
                "patient": {"reference": patient},
                "identifier": [{"system": FNR_SYSTEM, "value": MOTHER}],
                "relationship": [
                    {
                        "coding": [
                            {
                                "system": "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility",
                                "code": "felles",
                            }
                        ]
                    }
                ],
            },
            "request": {"method": "POST", "url": "RelatedPerson"},
        },
        {"resource": consent, "request": {"method": "POST", "url": "Consent"}},
    ]
    response = server.client(server.system_token(org=KINDERGARTEN)).post(
        "",
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers=fhir_headers(),
    )
    assert response.status_code == 200, response.text
    ids = [e["response"]["location"].split("/")[1] for e in response.json()["entry"]]
    return {"patient": ids[0], "consent": ids[2]}


@pytest.fixture(scope="module")
def stack(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    database = new_postgres_database(postgres_admin_url)
    keys: Path = tmp_path_factory.mktemp("keys")
    vendor_app = create_app(
        Settings(agency_interval_s=0.1, resend_interval_s=1.0, lease_s=3.0, fault_seed=7)
    )
    with (
        running(vendor_app) as vendor_url,
        live_server(database_url=database, data_dir=tmp_path_factory.mktemp("data")) as server,
    ):
        directory = server.client(server.system_token(org=KINDERGARTEN))
        orgs: dict[str, str] = {}
        for number, name in (
            (CHILD_WELFARE, "Barneverntjenesten"),
            (KINDERGARTEN, "Solsikken barnehage"),
            (OPERATOR, "Kommunen"),
        ):
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
        family = _register_family(server)
        bus = KafkaBus(
            kafka_bootstrap,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=20000,
            fetch_max_wait_ms=20,
        )
        worker = Worker(server.settings, bus=bus, components=("relay", "router", "ingest"))
        worker.start()
        common = {
            "system": "child_welfare",
            "organization": CHILD_WELFARE,
            "operator": OPERATOR,
            "source_system": "barnevern",
            "poll_interval_s": 0.2,
            "retry": {"max_attempts": 4, "backoff_s": 0.1, "max_backoff_s": 1.0},
        }
        fiks = {"service_url": vendor_url, "register_account": True}
        source = {
            **common,
            "name": "barnevern-inn",
            "kind": "source",
            "settings": {
                **fiks,
                "account": "stafett",
                "token": "stafett-inn-token-0123456789",
                "private_key_path": str(keys / "stafett.pem"),
                "consent_form_url": FORM_URL,
            },
        }
        sink = {
            **common,
            "name": "barnevern-ut",
            "kind": "sink",
            "settings": {
                **fiks,
                "account": "stafett-ut",
                "token": "stafett-ut-token-0123456789",
                "private_key_path": str(keys / "stafett-ut.pem"),
                "agency_account": "barnevern",
                "resend_interval_s": 1.0,
                "receipt_timeout_s": 20,
                "state_dir": str(tmp_path_factory.mktemp("state")),
                "stafett_url": server.fhir,
                "stafett_token": server.system_token(org=CHILD_WELFARE, scopes="system/*.rs"),
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
            with httpx.Client(base_url=vendor_url, timeout=10) as vendor:
                _STATE["stack"] = Stack(server, vendor, runtime, worker, orgs)
                _STATE["family"] = family
                yield _STATE["stack"]
        finally:
            runtime.stop()
            worker.stop()


def _found(stack: Stack, resource_type: str, identifier: str) -> list[dict[str, Any]]:
    response = stack.stafett(CHILD_WELFARE).get(
        f"/{resource_type}", params={"identifier": identifier}
    )
    entries = response.json().get("entry", []) if response.status_code == 200 else []
    return [entry["resource"] for entry in entries]


def test_a_caseworkers_log_and_consent_open_the_log_in_stafett(stack: Stack) -> None:
    consent = stack.vendor.post(
        "/_sim/sak/samtykke",
        json={
            "fnr": NORA,
            "foresatte": [MOTHER],
            "gyldigTil": "2027-09-30",
            "mottakere": [CHILD_WELFARE, KINDERGARTEN],
        },
    )
    assert consent.status_code == 201, consent.text
    log = stack.vendor.post(
        "/_sim/sak/logg",
        json={"fnr": NORA, "niva": "2", "saksbehandler": {"id": "BV-204", "navn": "Siri Sand"}},
    )
    assert log.status_code == 200, log.text
    careplan = _wait(lambda: _found(stack, "CarePlan", f"{SID}logg|{NORA}"))[0]
    assert careplan["status"] == "active"
    assert careplan["extension"][0]["valueCoding"]["code"] == "2"
    assert careplan["subject"]["reference"] == f"Patient/{_STATE['family']['patient']}"
    samtykke_id = consent.json()["samtykkeId"]
    recorded = _found(stack, "Consent", f"{SID}samtykke|{samtykke_id}")
    assert len(recorded) == 1
    assert recorded[0]["status"] == "active"
    assert recorded[0]["sourceAttachment"]["url"] == FORM_URL.format(id=samtykke_id)
    # the agency got a mottatt receipt for both messages
    outbox = _wait(
        lambda: (
            [e for e in stack.agency()["utboks"].values() if e["status"] == "mottatt"]
            if len([e for e in stack.agency()["utboks"].values() if e["status"] == "mottatt"]) == 2
            else None
        )
    )
    assert {e["type"] for e in outbox} == {"logg", "samtykke"}
    assert stack.runtime.status("barnevern-inn").dead_lettered == 0


def _careplan_id(stack: Stack) -> str:
    return str(_wait(lambda: _found(stack, "CarePlan", f"{SID}logg|{NORA}"))[0]["id"])


def _stafett_measure(stack: Stack, description: str) -> None:
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "code": {
            "coding": [
                {"system": "https://stafett.no/fhir/CodeSystem/task-type", "code": "measure"}
            ]
        },
        "basedOn": [{"reference": f"CarePlan/{_careplan_id(stack)}"}],
        "for": {"reference": f"Patient/{_STATE['family']['patient']}"},
        "owner": {"reference": f"Organization/{stack.orgs[CHILD_WELFARE]}"},
        "description": description,
        "restriction": {"period": {"start": "2026-11-23", "end": "2027-01-15"}},
    }
    created = stack.stafett(KINDERGARTEN).post("/Task", json=task, headers=fhir_headers())
    assert created.status_code == 201, created.text


def _agency_measures(stack: Stack, prefix: str) -> list[dict[str, Any]]:
    return [m for m in stack.agency()["tiltak"].values() if m["beskrivelse"].startswith(prefix)]


def test_a_measure_written_in_stafett_reaches_the_agency(stack: Stack) -> None:
    _stafett_measure(stack, "Samtale med pedagogisk leder hver fjortende dag")
    measure = _wait(lambda: _agency_measures(stack, "Samtale med pedagogisk leder"))[0]
    assert measure["fnr"] == NORA
    assert measure["status"] == "planlagt"
    assert measure["evalueres"] == "2027-01-15"
    assert measure["endretAv"] == "stafett-ut"
    assert stack.runtime.status("barnevern-ut").dead_lettered == 0


def _vendor_tasks(stack: Stack) -> dict[str, list[dict[str, Any]]]:
    patient = _STATE["family"]["patient"]
    found = stack.stafett(CHILD_WELFARE).get("/Task", params={"patient": patient, "_count": "500"})
    by_identifier: dict[str, list[dict[str, Any]]] = {}
    for entry in found.json().get("entry", []):
        for identifier in entry["resource"].get("identifier", []):
            if identifier["system"] == f"{SID}tiltak":
                by_identifier.setdefault(identifier["value"], []).append(entry["resource"])
    return by_identifier


def test_a_lossy_message_service_still_applies_every_message_exactly_once(
    stack: Stack,
) -> None:
    _careplan_id(stack)
    faults = stack.vendor.post(
        "/_sim/faults", json={"drop_rate": 0.2, "duplicate_rate": 0.2, "seed": 11}
    )
    assert faults.status_code == 200
    before = stack.vendor.get("/_sim/store").json()["statistikk"]
    deduplicated = stack.worker.counters.duplicates
    try:
        sent = []
        for number in range(MEASURES):
            created = stack.vendor.post(
                "/_sim/sak/tiltak",
                json={
                    "fnr": NORA,
                    "beskrivelse": f"Barnevernstiltak {number}",
                    "status": "iverksatt",
                    "oppstart": "2026-09-07",
                    "evalueres": "2026-11-02",
                },
            )
            assert created.status_code == 201, created.text
            sent.append(created.json()["tiltakId"])
            _stafett_measure(stack, f"Barnehagetiltak {number}")
            if number == MEASURES // 2:
                # a fresh source task: what it had read but not answered comes back by lease
                stack.runtime.restart("barnevern-inn")
        in_stafett = _wait(
            lambda: found if set(sent) <= set(found := _vendor_tasks(stack)) else None, 60
        )
        in_agency = _wait(
            lambda: (
                found
                if len(found := _agency_measures(stack, "Barnehagetiltak ")) >= MEASURES
                else None
            ),
            60,
        )
        after = stack.vendor.get("/_sim/store").json()["statistikk"]
    finally:
        stack.vendor.post("/_sim/faults", json={"drop_rate": 0.0, "duplicate_rate": 0.0})
    # the faults did happen, both ways, and repeated messages reached Stafett and the agency
    repeats = stack.worker.counters.duplicates - deduplicated
    agency = stack.agency()["statistikk"]
    print(
        f"\nfiks: dropped {after['dropped'] - before['dropped']}, duplicated "
        f"{after['duplicated'] - before['duplicated']} of {after['accepted'] - before['accepted']};"
        f" Stafett dropped {repeats} repeated event ids; agency: {agency}"
    )
    assert after["dropped"] > before["dropped"]
    assert after["duplicated"] > before["duplicated"]
    assert repeats > 0
    assert agency["duplikater"] > 0
    # every caseworker measure is one Task, written once (version 1: no repeat was applied)
    assert all(len(in_stafett[tiltak_id]) == 1 for tiltak_id in sent)
    assert {in_stafett[t][0]["meta"]["versionId"] for t in sent} == {"1"}
    assert sorted(
        t[0]["description"]
        for t in in_stafett.values()
        if t[0]["description"].startswith("Barnevernstiltak")
    ) == sorted(f"Barnevernstiltak {n}" for n in range(MEASURES))
    # every Stafett measure is one record in the agency, applied once
    assert sorted(m["beskrivelse"] for m in in_agency) == sorted(
        f"Barnehagetiltak {n}" for n in range(MEASURES)
    )
    assert {m["versjon"] for m in in_agency} == {1}
    assert stack.runtime.status("barnevern-inn").dead_lettered == 0
    assert stack.runtime.status("barnevern-ut").dead_lettered == 0


def test_the_familys_withdrawal_reaches_the_agency_as_a_withdrawn_consent(stack: Stack) -> None:
    _careplan_id(stack)
    agency_consent = next(iter(stack.agency()["samtykker"].values()))
    mother = stack.server.client(
        stack.server.issuer.issue_citizen(pid=MOTHER, audience=stack.server.settings.audience)
    )
    current = _found(stack, "Consent", f"{SID}samtykke|{agency_consent['samtykkeId']}")[0]
    withdrawn = mother.put(
        f"/Consent/{current['id']}", json={**current, "status": "inactive"}, headers=fhir_headers()
    )
    assert withdrawn.status_code == 200, withdrawn.text

    def withdrawn_in_agency(samtykke_id: str) -> dict[str, Any] | None:
        records = stack.agency()["samtykker"].values()
        found = [r for r in records if r["samtykkeId"] == samtykke_id and r["trukket"]]
        return found[0] if found else None

    record = _wait(lambda: withdrawn_in_agency(agency_consent["samtykkeId"]))
    assert record["id"] == agency_consent["id"]  # the agency's own consent, now withdrawn
    assert record["foresatte"] == [MOTHER]
    assert record["endretAv"] == "stafett-ut"
    # the family's own consent named the agency too: withdrawing it revokes the agency's access
    revoked = stack.worker.counters.revoked
    family = _STATE["family"]["consent"]
    current = mother.get(f"/Consent/{family}").json()
    withdrawn = mother.put(
        f"/Consent/{family}", json={**current, "status": "inactive"}, headers=fhir_headers()
    )
    assert withdrawn.status_code == 200, withdrawn.text
    _wait(lambda: stack.worker.counters.revoked > revoked)
    assert _wait(lambda: withdrawn_in_agency(family))["mottakere"] == [KINDERGARTEN, CHILD_WELFARE]
    assert stack.runtime.status("barnevern-ut").dead_lettered == 0
