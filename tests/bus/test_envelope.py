"""Envelope serialisation, and an error naming the field for every kind of malformed input."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from bus import SCHEMA_VERSION, Envelope, EnvelopeError, EventType

EVENT_ID = "0b6f7c1e-8a7f-4f3c-9a55-3c2f1d3e4b5a"


def _valid() -> dict[str, object]:
    return {
        "schema_version": 1,
        "event_id": EVENT_ID,
        "event_type": "resource.changed",
        "occurred_at": "2025-03-01T12:00:00.250000Z",
        "subject_key": "patient-1",
        "resource_type": "Task",
        "resource_id": "task-1",
        "version_id": "3",
        "correlation_id": None,
        "sender": "974760673",
        "payload": {"resourceType": "Task", "id": "task-1"},
    }


def test_new_fills_id_and_time_and_round_trips() -> None:
    before = datetime.now(UTC)
    envelope = Envelope.new(
        event_type=EventType.CONSENT_REVOKED,
        subject_key="patient-1",
        payload={"resourceType": "Consent", "status": "inactive"},
    )
    assert uuid.UUID(envelope.event_id).version == 4
    assert before <= envelope.occurred_at <= datetime.now(UTC)
    assert envelope.schema_version == SCHEMA_VERSION
    assert Envelope.from_json(envelope.to_json()) == envelope


def test_to_json_writes_every_field_with_a_z_timestamp() -> None:
    envelope = Envelope.from_json(orjson.dumps(_valid()))
    assert orjson.loads(envelope.to_json()) == _valid()


def test_other_offsets_are_kept_as_utc() -> None:
    oslo_summer = timezone(timedelta(hours=2))
    envelope = Envelope(
        event_id=EVENT_ID,
        event_type="evaluation.due",
        occurred_at=datetime(2025, 6, 1, 14, 0, tzinfo=oslo_summer),
        subject_key="patient-1",
    )
    assert envelope.occurred_at == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert envelope.occurred_at.tzinfo is UTC
    assert b'"occurred_at":"2025-06-01T12:00:00Z"' in envelope.to_json()
    parsed = Envelope.from_json(
        orjson.dumps({**_valid(), "occurred_at": "2025-06-01T14:00:00+02:00"})
    )
    assert parsed.occurred_at == envelope.occurred_at


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(EnvelopeError, match="occurred_at"):
        Envelope(
            event_id=EVENT_ID,
            event_type="delivery",
            occurred_at=datetime(2025, 6, 1, 12, 0),  # naive: the case under test
            subject_key="patient-1",
        )


def test_optional_fields_and_version_may_be_left_out_and_unknown_fields_are_ignored() -> None:
    data = {k: v for k, v in _valid().items() if k in ("event_id", "event_type", "occurred_at")}
    envelope = Envelope.from_json(orjson.dumps({**data, "subject_key": "p", "future": 1}))
    assert envelope.resource_type is None
    assert envelope.payload is None
    assert envelope.schema_version == 1


def test_envelopes_are_hashable_despite_the_payload() -> None:
    envelope = Envelope.from_json(orjson.dumps(_valid()))
    assert len({envelope, Envelope.from_json(envelope.to_json())}) == 1


def _without(name: str) -> bytes:
    return orjson.dumps({k: v for k, v in _valid().items() if k != name})


def _with(name: str, value: object) -> bytes:
    return orjson.dumps({**_valid(), name: value})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object, got array"),
        (b"null", "must be a JSON object, got null"),
        (_without("event_id"), "event_id: missing"),
        (_without("event_type"), "event_type: missing"),
        (_without("occurred_at"), "occurred_at: missing"),
        (_without("subject_key"), "subject_key: missing"),
        (_with("subject_key", None), "subject_key: missing"),
        (_with("event_id", 17), "event_id: must be a string, got number"),
        (_with("event_id", "17"), "event_id: not a UUID"),
        (_with("event_type", ""), "event_type: must not be empty"),
        (_with("subject_key", ["p"]), "subject_key: must be a string, got array"),
        (_with("occurred_at", 1740830400), "occurred_at: must be a string, got number"),
        (_with("occurred_at", "yesterday"), "occurred_at: not an ISO-8601 date-time"),
        (_with("occurred_at", "2025-03-01T12:00:00"), "occurred_at: has no timezone"),
        (_with("resource_type", 3), "resource_type: must be a string, got number"),
        (_with("resource_id", {"id": 1}), "resource_id: must be a string, got object"),
        (_with("version_id", 3), "version_id: must be a string, got number"),
        (_with("correlation_id", True), "correlation_id: must be a string, got boolean"),
        (_with("sender", ""), "sender: must not be empty"),
        (_with("payload", "text"), "payload: must be a JSON object or null, got string"),
        (_with("payload", [{"resourceType": "Task"}]), "payload: must be a JSON object or null"),
        (_with("schema_version", 2), "schema_version: 2 is newer than the supported 1"),
        (_with("schema_version", "1"), "schema_version: must be a positive integer"),
        (_with("schema_version", True), "schema_version: must be a positive integer"),
        (_with("schema_version", 0), "schema_version: must be a positive integer"),
    ],
)
def test_malformed_envelopes_name_the_field_and_problem(data: bytes, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message) as raised:
        Envelope.from_json(data)
    assert isinstance(raised.value, ValueError)
