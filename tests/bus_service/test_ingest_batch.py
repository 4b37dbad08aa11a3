"""The ingest worker's batches: one transaction when every message applies, exactly as one by one.

`Ingestor.apply_many` applies a batch of inbound messages in one transaction, storing their
audit records, outbox rows and applied-markers with one statement each. These tests hold it
to the single-message path: same outcomes, same rows written (resources, outbox events,
AuditEvents, markers), duplicates and refusals handled per message, and a conditional match
cached in the batch forgotten when the batch changes that type.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select

from bus import Envelope, Message, Record, topics
from service.api.app import build_services
from service.api.deps import Services
from service.ingest import Ingestor, IngestOutcome
from service.storage.schema import inbound_applied, outbox, resources
from tests.consent_api.world import ORGS, Child, open_log, permit
from tests.support import ORGNR_SYSTEM, LiveServer, fhir_headers, live_server, synthetic_fnr


@dataclass
class World:
    server: LiveServer
    services: Services
    ingestor: Ingestor
    child: Child
    org_ids: dict[str, str]


@pytest.fixture(scope="module")
def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with live_server(database_url=database_url, data_dir=tmp_path_factory.mktemp("data")) as server:
        kindergarten = server.client(server.system_token(org=ORGS["kindergarten"]))
        org_ids = {}
        for name, number in ORGS.items():
            created = kindergarten.post(
                "/Organization",
                json={
                    "resourceType": "Organization",
                    "identifier": [{"system": ORGNR_SYSTEM, "value": number}],
                    "name": name,
                },
                headers=fhir_headers(),
            )
            assert created.status_code == 201, created.text
            org_ids[name] = created.json()["id"]
        child = Child("Kari", synthetic_fnr())
        opened = open_log(
            kindergarten,
            child,
            birth_date="2021-05-01",
            consent_provision=permit(org_ids, "kindergarten"),
            owner=org_ids["kindergarten"],
        )
        assert opened.status_code == 200, opened.text
        services = build_services(server.settings)
        ingestor = Ingestor(
            config=services.repository,
            scopes=server.settings.ingest_scopes,
            fhir_base=server.settings.fhir_base,
        )
        yield World(server, services, ingestor, child, org_ids)


def _message(
    world: World, payload: dict[str, Any], *, sender: str = "kindergarten", event_id: str = ""
) -> Message:
    envelope = Envelope.new(
        event_type="resource.submitted",
        subject_key=world.child.patient,
        sender=ORGS[sender],
        payload=payload,
        event_id=event_id or None,
    )
    record = Record.of(topics.INBOUND, envelope)
    return Message(topics.INBOUND, 0, 0, record.key, record.value)


def _task(world: World, text: str, owner: str | None = None) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "plan",
        "description": text,
        "for": {"reference": f"Patient/{world.child.patient}"},
        "owner": {"reference": owner or f"Organization/{world.org_ids['kindergarten']}"},
    }


def _bundle(*resources_: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": r, "request": {"method": "POST", "url": r["resourceType"]}}
            for r in resources_
        ],
    }


def _counts(world: World) -> dict[str, int]:
    with world.services.database.read() as conn:

        def rows(table: Any, *where: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())

        return {
            "tasks": rows(resources, resources.c.resource_type == "Task"),
            "audit": rows(resources, resources.c.resource_type == "AuditEvent"),
            "outbox": rows(outbox),
            "applied": rows(inbound_applied),
        }


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in before}


def test_a_batch_writes_exactly_what_one_by_one_writes(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    one_by_one = [_message(world, _bundle(_task(world, f"enkel {tag} {n}"))) for n in range(4)]
    batched = [_message(world, _bundle(_task(world, f"samlet {tag} {n}"))) for n in range(4)]
    before = _counts(world)
    single = [world.ingestor.apply(m) for m in one_by_one]
    middle = _counts(world)
    together = world.ingestor.apply_many(batched)
    after = _counts(world)
    assert [r.outcome for r in single] == [IngestOutcome.APPLIED] * 4
    assert [r.outcome for r in together] == [IngestOutcome.APPLIED] * 4
    # the same Tasks, change events, AuditEvents and applied-markers, row for row
    assert _delta(before, middle) == _delta(middle, after)
    assert _delta(middle, after)["tasks"] == 4
    assert _delta(middle, after)["applied"] == 4
    assert _delta(middle, after)["outbox"] == 4
    assert _delta(middle, after)["audit"] >= 4


def test_duplicates_in_and_across_batches_are_applied_once(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    first = _message(world, _bundle(_task(world, f"dublett {tag}")))
    again = _message(world, _bundle(_task(world, f"dublett {tag}")), event_id=_event_id(first))
    other = _message(world, _bundle(_task(world, f"annen {tag}")))
    before = _counts(world)
    results = world.ingestor.apply_many([first, again, other])
    assert [r.outcome for r in results] == [
        IngestOutcome.APPLIED,
        IngestOutcome.DUPLICATE,
        IngestOutcome.APPLIED,
    ]
    # a redelivery of the whole batch is all duplicates
    redelivered = world.ingestor.apply_many([first, other])
    assert [r.outcome for r in redelivered] == [IngestOutcome.DUPLICATE] * 2
    delta = _delta(before, _counts(world))
    assert delta["tasks"] == 2
    assert delta["applied"] == 2


def test_a_refused_message_is_rejected_alone_and_the_rest_applied(world: World) -> None:
    tag = uuid.uuid4().hex[:6]
    messages = [
        _message(world, _bundle(_task(world, f"før {tag}"))),
        # NAV has no consent to write in this log
        _message(world, _bundle(_task(world, f"nav {tag}")), sender="nav"),
        _message(world, {**_task(world, f"ugyldig {tag}"), "status": "dragon"}),
        _message(world, _bundle(_task(world, f"etter {tag}"))),
    ]
    before = _counts(world)
    results = world.ingestor.apply_many(messages)
    assert [r.outcome for r in results] == [
        IngestOutcome.APPLIED,
        IngestOutcome.REJECTED,
        IngestOutcome.REJECTED,
        IngestOutcome.APPLIED,
    ]
    refused, invalid = results[1].operation_outcome, results[2].operation_outcome
    assert refused is not None
    assert refused["issue"][0]["code"] == "forbidden"
    assert invalid is not None
    assert any("status" in str(i) for i in invalid["issue"])
    delta = _delta(before, _counts(world))
    # nothing of the rolled-back first attempt is left: two Tasks, two markers, two events
    assert delta["tasks"] == 2
    assert delta["applied"] == 2
    assert delta["outbox"] == 2


def test_a_conditional_match_cached_in_a_batch_is_forgotten_when_the_batch_changes_it(
    world: World,
) -> None:
    tag = uuid.uuid4().hex[:6]
    orgnr_like = f"bench-{tag}"  # a second identifier system keeps the real org.nr unique
    system = "urn:stafett:test-unit"
    unit = {
        "resourceType": "Organization",
        "identifier": [{"system": system, "value": orgnr_like}],
        "name": f"Avdeling {tag}",
    }
    kindergarten = world.server.client(world.server.system_token(org=ORGS["kindergarten"]))
    assert kindergarten.post("/Organization", json=unit, headers=fhir_headers()).status_code == 201
    by_identifier = f"Organization?identifier={system}|{orgnr_like}"
    messages = [
        # resolves (and caches) the one unit with this identifier
        _message(world, _bundle(_task(world, f"første {tag}", owner=by_identifier))),
        # a second unit with the same identifier: the criteria now match two
        _message(world, {**unit, "name": f"Avdeling {tag} (kopi)"}),
        # must see both and refuse the ambiguous reference, as it would one by one
        _message(world, _bundle(_task(world, f"andre {tag}", owner=by_identifier))),
    ]
    results = world.ingestor.apply_many(messages)
    assert [r.outcome for r in results] == [
        IngestOutcome.APPLIED,
        IngestOutcome.APPLIED,
        IngestOutcome.REJECTED,
    ]
    outcome = results[2].operation_outcome
    assert outcome is not None
    assert "more than one" in str(outcome)


def _event_id(message: Message) -> str:
    return message.envelope().event_id
