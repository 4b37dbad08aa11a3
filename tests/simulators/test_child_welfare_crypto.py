"""Child-welfare simulator: hybrid encryption, signatures and the envelope's shape."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from simulators.child_welfare import crypto
from simulators.child_welfare.envelope import TILTAK, Envelope, open_envelope, seal
from simulators.child_welfare.errors import (
    DecryptionFailed,
    EnvelopeInvalid,
    KeyInvalid,
    SignatureInvalid,
    WrongRecipient,
)

PAYLOAD = {
    "tiltakId": "BV-TILTAK-0001",
    "fnr": "15832151200",
    "beskrivelse": "Samtaler med familien hver uke",
    "status": "iverksatt",
    "oppstart": "2026-09-07",
    "evalueres": "2026-11-02",
    "evaluering": None,
}


@pytest.fixture(scope="module")
def keys() -> dict[str, rsa.RSAPrivateKey]:
    """Return three key pairs: sender, recipient and a stranger."""
    return {name: crypto.generate_private_key() for name in ("sender", "recipient", "stranger")}


@pytest.fixture
def envelope(keys: dict[str, rsa.RSAPrivateKey]) -> Envelope:
    """Return a tiltak message from sender to recipient."""
    return seal(
        melding_type=TILTAK,
        avsender="stafett",
        mottaker="barnevern",
        payload=PAYLOAD,
        recipient_key=keys["recipient"].public_key(),
        sender_key=keys["sender"],
        ttl=3600,
    )


def _open(envelope: Envelope, keys: dict[str, rsa.RSAPrivateKey], **override: Any) -> Any:
    arguments: dict[str, Any] = {
        "sender_key": keys["sender"].public_key(),
        "recipient_key": keys["recipient"],
        "recipient": "barnevern",
        **override,
    }
    return open_envelope(envelope, **arguments)


def test_round_trip(envelope: Envelope, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    assert _open(envelope, keys) == PAYLOAD
    assert len(base64.b64decode(envelope.iv)) == 12
    # the wrapped key is one RSA block of the recipient's 2048-bit key
    assert len(base64.b64decode(envelope.nokkel)) == 256
    assert envelope.sendt_at.utcoffset() is not None


def test_each_message_gets_a_fresh_key_and_iv(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    first = crypto.encrypt(b"{}", keys["recipient"].public_key())
    second = crypto.encrypt(b"{}", keys["recipient"].public_key())
    assert first.iv != second.iv
    assert first.nokkel != second.nokkel
    assert first.innhold != second.innhold


def _flip_last_char(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@pytest.mark.parametrize("field", ["innhold", "melding_id", "melding_type", "signatur"])
def test_tampering_breaks_the_signature(
    envelope: Envelope, keys: dict[str, rsa.RSAPrivateKey], field: str
) -> None:
    changes = {
        "innhold": _flip_last_char(envelope.innhold),
        "melding_id": "00000000-0000-4000-8000-000000000000",
        "melding_type": "no.ks.fiks.bti.logg.v1",
        "signatur": _flip_last_char(envelope.signatur),
    }
    tampered = dataclasses.replace(envelope, **{field: changes[field]})
    with pytest.raises(SignatureInvalid):
        _open(tampered, keys)


def test_a_changed_ciphertext_fails_even_without_a_signature_check(
    envelope: Envelope, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    tampered = dataclasses.replace(envelope, innhold=_flip_last_char(envelope.innhold))
    with pytest.raises(DecryptionFailed, match="tag check"):
        crypto.decrypt(tampered.sealed, keys["recipient"])


def test_wrong_sender_key_fails(envelope: Envelope, keys: dict[str, rsa.RSAPrivateKey]) -> None:
    with pytest.raises(SignatureInvalid):
        _open(envelope, keys, sender_key=keys["stranger"].public_key())


def test_wrong_private_key_cannot_decrypt(
    envelope: Envelope, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    with pytest.raises(DecryptionFailed, match="unwrap"):
        _open(envelope, keys, recipient_key=keys["stranger"])


def test_message_for_another_recipient_is_refused(
    envelope: Envelope, keys: dict[str, rsa.RSAPrivateKey]
) -> None:
    with pytest.raises(WrongRecipient):
        _open(envelope, keys, recipient="someone-else")


def test_keys_round_trip_through_pem(keys: dict[str, rsa.RSAPrivateKey]) -> None:
    pem = crypto.private_key_to_pem(keys["sender"])
    loaded = crypto.load_private_key(pem)
    assert crypto.public_key_to_pem(loaded) == crypto.public_key_to_pem(keys["sender"])
    public = crypto.load_public_key(crypto.public_key_to_pem(keys["sender"]))
    assert public.public_numbers() == keys["sender"].public_key().public_numbers()


def test_small_or_broken_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(KeyInvalid, match="2048"):
        crypto.load_public_key(crypto.public_key_to_pem(small))
    with pytest.raises(KeyInvalid):
        crypto.load_public_key("-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n")


def test_load_or_create_private_key_keeps_the_key(tmp_path: Any) -> None:
    path = tmp_path / "keys" / "key.pem"
    first = crypto.load_or_create_private_key(path)
    second = crypto.load_or_create_private_key(path)
    assert crypto.public_key_to_pem(first) == crypto.public_key_to_pem(second)
    assert path.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"meldingId": "not-a-uuid"}, "meldingId must be a UUID"),
        ({"svarPaMelding": "x"}, "svarPaMelding must be a UUID"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"sendt": "2026-09-07T09:12:00"}, "UTC offset"),
        ({"iv": base64.b64encode(b"short").decode()}, "iv must be 12 bytes"),
        ({"innhold": "***"}, "innhold is not valid base64"),
        ({"mottaker": "bad account!"}, "mottaker"),
        ({"meldingType": "Not A Type"}, "meldingType"),
        ({"ekstra": 1}, "unknown: ['ekstra']"),
    ],
)
def test_envelope_shape_is_checked(
    envelope: Envelope, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(EnvelopeInvalid, match=message.replace("[", r"\[").replace("]", r"\]")):
        Envelope.from_json({**envelope.to_json(), **change})


def test_envelope_missing_field_is_named(envelope: Envelope) -> None:
    data = envelope.to_json()
    del data["signatur"]
    with pytest.raises(EnvelopeInvalid, match="signatur"):
        Envelope.from_json(data)
    assert Envelope.from_json(envelope.to_json()) == envelope
