"""Child-welfare simulator: the agency's case system, talking to a Stafett account by messages."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from simulators.child_welfare import (
    FEILET,
    MOTTATT,
    TILTAK,
    DecryptedMessage,
    FiksClient,
    Settings,
    create_app,
    generate_private_key,
    register_account,
)
from simulators.child_welfare.envelope import seal
from simulators.common.clock import OSLO
from simulators.common.server import running

FNR = "15832151200"
GUARDIAN = "04868941214"
MEASURE = {
    "fnr": FNR,
    "beskrivelse": "Foreldreveiledning (ICDP) hver tirsdag",
    "status": "iverksatt",
    "oppstart": "2026-09-07",
    "evalueres": "2026-11-02",
}


@dataclass
class World:
    """The simulator, an HTTP client for it and the Stafett account's message client."""

    http: httpx.Client
    stafett: FiksClient
    key: rsa.RSAPrivateKey

    def sak(self) -> dict[str, Any]:
        """Return the agency's store."""
        answer: dict[str, Any] = self.http.get("/_sim/sak").json()
        return answer

    def stats(self) -> dict[str, int]:
        """Return the agency's counters."""
        counters: dict[str, int] = self.sak()["statistikk"]
        return counters


@pytest.fixture(scope="module")
def stafett_key() -> rsa.RSAPrivateKey:
    """Return the key pair of the Stafett account."""
    return generate_private_key()


@pytest.fixture
def world_of(stafett_key: rsa.RSAPrivateKey) -> Iterator[Callable[..., World]]:
    """Return a factory that serves the simulator with fast loops and the given faults."""
    with ExitStack() as stack:

        def make(**faults: Any) -> World:
            settings = Settings(
                agency_interval_s=0.02, resend_interval_s=0.15, lease_s=1.0, fault_seed=7, **faults
            )
            base_url = stack.enter_context(running(create_app(settings)))
            http = stack.enter_context(httpx.Client(base_url=base_url))
            token = register_account(http, base_url, "stafett", stafett_key)
            client = FiksClient(base_url, "stafett", token, stafett_key, http)
            return World(http, client, stafett_key)

        yield make


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll `condition` until it holds or fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout_s} s")
        time.sleep(0.02)


def receipts_for(world: World, message_id: str, timeout_s: float = 10.0) -> list[DecryptedMessage]:
    """Collect (and acknowledge) receipts answering `message_id` until at least one came."""
    found: list[DecryptedMessage] = []

    def more() -> bool:
        for message in world.stafett.receive(max_messages=50):
            world.stafett.ack(message.message_id)
            if message.reply_to == message_id:
                found.append(message)
        return bool(found)

    wait_for(more, timeout_s)
    return found


def test_caseworker_records_reach_stafett_despite_drops_and_duplicates(
    world_of: Callable[..., World],
) -> None:
    world = world_of(drop_rate=0.2, duplicate_rate=0.2)
    created = [
        world.http.post("/_sim/sak/tiltak", json={**MEASURE, "beskrivelse": f"Tiltak {i}"}).json()
        for i in range(8)
    ]
    log = world.http.post(
        "/_sim/sak/logg",
        json={
            "fnr": FNR,
            "niva": "2",
            "saksbehandler": {"id": "BV-17", "navn": "Siv Saksbehandler"},
        },
    ).json()
    assert {c["tiltakId"] for c in created} == {f"BV-TILTAK-{i:04d}" for i in range(1, 9)}
    assert log["id"] == "BV-SAK-0001"

    received: dict[str, list[DecryptedMessage]] = {}

    def all_receipted() -> bool:
        for message in world.stafett.receive(max_messages=50):
            received.setdefault(message.message_id, []).append(message)
            world.stafett.reply_received(message)
            world.stafett.ack(message.message_id)
        outbox = world.sak()["utboks"].values()
        return all(entry["status"] == "mottatt" for entry in outbox)

    wait_for(all_receipted, timeout_s=20)
    by_id = {m[0].payload.get("tiltakId", m[0].payload["fnr"]): m[0] for m in received.values()}
    for record in created:
        message = by_id[record["tiltakId"]]
        assert message.message_type == TILTAK
        assert message.sender == "barnevern"
        assert message.payload == {
            "tiltakId": record["tiltakId"],
            **MEASURE,
            "beskrivelse": record["beskrivelse"],
            "evaluering": None,
        }
    assert by_id[FNR].payload["saksbehandler"] == {"id": "BV-17", "navn": "Siv Saksbehandler"}
    assert len(received) == 9  # one message id per record, however often it came
    service = world.http.get("/_sim/store").json()["statistikk"]
    assert service["dropped"] > 0
    assert service["duplicated"] > 0
    outbox = world.sak()["utboks"].values()
    assert sum(entry["forsok"] for entry in outbox) >= 9


