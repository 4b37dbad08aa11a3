"""NAV simulator: Rapids & Rivers message helpers and the river filter (no broker)."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Any

import pytest

from simulators.common.clock import OSLO
from simulators.nav.events import KINDS
from simulators.nav.rapids import River, build_message, encode, opprettet, parse

TILTAK = {
    "tiltaksId": "STAFETT-T-1",
    "fodselsnummer": "15832151200",
    "beskrivelse": "Arbeidstrening",
    "status": "PLANLAGT",
}


def test_build_message_has_the_system_keys() -> None:
    message = build_message("bti_tiltak", TILTAK, kilde="stafett")
    assert message["@event_name"] == "bti_tiltak"
    assert uuid.UUID(message["@id"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}", message["@opprettet"])
    assert message["@kilde"] == "stafett"
    assert {k: message[k] for k in TILTAK} == TILTAK
    assert parse(encode(message)) == message
    with pytest.raises(ValueError, match="@"):
        build_message("bti_tiltak", {"@id": "x"}, kilde="stafett")


def test_opprettet_is_oslo_local_time_without_offset() -> None:
    summer = datetime(2026, 7, 1, 10, 0, 0, 123456, tzinfo=OSLO)
    assert opprettet(summer) == "2026-07-01T10:00:00.123"
    assert opprettet(datetime.fromisoformat("2026-01-01T09:00:00+00:00")) == (
        "2026-01-01T10:00:00.000"
    )


@pytest.mark.parametrize("value", [b"", b"not json", b"[1, 2]", b'"text"', b"\xff\xfe", None])
def test_parse_returns_none_for_anything_but_a_json_object(value: bytes | None) -> None:
    assert parse(value) is None


RIVER = River(
    "bti_tiltak",
    required_keys=("tiltaksId", "status"),
    rejected_keys=("@avbrutt",),
    rejected_values={"@kilde": "nav"},
)


def _message(**change: Any) -> dict[str, Any]:
    message = build_message("bti_tiltak", TILTAK, kilde="stafett")
    message.update(change)
    return {k: v for k, v in message.items() if v is not ...}


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (_message(), None),
        (_message(ukjentFelt=1), None),
        (_message(**{"@event_name": "bti_noe_annet"}), "@event_name"),
        (_message(status=...), "missing keys: ['status']"),
        (_message(status=None), "missing keys: ['status']"),
        (_message(**{"@id": ...}), "missing keys: ['@id']"),
        (_message(**{"@opprettet": ...}), "missing keys: ['@opprettet']"),
        (_message(**{"@avbrutt": True}), "rejected keys"),
        (_message(**{"@kilde": "nav"}), "@kilde is 'nav'"),
        (_message(**{"@id": "123"}), "@id is not a UUID"),
        (_message(**{"@opprettet": "2026-09-07T09:12:00+02:00"}), "@opprettet"),
    ],
)
def test_river_accepts_or_says_why_not(message: dict[str, Any], reason: str | None) -> None:
    found = RIVER.reason_to_ignore(message)
    if reason is None:
        assert found is None
        assert RIVER.accepts(message)
    else:
        assert found is not None
        assert reason in found
        assert not RIVER.accepts(message)


def test_nav_rivers_require_the_contract_fields_and_skip_own_events() -> None:
    assert KINDS["tiltak"].river.required_keys == (
        "tiltaksId",
        "fodselsnummer",
        "beskrivelse",
        "status",
    )
    assert KINDS["oppfolging"].river.required_keys == (
        "fodselsnummer",
        "nivaa",
        "veileder",
        "kontor",
        "aktiv",
    )
    own = build_message("bti_tiltak", TILTAK, kilde="nav")
    assert KINDS["tiltak"].river.reason_to_ignore(own) == "@kilde is 'nav'"
