"""Envelope format, key handling and the start-up key check, without a server."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text

from bus import Record
from bus.memory import InMemoryBus
from service.config import Settings
from service.crypto import (
    SEALED_FIELDS,
    Envelope,
    FieldSealer,
    KeyringInvalid,
    KeyUnavailable,
    LocalKeyProvider,
    SealBroken,
    build_envelope,
    key_id_of,
    verify_keys,
)
from service.crypto.fields import sealed_paths
from service.crypto.keys import generate_key, parse_env_keys
from service.outbox import Outbox, OutboxRelay
from service.search.extract import ResourceIndexer
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from tests.storage_crypto.support import MARKERS, marked_log


def _envelope(**keys: bytes) -> Envelope:
    return Envelope(LocalKeyProvider(env_keys=keys))


def test_seal_open_round_trip_and_key_id_in_clear() -> None:
    envelope = _envelope(k1=generate_key())
    sealed = envelope.seal(b"MARKCOMMPAYLOAD", context="Communication/a/_history/1")
    assert b"MARKCOMMPAYLOAD" not in sealed
    assert key_id_of(sealed) == "k1"
    assert envelope.open(sealed, context="Communication/a/_history/1") == b"MARKCOMMPAYLOAD"


@pytest.mark.parametrize("position", [0, 5, 30, -20, -1])
def test_any_changed_byte_is_refused(position: int) -> None:
    envelope = _envelope(k1=generate_key())
    sealed = bytearray(envelope.seal(b"secret", context="Task/t/_history/1"))
    sealed[position] ^= 0x40
    with pytest.raises((SealBroken, KeyUnavailable)):
        envelope.open(bytes(sealed), context="Task/t/_history/1")


def test_ciphertext_bound_to_its_row() -> None:
    envelope = _envelope(k1=generate_key())
    sealed = envelope.seal(b"secret", context="Task/t/_history/1")
    for other in ("Task/t/_history/2", "Task/u/_history/1", "CarePlan/t/_history/1"):
        with pytest.raises(SealBroken, match="integrity"):
            envelope.open(sealed, context=other)
    with pytest.raises(SealBroken, match="truncated"):
        envelope.open(sealed[:20], context="Task/t/_history/1")


def test_rewrap_keeps_the_data_and_moves_the_key() -> None:
    old, new = generate_key(), generate_key()
    both = Envelope(LocalKeyProvider(env_keys={"old": old, "new": new}, active="old"))
    sealed = both.seal(b"secret", context="c")
    moved = both.rewrap(sealed, key_id="new")
    assert key_id_of(moved) == "new"
    assert _envelope(new=new).open(moved, context="c") == b"secret"
    with pytest.raises(KeyUnavailable, match="'old'"):
        _envelope(new=new).open(sealed, context="c")
    with pytest.raises(SealBroken, match="not the one"):
        _envelope(old=generate_key()).open(sealed, context="c")


def test_env_keys_are_checked() -> None:
    key = base64.b64encode(generate_key()).decode()
    assert list(parse_env_keys(f"a:{key}, b:{key}")) == ["a", "b"]
    for bad in ("a", "a:notbase64!", f"bad id:{key}", "a:" + base64.b64encode(b"short").decode()):
        with pytest.raises(KeyringInvalid):
            parse_env_keys(bad)


def test_production_refuses_to_start_without_keys(tmp_path: Path) -> None:
    settings = Settings.model_construct(
        **{**Settings(data_dir=tmp_path).model_dump(), "environment": "production"}
    )
    with pytest.raises(KeyringInvalid, match="STAFETT_ENCRYPTION_KEYS"):
        build_envelope(settings)
    off = settings.model_copy(update={"encryption_at_rest": False})
    assert build_envelope(off) is None


def test_development_creates_a_private_keyring(tmp_path: Path) -> None:
    envelope = build_envelope(Settings(data_dir=tmp_path))
    assert envelope is not None
    keyring = tmp_path / "encryption-keyring.json"
    assert keyring.stat().st_mode & 0o077 == 0
    assert build_envelope(Settings(data_dir=tmp_path)) is not None  # reused, not replaced


def test_sealed_fields_are_split_off_and_never_indexed() -> None:
    sealer = FieldSealer(_envelope(k1=generate_key()))
    indexer = ResourceIndexer(base_url="http://x/fhir")
    for entry in marked_log("")["entry"]:
        data: dict[str, Any] = {**entry["resource"], "id": "x1", "meta": {"versionId": "1"}}
        content = orjson.dumps(data).decode()
        split = sealer.split(data["resourceType"], "x1", content, data)
        if split is None:
            continue
        assert not any(marker in split.content for marker in MARKERS), data["resourceType"]
        rows = indexer.index(split.data)
        assert not any(marker in repr(rows) for marker in MARKERS)
        # the full resource's index is the same: no search parameter covers a sealed field
        assert sorted(map(repr, indexer.index(data).strings)) == sorted(map(repr, rows.strings))
        assert split.sealed is not None
        merged = orjson.loads(sealer.merge(data["resourceType"], "x1", split.content, split.sealed))
        assert merged == data


def test_no_search_parameter_covers_a_sealed_field() -> None:
    # a parameter reading inside a sealed element would find nothing (the CapabilityStatement
    # would lie); a string parameter on an element holding one would index its text
    indexer = ResourceIndexer(base_url="http://x/fhir")
    for resource_type in SEALED_FIELDS:
        for code, param in indexer.params(resource_type).items():
            for path in param.paths:
                names = tuple(step.name + (step.cast or "") for step in path.steps)
                for steps in sealed_paths(resource_type):
                    plain = tuple(step for step in steps if step != "*")
                    inside = names[: len(plain)] == plain
                    around = plain[: len(names)] == names and param.type == "string"
                    assert not inside, (resource_type, code, steps)
                    assert not around, (resource_type, code, steps)


@pytest.fixture
def database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path / 'keys.db'}")
    upgrade_database(database.engine)
    return database


def test_start_up_refuses_a_missing_or_wrong_key(database: Database) -> None:
    key = generate_key()
    verify_keys(database, _envelope(k1=key))  # registers k1
    verify_keys(database, _envelope(k1=key))  # and accepts it again
    with pytest.raises(KeyUnavailable, match="'k1', which is not configured"):
        verify_keys(database, _envelope(k2=generate_key()))
    with pytest.raises(SealBroken, match="'k1' is not the key"):
        verify_keys(database, _envelope(k1=generate_key()))
    with pytest.raises(KeyringInvalid, match="encryption at rest is off"):
        verify_keys(database, None)


def test_outbox_rows_are_sealed_and_the_relay_opens_them(database: Database) -> None:
    envelope = _envelope(k1=generate_key())
    value = b'{"payload": {"note": [{"text": "MARKTASKNOTE"}]}}'
    with database.write() as conn:
        Outbox(database, envelope=envelope).add(
            conn, [("e1", Record("stafett.changes", "p", value))]
        )
    with database.read() as conn:
        stored = conn.execute(text("SELECT value FROM outbox")).scalar_one()
    assert "MARKTASKNOTE" not in stored
    bus = InMemoryBus()
    bus.ensure_topics(["stafett.changes"])
    consumer = bus.consumer(["stafett.changes"], "test")
    relay = OutboxRelay(database=database, bus=bus, envelope=envelope)
    assert relay.relay_once() == 1
    (message,) = consumer.poll(1.0)
    assert message.value == value  # consumers get the event as it was written
