"""Correlation ids across the bus: a REST write's request id on the worker's log lines.

The API puts the request id (X-Request-Id, or a generated one) on the change event as its
correlation id; the router's and the ingest worker's JSON log lines carry it with the event
id, so one search follows a write from the API to each delivery.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from bus import Envelope, Record, topics
from service.metrics import render
from tests.consent_api.world import ORGS
from tests.ops.support import OpsStack, ops_stack
from tests.support import fhir_headers


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    with ops_stack(tmp_path_factory.mktemp("ops-data")) as running:
        yield running


def _routed(stack: OpsStack, correlation_id: str) -> tuple[dict[str, object], dict[str, object]]:
    logs = stack.logs
    delivered = logs.wait_for(
        logger="stafett.delivery",
        message="delivered",
        correlation_id=correlation_id,
        organization=ORGS["school"],
    )[0]
    refused = logs.wait_for(
        logger="stafett.delivery",
        message="refused",
        correlation_id=correlation_id,
        organization=ORGS["health"],
    )[0]
    return delivered, refused


def test_the_request_id_of_a_rest_write_is_on_the_routers_log_lines(stack: OpsStack) -> None:
    request_id = f"ops-test-{uuid.uuid4().hex[:12]}"
    response = stack.client("kindergarten").post(
        "/Task",
        json=stack.task("Språkgruppe"),
        headers=fhir_headers(**{"X-Request-Id": request_id}),
    )
    assert response.status_code == 201, response.text
    assert response.headers["X-Request-Id"] == request_id

    delivered, refused = _routed(stack, request_id)
    # the API's access line has the same id as its request id
    assert stack.logs.find(logger="stafett.access", request_id=request_id, status=201)
    # the router's lines name the change event and the level fits: refusals are audited news
    assert delivered["level"] == "debug"
    assert refused["level"] == "info"
    assert delivered["event_id"] == refused["event_id"]
    uuid.UUID(str(delivered["event_id"]))
    assert "No valid consent" in str(refused["reason"])
    # the kindergarten wrote it and does not get its own write back
    assert not stack.logs.find(correlation_id=request_id, organization=ORGS["kindergarten"])


def test_a_generated_request_id_is_the_correlation_id_too(stack: OpsStack) -> None:
    response = stack.client("kindergarten").post(
        "/Task", json=stack.task("Lesetrening"), headers=fhir_headers()
    )
    assert response.status_code == 201, response.text
    generated = response.headers["X-Request-Id"]
    assert generated
    _routed(stack, generated)


def test_ingest_lines_carry_the_inbound_envelopes_ids(stack: OpsStack) -> None:
    correlation_id = f"vendor-{uuid.uuid4().hex[:12]}"
    envelope = Envelope.new(
        event_type="resource.submitted",
        subject_key=stack.child.patient,
        sender=ORGS["kindergarten"],
        correlation_id=correlation_id,
        payload=stack.task("Fra fagsystemet"),
    )
    stack.bus.publish_many([Record.of(topics.INBOUND, envelope)])
    applied = stack.logs.wait_for(
        logger="stafett.ingest", message="applied", event_id=envelope.event_id
    )[0]
    assert applied["correlation_id"] == correlation_id
    assert applied["level"] == "info"
    # the change the message made keeps the connector's correlation id through the router
    _routed(stack, correlation_id)

    # the same message again is recognised
    stack.bus.publish_many([Record.of(topics.INBOUND, envelope)])
    duplicate = stack.logs.wait_for(
        logger="stafett.ingest", message="duplicate", event_id=envelope.event_id
    )[0]
    assert duplicate["correlation_id"] == correlation_id


def test_a_rejected_message_is_a_warning_with_issue_codes_only(stack: OpsStack) -> None:
    invalid = Envelope.new(
        event_type="resource.submitted",
        subject_key=stack.child.patient,
        sender=ORGS["kindergarten"],
        correlation_id="vendor-rejected",
        payload={
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "not-a-fnr"}],
            "birthDate": "not a date",
        },
    )
    stack.bus.publish_many([Record.of(topics.INBOUND, invalid)])
    rejected = stack.logs.wait_for(
        logger="stafett.ingest", message="rejected", event_id=invalid.event_id
    )[0]
    assert rejected["level"] == "warning"
    assert rejected["correlation_id"] == "vendor-rejected"
    assert rejected["issues"]
    assert "not-a-fnr" not in str(rejected)


def test_the_worker_times_its_batches(stack: OpsStack) -> None:
    stack.logs.wait_for(logger="stafett.ingest", message="applied")
    text = render(lambda: 0).decode()
    for loop in ("router", "ingest"):
        line = next(
            line
            for line in text.splitlines()
            if line.startswith(f'stafett_worker_batch_duration_seconds_count{{loop="{loop}"}}')
        )
        assert float(line.split()[-1]) >= 1
    assert "stafett_database_up 1.0" in text


def test_the_database_gauge_says_when_the_database_does_not_answer() -> None:
    def down() -> int:
        raise ConnectionError("no database")

    text = render(down).decode()
    assert "stafett_database_up 0.0" in text
    assert "stafett_outbox_backlog " not in text


def test_a_new_permission_is_logged_and_counted(stack: OpsStack) -> None:
    granted = stack.logs.wait_for(
        logger="stafett.delivery", message="granted", organization=ORGS["school"]
    )[0]
    assert granted["level"] == "info"
    assert granted["event_id"]
    assert stack.worker.counters.granted >= 1
    assert 'stafett_worker_events_total{event="granted"}' in render().decode()
