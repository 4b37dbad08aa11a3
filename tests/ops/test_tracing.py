"""OpenTelemetry tracing with the SDK's in-memory exporter (skipped without the otel extra).

A FHIR request's span is named after its interaction and continues the caller's trace; an
inbound message's span continues the sender's trace from its Kafka `traceparent` header; the
router's span carries the write's correlation id and its deliveries carry its trace context.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from opentelemetry.trace import SpanKind

from bus import Envelope, Message, Record, topics
from service import tracing
from service.config import Settings
from tests.consent_api.world import ORGS
from tests.ops.support import OpsStack, ops_stack
from tests.support import fhir_headers

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OpsStack, Any]]:
    pytest.importorskip(
        "opentelemetry.sdk.trace", reason="the otel extra is not installed: pip install '.[otel]'"
    )
    # only with the extra installed (the opentelemetry API alone comes with FastAPI)
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: PLC0415
        InMemorySpanExporter,
    )

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert not tracing.enabled()
    assert tracing.configure(Settings(), service_name="stafett-test", tracer_provider=provider)
    try:
        with ops_stack(tmp_path_factory.mktemp("traced-data")) as stack:
            yield stack, exporter
    finally:
        tracing.shutdown()


def _span(exporter: Any, check: Callable[[Any], bool], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [span for span in exporter.get_finished_spans() if check(span)]
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError("no such span")


def test_a_fhir_request_is_a_server_span_named_after_its_interaction(
    traced: tuple[OpsStack, Any],
) -> None:
    stack, exporter = traced
    request_id = f"traced-{uuid.uuid4().hex[:12]}"
    response = stack.client("kindergarten").post(
        "/Task",
        json=stack.task("Sporet"),
        headers=fhir_headers(**{"X-Request-Id": request_id, "traceparent": TRACEPARENT}),
    )
    assert response.status_code == 201, response.text
    span = _span(exporter, lambda s: s.attributes.get("stafett.request_id") == request_id)
    assert span.name == "create Task"
    assert span.kind is SpanKind.SERVER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["http.response.status_code"] == 201
    assert span.attributes["fhir.interaction"] == "create"
    assert span.attributes["url.path"] == "/fhir/Task"
    # the access log line names the trace, so logs and traces join
    access = stack.logs.wait_for(logger="stafett.access", request_id=request_id)[0]
    assert access["trace_id"] == TRACE_ID

    # without a traceparent a request starts its own trace
    missing = stack.client("kindergarten").get("/Task/does-not-exist")
    assert missing.status_code == 404
    read = _span(
        exporter,
        lambda s: s.name == "read Task" and s.attributes.get("http.response.status_code") == 404,
    )
    assert read.parent is None
    metadata = stack.server.client(None).get("/metadata")
    assert metadata.status_code == 200
    _span(exporter, lambda s: s.name == "capabilities")


def test_an_inbound_message_continues_the_senders_trace(traced: tuple[OpsStack, Any]) -> None:
    stack, exporter = traced
    envelope = Envelope.new(
        event_type="resource.submitted",
        subject_key=stack.child.patient,
        sender=ORGS["kindergarten"],
        correlation_id="traced-vendor",
        payload=stack.task("Fra fagsystemet, sporet"),
    )
    stack.bus.publish_many(
        [Record.of(topics.INBOUND, envelope, [("traceparent", TRACEPARENT.encode())])]
    )
    span = _span(exporter, lambda s: s.attributes.get("messaging.message.id") == envelope.event_id)
    assert span.name == "ingest stafett.inbound"
    assert span.kind is SpanKind.CONSUMER
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == PARENT_ID
    assert span.attributes["stafett.outcome"] == "applied"
    assert span.attributes["stafett.correlation_id"] == "traced-vendor"
    assert span.attributes["messaging.destination.name"] == topics.INBOUND
    applied = stack.logs.wait_for(logger="stafett.ingest", event_id=envelope.event_id)[0]
    assert applied["trace_id"] == TRACE_ID


def test_deliveries_carry_the_route_spans_trace_context(traced: tuple[OpsStack, Any]) -> None:
    stack, exporter = traced
    request_id = f"traced-route-{uuid.uuid4().hex[:12]}"
    response = stack.client("kindergarten").post(
        "/Task", json=stack.task("Levert"), headers=fhir_headers(**{"X-Request-Id": request_id})
    )
    assert response.status_code == 201, response.text
    route = _span(
        exporter,
        lambda s: (
            s.name == "route stafett.changes"
            and s.attributes.get("stafett.correlation_id") == request_id
        ),
    )
    assert route.attributes["fhir.resource_type"] == "Task"
    delivery = _delivery(stack, request_id)
    traceparent = delivery.header("traceparent")
    assert traceparent is not None
    _version, trace_id, span_id, _flags = traceparent.decode().split("-")
    assert trace_id == format(route.context.trace_id, "032x")
    assert span_id == format(route.context.span_id, "016x")


def _delivery(stack: OpsStack, correlation_id: str) -> Message:
    topic = topics.outbound(ORGS["school"])
    deadline = time.monotonic() + 30
    with stack.bus.consumer([topic], f"test-{uuid.uuid4().hex[:8]}") as consumer:
        while time.monotonic() < deadline:
            for message in consumer.poll(0.2):
                if message.envelope().correlation_id == correlation_id:
                    return message
    raise AssertionError("no delivery")
