"""The Fiks IO-style envelope: JSON shape, sealing (encrypt + sign), opening (verify + decrypt)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.fiks import crypto
from connectors.fiks.errors import DecryptionFailed, EnvelopeInvalid, WrongRecipient

__all__ = [
    "FEILET",
    "LOGG",
    "MOTTATT",
    "RECEIPT_TYPES",
    "SAMTYKKE",
    "TILTAK",
    "Envelope",
    "open_envelope",
    "seal",
    "valid_account_id",
    "verify_envelope",
]

LOGG = "no.ks.fiks.bti.logg.v1"
TILTAK = "no.ks.fiks.bti.tiltak.v1"
SAMTYKKE = "no.ks.fiks.bti.samtykke.v1"
MOTTATT = "no.ks.fiks.kvittering.mottatt.v1"
FEILET = "no.ks.fiks.kvittering.feilet.v1"
RECEIPT_TYPES = frozenset({MOTTATT, FEILET})
OSLO = ZoneInfo("Europe/Oslo")

_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MESSAGE_TYPE = re.compile(r"[a-z0-9]+(\.[a-z0-9]+)+")
_FIELDS = (
    "meldingId",
    "meldingType",
    "avsender",
    "mottaker",
    "svarPaMelding",
    "ttl",
    "sendt",
    "nokkel",
    "iv",
    "innhold",
    "signatur",
)


def valid_account_id(value: object) -> bool:
    """Return whether value is an account id: 1-64 of letters, digits, '.', '_', '-'."""
    return isinstance(value, str) and _ACCOUNT.fullmatch(value) is not None


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message as the service stores and delivers it; the content stays encrypted."""

    melding_id: str
    melding_type: str
    avsender: str
    mottaker: str
    svar_pa_melding: str | None
    ttl: int
    sendt: str
    nokkel: str
    iv: str
    innhold: str
    signatur: str

    @property
    def sealed(self) -> crypto.Sealed:
        """Return the encrypted fields."""
        return crypto.Sealed(nokkel=self.nokkel, iv=self.iv, innhold=self.innhold)

    @property
    def sendt_at(self) -> datetime:
        """Return `sendt` as an aware datetime."""
        return datetime.fromisoformat(self.sendt)

    def to_json(self) -> dict[str, Any]:
        """Return the envelope as the JSON object of the contract."""
        values = (
            self.melding_id,
            self.melding_type,
            self.avsender,
            self.mottaker,
            self.svar_pa_melding,
            self.ttl,
            self.sendt,
            self.nokkel,
            self.iv,
            self.innhold,
            self.signatur,
        )
        return dict(zip(_FIELDS, values, strict=True))

    @classmethod
    def from_json(cls, data: object) -> Envelope:
        """Check the shape of a JSON envelope and return it, or raise EnvelopeInvalid."""
        if not isinstance(data, Mapping):
            raise EnvelopeInvalid("the envelope must be a JSON object")
        missing = [name for name in _FIELDS if name not in data]
        unknown = sorted(set(data) - set(_FIELDS))
        if missing or unknown:
            raise EnvelopeInvalid(f"envelope fields missing: {missing}, unknown: {unknown}")
        strings = [name for name in _FIELDS if name not in ("svarPaMelding", "ttl")]
        for name in strings:
            if not isinstance(data[name], str) or not data[name]:
                raise EnvelopeInvalid(f"{name} must be a non-empty string")
        _check_uuid(data["meldingId"], "meldingId")
        if data["svarPaMelding"] is not None:
            _check_uuid(data["svarPaMelding"], "svarPaMelding")
        if not _MESSAGE_TYPE.fullmatch(data["meldingType"]):
            raise EnvelopeInvalid("meldingType must be dotted lower-case, e.g. no.ks.fiks.x.v1")
        for name in ("avsender", "mottaker"):
            if not valid_account_id(data[name]):
                raise EnvelopeInvalid(f"{name} is not an account id")
        ttl = data["ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise EnvelopeInvalid("ttl must be a positive whole number of seconds")
        try:
            sendt = datetime.fromisoformat(data["sendt"])
        except ValueError as exc:
            raise EnvelopeInvalid("sendt must be an ISO-8601 time") from exc
        if sendt.utcoffset() is None:
            raise EnvelopeInvalid("sendt must have a UTC offset")
        for name in ("nokkel", "innhold", "signatur"):
            _check_b64(data[name], name)
        if len(_check_b64(data["iv"], "iv")) != crypto.IV_BYTES:
            raise EnvelopeInvalid(f"iv must be {crypto.IV_BYTES} bytes")
        return cls(*(data[name] for name in _FIELDS))


def _check_uuid(value: object, name: str) -> None:
    try:
        parsed = uuid.UUID(str(value))
    except ValueError as exc:
        raise EnvelopeInvalid(f"{name} must be a UUID") from exc
    if str(parsed) != value:
        raise EnvelopeInvalid(f"{name} must be a UUID in canonical lower-case form")


def _check_b64(value: str, name: str) -> bytes:
    try:
        return crypto.b64decode(value, field=name)
    except ValueError as exc:
        raise EnvelopeInvalid(str(exc)) from exc


def seal(
    *,
    melding_type: str,
    avsender: str,
    mottaker: str,
    payload: Mapping[str, Any],
    recipient_key: rsa.RSAPublicKey,
    sender_key: rsa.RSAPrivateKey,
    ttl: int,
    svar_pa_melding: str | None = None,
    melding_id: str | None = None,
    sendt: datetime | None = None,
) -> Envelope:
    """Encrypt `payload` for the recipient, sign it as the sender and return the envelope."""
    melding_id = melding_id or str(uuid.uuid4())
    sent = (sendt or datetime.now(OSLO)).isoformat(timespec="milliseconds")
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
    sealed = crypto.encrypt(body, recipient_key)
    signature = crypto.sign(melding_id, melding_type, sealed.innhold, sender_key)
    envelope = Envelope(
        melding_id=melding_id,
        melding_type=melding_type,
        avsender=avsender,
        mottaker=mottaker,
        svar_pa_melding=svar_pa_melding,
        ttl=ttl,
        sendt=sent,
        nokkel=sealed.nokkel,
        iv=sealed.iv,
        innhold=sealed.innhold,
        signatur=signature,
    )
    # the same checks the service makes: a sender finds its own mistakes first
    return Envelope.from_json(envelope.to_json())


def verify_envelope(envelope: Envelope, sender_key: rsa.RSAPublicKey) -> None:
    """Check the envelope's signature with the sender's key, or raise SignatureInvalid."""
    crypto.verify(
        envelope.melding_id,
        envelope.melding_type,
        envelope.innhold,
        envelope.signatur,
        sender_key,
    )


def open_envelope(
    envelope: Envelope,
    *,
    sender_key: rsa.RSAPublicKey,
    recipient_key: rsa.RSAPrivateKey,
    recipient: str | None = None,
) -> dict[str, Any]:
    """Verify, decrypt and parse the payload (a JSON object), or raise a CryptoError."""
    if recipient is not None and envelope.mottaker != recipient:
        raise WrongRecipient(
            f"message {envelope.melding_id} is for {envelope.mottaker!r}, not {recipient!r}"
        )
    verify_envelope(envelope, sender_key)
    plaintext = crypto.decrypt(envelope.sealed, recipient_key)
    try:
        payload = json.loads(plaintext)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DecryptionFailed("the decrypted content is not JSON") from exc
    if not isinstance(payload, dict):
        raise DecryptionFailed("the decrypted content is not a JSON object")
    return payload
