"""A real FHIR client (fhirpy) drives Stafett over HTTP, on both databases."""

from __future__ import annotations

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, LiveServer, synthetic_fnr, synthetic_orgnr

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def client(server: LiveServer) -> SyncFHIRClient:
    token = server.practitioner_token(org=synthetic_orgnr())
    return SyncFHIRClient(server.fhir, authorization=f"Bearer {token}")


def test_fhirpy_log_lifecycle(client: SyncFHIRClient) -> None:
    orgnr = synthetic_orgnr()
    fnr = synthetic_fnr()
    kindergarten = client.resource(
        "Organization",
        identifier=[{"system": ORGNR_SYSTEM, "value": orgnr}],
        name="Solsikken barnehage",
    )
    kindergarten.save()
    assert kindergarten.id
    child = client.resource(
        "Patient",
        identifier=[{"system": FNR_SYSTEM, "value": fnr}],
        name=[{"family": "Nordmann", "given": ["Nora"]}],
        birthDate="2021-03-15",
    )
    child.save()
    plan = client.resource(
        "CarePlan",
        status="active",
        intent="plan",
        subject=child.to_reference(),
        description="Uro og konsentrasjonsvansker i samlingsstund",
    )
    plan.save()
    for index, start in enumerate(("2026-09-01", "2026-10-01", "2026-11-01")):
        client.resource(
            "Task",
            status="in-progress",
            intent="plan",
            description=f"Tiltak {index}",
            basedOn=[plan.to_reference()],
            owner=kindergarten.to_reference(),
            executionPeriod={"start": start},
            **{"for": child.to_reference()},
        ).save()

    # the chained search: a child's measures by fødselsnummer
    tasks = (
        client.resources("Task")
        .search(**{"subject.identifier": f"{FNR_SYSTEM}|{fnr}"})
        .sort("period")
        .fetch_all()
    )
    assert [task["description"] for task in tasks] == ["Tiltak 0", "Tiltak 1", "Tiltak 2"]
    assert client.resources("Task").search(based_on=plan.reference).count() == 3
    found = (
        client.resources("CarePlan")
        .search(subject=child.reference)
        .include("CarePlan", "subject")
        .fetch_raw()
    )
    modes = sorted(entry["search"]["mode"] for entry in found["entry"])
    assert modes == ["include", "match"]

    # paging through fhirpy's own next-link handling
    all_tasks = client.resources("Task").search(patient=child.id).limit(1).fetch_all()
    assert len(all_tasks) == 3

    # update with a version check, then a stale update is refused with 412
    plan["status"] = "on-hold"
    plan.save()
    assert plan["meta"]["versionId"] == "2"
    stale = httpx.put(
        f"{client.url}/CarePlan/{plan.id}",
        json={**plan.serialize(), "status": "active"},
        headers={
            "Authorization": client.authorization,
            "Content-Type": "application/fhir+json",
            "If-Match": 'W/"1"',
        },
        timeout=10,
    )
    assert stale.status_code == 412

    # history
    history = client.resource("CarePlan", id=plan.id).execute("_history", "get")
    assert history["total"] == 2
    assert [e["resource"]["status"] for e in history["entry"]] == ["on-hold", "active"]

    # delete, then read answers 410 which fhirpy reports as an error
    plan.delete()
    with pytest.raises((ResourceNotFound, OperationOutcome)):
        client.resources("CarePlan").search(_id=plan.id).get()
