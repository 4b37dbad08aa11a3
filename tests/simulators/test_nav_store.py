"""NAV simulator: idempotent apply and the advisor's publish-or-roll-back, without a broker."""

from __future__ import annotations

from typing import Any

import pytest

from simulators.nav import store as store_module
from simulators.nav.app import handle_record
from simulators.nav.events import KINDS
from simulators.nav.rapids import build_message, encode
from simulators.nav.store import Applied, InvalidRecord, NavStore, RecordNotFound

TILTAK = {
    "tiltaksId": "STAFETT-T-1",
    "fodselsnummer": "15832151200",
    "beskrivelse": "Arbeidstrening",
    "status": "PLANLAGT",
}


def test_apply_by_event_id_and_business_id() -> None:
    nav = NavStore(None)
    first = build_message("bti_tiltak", TILTAK, kilde="stafett")
    assert nav.apply(KINDS["tiltak"], first) is Applied.CREATED
    assert nav.apply(KINDS["tiltak"], first) is Applied.DUPLICATE
    same = build_message("bti_tiltak", TILTAK, kilde="stafett")
    assert nav.apply(KINDS["tiltak"], same) is Applied.UNCHANGED
    newer = build_message("bti_tiltak", {**TILTAK, "status": "AVSLUTTET"}, kilde="stafett")
    assert nav.apply(KINDS["tiltak"], newer) is Applied.UPDATED
    older = {
        **build_message("bti_tiltak", TILTAK, kilde="stafett"),
        "@opprettet": "2020-01-01T00:00:00.000",
    }
    assert nav.apply(KINDS["tiltak"], older) is Applied.STALE
    [record] = nav.snapshot()["tiltak"].values()
    assert (record["id"], record["versjon"], record["status"]) == (
        "NAV-TILTAK-0001",
        2,
        "AVSLUTTET",
    )


def test_handle_record_sorts_ignored_from_invalid() -> None:
    nav = NavStore(None)
    handle_record(nav, b"\x00")
    handle_record(nav, encode(build_message("bti_tiltak", TILTAK, kilde="nav")))
    handle_record(nav, encode(build_message("bti_tiltak", {**TILTAK, "status": "X"}, kilde="s")))
    handle_record(nav, encode(build_message("bti_tiltak", {**TILTAK, "nivaa": 2}, kilde="s")))
    stats = nav.snapshot()["statistikk"]
    assert (stats["ugyldig"], stats["ignorert"], stats["opprettet"]) == (2, 1, 1)


def test_oldest_event_ids_are_forgotten_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "MAX_HANDLED", 5)
    monkeypatch.setattr(store_module, "_PRUNE_CHUNK", 2)
    nav = NavStore(None)
    ids = []
    for number in range(8):
        message = build_message("bti_tiltak", {**TILTAK, "tiltaksId": f"T-{number}"}, kilde="s")
        nav.apply(KINDS["tiltak"], message)
        ids.append(message["@id"])
    assert set(nav.snapshot()["behandlet"]) == set(ids[3:])


def test_advisor_change_is_kept_only_if_published() -> None:
    nav = NavStore(None)
    published: list[tuple[str, dict[str, Any]]] = []
    record, event = nav.save(
        KINDS["tiltak"],
        {"fodselsnummer": "15832151200", "beskrivelse": "Kurs", "status": "PLANLAGT"},
        business_id=None,
        publish=lambda key, message: published.append((key, message)),
    )
    assert event is not None
    assert published == [("15832151200", event)]
    assert (event["tiltaksId"], event["@kilde"]) == (record["id"], "nav")

    def refuse(key: str, message: dict[str, Any]) -> None:
        raise RuntimeError("broker down")

    with pytest.raises(RuntimeError):
        nav.save(KINDS["tiltak"], {"status": "AVSLUTTET"}, business_id=record["id"], publish=refuse)
    assert nav.find(KINDS["tiltak"], record["id"]) == {**record}
    with pytest.raises(RecordNotFound):
        nav.save(KINDS["tiltak"], {}, business_id="NAV-TILTAK-9", publish=refuse)
    with pytest.raises(InvalidRecord):
        nav.save(KINDS["tiltak"], {"status": "X"}, business_id=record["id"], publish=refuse)