def test_the_same_message_twice_is_applied_once(world_of: Callable[..., World]) -> None:
    world = world_of(duplicate_rate=1.0)  # every message arrives twice
    payload = {"tiltakId": "STAFETT-T-1", **MEASURE}
    first = world.stafett.send("barnevern", TILTAK, payload)

    receipts = receipts_for(world, first)
    wait_for(lambda: world.stats()["duplikater"] >= 1)
    assert {r.message_type for r in receipts} == {MOTTATT}
    sak = world.sak()
    [record] = sak["tiltak"].values()
    assert (record["id"], record["tiltakId"], record["versjon"]) == (
        "BV-TILTAK-0001",
        "STAFETT-T-1",
        1,
    )
    assert record["endretAv"] == "stafett"
    assert sak["statistikk"]["opprettet"] == 1
    assert sak["behandlet"][first]["resultat"] == "opprettet"

    # a new message about the same measure updates the same record (business id)
    second = world.stafett.send("barnevern", TILTAK, {**payload, "status": "avsluttet"})
    receipts_for(world, second)
    wait_for(lambda: world.stats()["oppdatert"] == 1)
    [record] = world.sak()["tiltak"].values()
    assert (record["status"], record["versjon"]) == ("avsluttet", 2)

    # the same content again changes nothing; an older version that comes late is skipped
    third = world.stafett.send("barnevern", TILTAK, {**payload, "status": "avsluttet"})
    receipts_for(world, third)
    late = seal(
        melding_type=TILTAK,
        avsender="stafett",
        mottaker="barnevern",
        payload={**payload, "status": "planlagt"},
        recipient_key=world.stafett.public_key("barnevern"),
        sender_key=world.key,
        ttl=60,
        sendt=datetime.now(OSLO) - timedelta(minutes=5),
    )
    world.stafett.send_envelope(late)
    receipts_for(world, late.melding_id)
    wait_for(lambda: world.stats()["foreldet"] == 1 and world.stats()["uendret"] == 1)
    [record] = world.sak()["tiltak"].values()
    assert (record["status"], record["versjon"]) == ("avsluttet", 2)


def test_undecryptable_message_gets_a_feilet_receipt(
    world_of: Callable[..., World], stafett_key: rsa.RSAPrivateKey
) -> None:
    world = world_of()
    wrong = seal(
        melding_type=TILTAK,
        avsender="stafett",
        mottaker="barnevern",
        payload={"tiltakId": "STAFETT-T-2", **MEASURE},
        recipient_key=generate_private_key().public_key(),  # not the agency's key
        sender_key=stafett_key,
        ttl=60,
    )
    world.stafett.send_envelope(wrong)
    [receipt] = receipts_for(world, wrong.melding_id)
    assert receipt.message_type == FEILET
    assert "unwrap" in receipt.payload["feilmelding"]
    assert world.sak()["tiltak"] == {}
    assert world.stats()["feilet"] == 1


@pytest.mark.parametrize(
    ("message_type", "payload", "reason"),
    [
        (TILTAK, {"tiltakId": "X", **MEASURE, "status": "pagar"}, "status"),
        (TILTAK, {"tiltakId": "X", **MEASURE, "fnr": "12345678901"}, "fødselsnummer"),
        ("no.ks.fiks.bti.ukjent.v1", {}, "not handled"),
    ],
)
def test_invalid_payloads_get_a_feilet_receipt(
    world_of: Callable[..., World], message_type: str, payload: dict[str, Any], reason: str
) -> None:
    world = world_of()
    message_id = world.stafett.send("barnevern", message_type, payload)
    [receipt] = receipts_for(world, message_id)
    assert receipt.message_type == FEILET
    assert reason in receipt.payload["feilmelding"]


def test_feilet_receipt_settles_the_outbox_and_updates_supersede(
    world_of: Callable[..., World],
) -> None:
    world = world_of()
    created = world.http.post(
        "/_sim/sak/samtykke",
        json={
            "fnr": FNR,
            "foresatte": [GUARDIAN],
            "gyldigTil": "2027-11-01",
            "mottakere": ["974760673", "936451284"],
        },
    )
    assert created.status_code == 201
    samtykke_id = created.json()["samtykkeId"]
    withdrawn = world.http.post(f"/_sim/sak/samtykke/{samtykke_id}", json={"trukket": True})
    assert (withdrawn.json()["trukket"], withdrawn.json()["versjon"]) == (True, 2)
    outbox = list(world.sak()["utboks"].values())
    assert sorted(e["status"] for e in outbox) == ["erstattet", "venter"]

    def answer_last_with_feilet() -> bool:
        for message in world.stafett.receive(max_messages=50):
            world.stafett.ack(message.message_id)
            if message.payload["trukket"]:
                world.stafett.reply_failed(message, "samtykke ukjent hos Stafett")
        entries = world.sak()["utboks"].values()
        return any(e["status"] == "feilet" for e in entries)

    wait_for(answer_last_with_feilet)
    last = [e for e in world.sak()["utboks"].values() if e["innhold"]["trukket"]]
    assert [(e["status"], e["feilmelding"]) for e in last] == [
        ("feilet", "samtykke ukjent hos Stafett")
    ]
    assert world.http.post("/_sim/sak/samtykke/BV-SAMTYKKE-9999", json={}).status_code == 404
    bad = world.http.post("/_sim/sak/tiltak", json={**MEASURE, "fnr": "1"})
    assert bad.status_code == 422
