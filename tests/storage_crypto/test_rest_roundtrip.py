"""Encryption at rest over the real REST API, on SQLite and PostgreSQL.

A child's log with marker strings in every sealed field goes in through a transaction; it must
come back whole through read, vread, history and search, while no table of the database (read
with SQL, and with pg_dump on PostgreSQL) holds a marker. Then the key is rotated online: old and
new data stay readable, the old key is retired, and a restarted server reads everything.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import create_engine, text, update

from service.crypto.cli import run_keys
from service.crypto.keys import read_keyring
from service.storage.schema import resources
from tests.storage_crypto.support import (
    forbidden,
    leaks,
    marked_log,
    pg_dump,
    table_texts,
)
from tests.support import LiveServer, fhir_headers, live_server, synthetic_orgnr

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="module")
def crypto_server(database_url: str, data_dir: Path) -> Iterator[LiveServer]:
    with live_server(
        database_url=database_url, data_dir=data_dir, access_policy="scopes-only"
    ) as live:
        yield live


@pytest.fixture(scope="module")
def api(crypto_server: LiveServer) -> httpx.Client:
    return crypto_server.client(crypto_server.practitioner_token(org=synthetic_orgnr()))


def _post_log(api: httpx.Client, tag: str) -> dict[str, str]:
    response = api.post("", json=marked_log(tag), headers=fhir_headers())
    assert response.status_code == 200, response.text
    created: dict[str, str] = {}
    for entry in response.json()["entry"]:
        location = entry["response"]["location"]  # Type/id/_history/1
        kind, id = location.split("/")[:2]
        created.setdefault(kind, id)
    return created


@pytest.fixture(scope="module")
def first_log(api: httpx.Client) -> dict[str, str]:
    return _post_log(api, "")


def _text_of(resource: dict[str, Any]) -> str:
    return orjson.dumps(resource).decode()


def _assert_whole(api: httpx.Client, log: dict[str, str], tag: str) -> None:
    expected = {
        "CarePlan": ["MARKCAREPLANDESC", "MARKCAREPLANNOTE"],
        "Goal": ["MARKGOALDESC", "MARKGOALNOTE"],
        "Communication": ["MARKCOMMPAYLOAD", "MARKCOMMNOTE", "MARKATTACHTITLE"],
        "Consent": ["MARKCONSENTTITLE"],
        "Task": ["MARKTASKDESC", "MARKTASKNOTE"],
    }
    for kind, markers in expected.items():
        response = api.get(f"/{kind}/{log[kind]}")
        if response.status_code == 410:  # deleted by an earlier test: its last version
            response = api.get(f"/{kind}/{log[kind]}/_history/1")
        assert response.status_code == 200, response.text
        body = _text_of(response.json())
        for marker in markers:
            assert marker + tag in body, (kind, marker)


def _assert_no_leak(database_url: str, tag: str = "") -> None:
    for table, dump in table_texts(database_url).items():
        assert not leaks(dump, tag), (table, leaks(dump, tag))
    if database_url.startswith("postgresql"):
        dumped = pg_dump(database_url)
        assert dumped is not None, "pg_dump could not dump the test database"
        assert "MARKCAREPLANDESC" not in dumped
        assert not leaks(dumped, tag)


def test_round_trip_and_no_plaintext_in_the_database(
    api: httpx.Client, first_log: dict[str, str], database_url: str
) -> None:
    _assert_whole(api, first_log, "")
    _assert_no_leak(database_url)


def test_vread_history_and_search_decrypt(api: httpx.Client, first_log: dict[str, str]) -> None:
    plan_id = first_log["CarePlan"]
    plan = api.get(f"/CarePlan/{plan_id}").json()
    plan["note"] = [{"text": "MARKCAREPLANNOTE-v2"}]
    assert api.put(f"/CarePlan/{plan_id}", json=plan, headers=fhir_headers()).status_code == 200
    v1 = api.get(f"/CarePlan/{plan_id}/_history/1").json()
    assert v1["note"] == [{"text": "MARKCAREPLANNOTE"}]
    assert "MARKCAREPLANDESC" in v1["description"]
    history = api.get(f"/CarePlan/{plan_id}/_history").json()
    notes = [e["resource"]["note"][0]["text"] for e in history["entry"]]
    assert notes == ["MARKCAREPLANNOTE-v2", "MARKCAREPLANNOTE"]
    found = api.get("/Communication", params={"_id": first_log["Communication"]}).json()
    payload = found["entry"][0]["resource"]["payload"]
    assert payload[0]["contentString"] == "MARKCOMMPAYLOAD"
    # a search on a clear field still works and returns the decrypted resource
    by_subject = api.get("/CarePlan", params={"_id": plan_id, "status": "active"}).json()
    assert "MARKCAREPLANNOTE-v2" in _text_of(by_subject)


def test_a_deleted_resource_keeps_history_readable(
    api: httpx.Client, first_log: dict[str, str], database_url: str
) -> None:
    goal_id = first_log["Goal"]
    assert api.delete(f"/Goal/{goal_id}").status_code in (200, 204)
    assert api.get(f"/Goal/{goal_id}").status_code == 410
    v1 = api.get(f"/Goal/{goal_id}/_history/1").json()
    assert v1["description"]["text"] == "MARKGOALDESC"
    _assert_no_leak(database_url)


def test_tampered_ciphertext_is_a_clear_error(
    api: httpx.Client, first_log: dict[str, str], database_url: str
) -> None:
    task_id = first_log["Task"]
    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            where = (resources.c.resource_type == "Task", resources.c.id == task_id)
            original = conn.execute(
                resources.select().with_only_columns(resources.c.sealed).where(*where)
            ).scalar_one()
            broken = bytearray(original)
            broken[-1] ^= 0x01
            conn.execute(update(resources).where(*where).values(sealed=bytes(broken)))
        response = api.get(f"/Task/{task_id}")
        assert response.status_code == 500
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert "cannot be decrypted" in outcome["issue"][0]["diagnostics"]
        assert "MARKTASK" not in response.text
        # a ciphertext moved to another row does not open either
        other = first_log["CarePlan"]
        with engine.begin() as conn:
            conn.execute(update(resources).where(*where).values(sealed=original))
            moved = conn.execute(
                text("SELECT sealed FROM resources WHERE resource_type = 'CarePlan' AND id = :i"),
                {"i": other},
            ).scalar_one()
            conn.execute(update(resources).where(*where).values(sealed=moved))
        assert api.get(f"/Task/{task_id}").status_code == 500
        with engine.begin() as conn:
            conn.execute(update(resources).where(*where).values(sealed=original))
        assert api.get(f"/Task/{task_id}").status_code == 200
    finally:
        engine.dispose()


def _keys(settings: Any, command: str, **options: Any) -> int:
    args = argparse.Namespace(
        keys_command=command,
        keep_key=options.get("keep_key", False),
        reencrypt=options.get("reencrypt", False),
        batch_size=options.get("batch_size", 7),  # several batches even for one log
        pause_ms=0,
        key_id=options.get("key_id"),
    )
    return run_keys(args, settings)


def test_rotation_online_keeps_old_and_new_data_readable(
    api: httpx.Client,
    first_log: dict[str, str],
    crypto_server: LiveServer,
    data_dir: Path,
    database_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = crypto_server.settings
    old_key = read_keyring(data_dir / "encryption-keyring.json").active
    assert _keys(settings, "rotate", reencrypt=True) == 0
    new_key = read_keyring(data_dir / "encryption-keyring.json").active
    assert new_key != old_key
    # the running server reads rows now under a key it had not loaded when it started
    _assert_whole(api, first_log, "")
    second_log = _post_log(api, "NEW")
    _assert_whole(api, second_log, "NEW")
    # rows written before the server noticed the new key are caught by a second pass
    assert _keys(settings, "rotate", keep_key=True) == 0
    capsys.readouterr()
    assert _keys(settings, "status") == 0
    status = capsys.readouterr().out
    assert f"active key: {new_key}" in status
    assert f"{old_key} " not in status.split("registered key")[-1]
    assert _keys(settings, "retire", key_id=old_key) == 0
    assert old_key not in read_keyring(data_dir / "encryption-keyring.json").keys
    _assert_whole(api, first_log, "")
    _assert_whole(api, second_log, "NEW")
    _assert_no_leak(database_url)
    _assert_no_leak(database_url, "NEW")
    # a restarted server has only the new key and reads old and new data
    with live_server(
        database_url=database_url, data_dir=data_dir, access_policy="scopes-only"
    ) as again:
        client = again.client(again.practitioner_token(org=synthetic_orgnr()))
        _assert_whole(client, first_log, "")
        _assert_whole(client, second_log, "NEW")


def test_forbidden_strings_are_really_in_the_requests() -> None:
    # guards the dump check itself: the markers do go into the resources posted
    sent = orjson.dumps(marked_log("")).decode()
    assert sum(needle in sent for needle in forbidden("")) >= len(forbidden("")) // 3
