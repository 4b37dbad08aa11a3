"""Child-welfare simulator: the message service (accounts, send, inbox leases, TTL, faults)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from simulators.child_welfare import (
    TILTAK,
    FiksClient,
    Settings,
    create_app,
    generate_private_key,
    public_key_to_pem,
    register_account,
)
from simulators.child_welfare.envelope import seal
from simulators.child_welfare.errors import FiksRequestFailed, NotLeased
from simulators.child_welfare.mailbox import Faults, MessageService, new_account_store
from simulators.common.server import running

PAYLOAD = {"tiltakId": "S-1", "fnr": "15832151200", "beskrivelse": "x", "status": "planlagt"}


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    """Return key pairs of two parties and a stranger."""
    return {name: generate_private_key() for name in ("alice", "bob", "stranger")}


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """Serve the simulator (agency loop off, short lease) and yield a client for it."""
    app = create_app(Settings(agency_interval_s=0, lease_s=0.3))
    with running(app) as base_url, httpx.Client(base_url=base_url) as client:
        yield client


def _client(http: httpx.Client, name: str, keys: dict[str, rsa.RSAPrivateKey]) -> FiksClient:
    base = str(http.base_url)
    token = register_account(http, base, name, keys[name])
    return FiksClient(base, name, token, keys[name], http)


def test_send_receive_ack(http: httpx.Client, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    alice, bob = _client(http, "alice", keys), _client(http, "bob", keys)
    message_id = alice.send("bob", TILTAK, PAYLOAD)

    [message] = bob.receive()
    assert (message.message_id, message.sender, message.payload) == (message_id, "alice", PAYLOAD)
    assert bob.receive() == []  # leased
    assert bob.ack(message_id) is True
    assert bob.ack(message_id) is False
    time.sleep(0.35)
    assert bob.receive() == []  # acknowledged messages never return


def test_unacknowledged_message_returns_after_the_lease(
    http: httpx.Client, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    alice, bob = _client(http, "alice", keys), _client(http, "bob", keys)
    message_id = alice.send("bob", TILTAK, PAYLOAD)
    assert [m.message_id for m in bob.receive()] == [message_id]
    time.sleep(0.35)
    assert [m.message_id for m in bob.receive()] == [message_id]
    stats = http.get("/_sim/store").json()["statistikk"]
    assert (stats["delivered"], stats["redelivered"]) == (2, 1)


def test_receive_honours_maks_and_keeps_order(
    http: httpx.Client, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    alice, bob = _client(http, "alice", keys), _client(http, "bob", keys)
    sent = [alice.send("bob", TILTAK, {**PAYLOAD, "tiltakId": f"S-{i}"}) for i in range(5)]
    first = [m.message_id for m in bob.receive(max_messages=3)]
    second = [m.message_id for m in bob.receive(max_messages=3)]
    assert first + second == sent


def test_authentication_and_authorisation(
    http: httpx.Client, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    alice = _client(http, "alice", keys)
    bob_token = register_account(http, str(http.base_url), "bob", keys["bob"])
    envelope = seal(
        melding_type=TILTAK,
        avsender="alice",
        mottaker="bob",
        payload=PAYLOAD,
        recipient_key=keys["bob"].public_key(),
        sender_key=keys["alice"],
        ttl=60,
    ).to_json()
    assert http.post("/fiks/send", json=envelope).status_code == 401
    assert (
        http.post("/fiks/send", json=envelope, headers={"X-Fiks-Token": "nope"}).status_code == 401
    )
    as_bob = {"X-Fiks-Token": bob_token}
    assert http.post("/fiks/send", json=envelope, headers=as_bob).status_code == 403
    assert http.get("/fiks/innboks/alice", headers=as_bob).status_code == 403
    assert http.get("/fiks/innboks/bob", headers=as_bob).status_code == 200
    with pytest.raises(FiksRequestFailed) as failed:
        alice.send("nobody", TILTAK, PAYLOAD)
    assert failed.value.status_code == 404


def test_send_rejects_bad_shape_and_bad_signature(
    http: httpx.Client, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    token = register_account(http, str(http.base_url), "alice", keys["alice"])
    register_account(http, str(http.base_url), "bob", keys["bob"])
    headers = {"X-Fiks-Token": token}
    forged = seal(
        melding_type=TILTAK,
        avsender="alice",
        mottaker="bob",
        payload=PAYLOAD,
        recipient_key=keys["bob"].public_key(),
        sender_key=keys["stranger"],  # not alice's registered key
        ttl=60,
    ).to_json()
    answer = http.post("/fiks/send", json=forged, headers=headers)
    assert answer.status_code == 400
    assert answer.json()["feil"] == "SignatureInvalid"
    broken = http.post("/fiks/send", json={**forged, "iv": "AAAA"}, headers=headers)
    assert (broken.status_code, broken.json()["feil"]) == (400, "EnvelopeInvalid")
    assert http.post("/fiks/send", json=[1], headers=headers).status_code == 400
    too_long = http.post("/fiks/send", json={**forged, "ttl": 10**9}, headers=headers)
    assert too_long.status_code == 400
    assert http.get("/_sim/store").json()["statistikk"]["rejected"] == 1


def test_accounts_register_once_and_rotate_keys_with_their_token(
    http: httpx.Client, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    body = {"konto": "alice", "offentligNokkel": public_key_to_pem(keys["alice"])}
    created = http.post("/fiks/kontoer", json=body)
    assert created.status_code == 201
    token = created.json()["token"]
    assert http.post("/fiks/kontoer", json=body).status_code == 409
    rotated = {**body, "offentligNokkel": public_key_to_pem(keys["stranger"])}
    again = http.post("/fiks/kontoer", json=rotated, headers={"X-Fiks-Token": token})
    assert (again.status_code, again.json()["token"]) == (200, token)
    key = http.get("/fiks/kontoer/alice/offentlig-nokkel").json()["offentligNokkel"]
    assert key == public_key_to_pem(keys["stranger"])
    assert http.get("/fiks/kontoer/nobody/offentlig-nokkel").status_code == 404
    bad = http.post("/fiks/kontoer", json={"konto": "x y", "offentligNokkel": key})
    assert bad.status_code == 400


def test_messages_expire_after_their_ttl(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    now = [1000.0]
    service = _service(keys, lease_s=1.0, clock=lambda: now[0])

    def send(ttl: int) -> str:
        envelope = seal(
            melding_type=TILTAK,
            avsender="alice",
            mottaker="bob",
            payload=PAYLOAD,
            recipient_key=keys["bob"].public_key(),
            sender_key=keys["alice"],
            ttl=ttl,
        )
        return service.send(sender="alice", envelope=envelope).melding_id

    short, long = send(5), send(60)
    now[0] += 4
    assert [e.melding_id for e in service.receive(account="bob", max_messages=10)] == [short, long]
    now[0] += 2  # short expired while leased; long's lease ended
    assert [e.melding_id for e in service.receive(account="bob", max_messages=10)] == [long]
    with pytest.raises(NotLeased):
        service.ack(account="bob", melding_id=short)
    now[0] += 60
    assert service.receive(account="bob", max_messages=10) == []
    assert service.snapshot()["statistikk"]["expired"] == 2


def _service(keys: dict[str, rsa.RSAPrivateKey], **options: Any) -> MessageService:
    service = MessageService(accounts=new_account_store(), **options)
    for name in ("alice", "bob"):
        service.register(account=name, public_key_pem=public_key_to_pem(keys[name]))
    return service


def test_drop_and_duplicate_rates_follow_the_settings(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    service = _service(keys, faults=Faults(drop_rate=0.2, duplicate_rate=0.2), seed=42)
    envelope = seal(
        melding_type=TILTAK,
        avsender="alice",
        mottaker="bob",
        payload=PAYLOAD,
        recipient_key=keys["bob"].public_key(),
        sender_key=keys["alice"],
        ttl=600,
    )
    total = 500
    # a resend of one envelope counts as a message of its own
    copies = [service.send(sender="alice", envelope=envelope).copies for _ in range(total)]
    stats = service.snapshot()["statistikk"]
    assert (stats["accepted"], stats["dropped"]) == (total, copies.count(0))
    kept = total - stats["dropped"]
    assert 0.15 * total <= stats["dropped"] <= 0.25 * total
    assert 0.15 * kept <= stats["duplicated"] == copies.count(2) <= 0.25 * kept
    assert len(service.receive(account="bob", max_messages=total * 2)) == kept + copies.count(2)

    service.set_faults(Faults(drop_rate=0.2, duplicate_rate=0.2), seed=42)
    again = [service.send(sender="alice", envelope=envelope).copies for _ in range(total)]
    assert again == copies  # the same seed, the same faults


def test_faults_endpoint(http: httpx.Client) -> None:
    answer = http.post("/_sim/faults", json={"drop_rate": 0.2, "duplicate_rate": 0.1, "seed": 1})
    assert answer.json() == {"drop_rate": 0.2, "duplicate_rate": 0.1}
    assert http.get("/_sim/store").json()["feil"] == answer.json()
    assert http.post("/_sim/faults", json={"drop_rate": 2}).status_code == 422


def test_faults_are_validated() -> None:
    with pytest.raises(ValueError, match="drop_rate"):
        Faults(drop_rate=1.5)


def test_data_dir_keeps_accounts_agency_key_and_cases(
    tmp_path: Path, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    settings = Settings(data_dir=tmp_path, agency_interval_s=0, seed_demo=True)
    chosen = "stafett-token-0123456789"

    def serve_once() -> tuple[str, dict[str, Any]]:
        with running(create_app(settings)) as base, httpx.Client(base_url=base) as http:
            # registering with a chosen token is idempotent: create, then re-key
            assert register_account(http, base, "stafett", keys["bob"], token=chosen) == chosen
            key = http.get("/fiks/kontoer/barnevern/offentlig-nokkel").json()["offentligNokkel"]
            sak = http.post("/_sim/tick").json()
            return key, sak

    key, sak = serve_once()
    assert [len(sak[c]) for c in ("logger", "tiltak", "samtykker")] == [1, 1, 1]
    assert {e["status"] for e in sak["utboks"].values()} == {"venter"}
    assert {e["forsok"] for e in sak["utboks"].values()} == {1}
    key_again, sak_again = serve_once()
    assert key_again == key
    assert sak_again["tiltak"] == sak["tiltak"]  # not seeded twice
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "barnevern-privat-nokkel.pem",
        "barnevern.json",
        "kontoer.json",
    ]
