"""A client of the Fiks IO-style message service (the child-welfare connector, simulator tests).

`send` encrypts for the recipient's public key (fetched from the service) and signs with the
account's private key; `receive` leases messages, verifies each signature against the
sender's public key and decrypts. The service may drop or duplicate any message, receipts
included: resend until a receipt arrives, and deduplicate by message id and business id.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.fiks import crypto
from connectors.fiks.envelope import (
    FEILET,
    MOTTATT,
    RECEIPT_TYPES,
    Envelope,
    open_envelope,
    seal,
)
from connectors.fiks.errors import (
    EnvelopeInvalid,
    FiksError,
    FiksRequestFailed,
    SignatureInvalid,
)

__all__ = [
    "DecryptedMessage",
    "FiksClient",
    "ReceivedBatch",
    "RejectedMessage",
    "register_account",
]

log = logging.getLogger(__name__)

TOKEN_HEADER = "X-Fiks-Token"  # noqa: S105 - a header name, not a secret


@dataclass(frozen=True, slots=True)
class DecryptedMessage:
    """A verified, decrypted message; `payload` is the JSON object that was sent."""

    message_id: str
    message_type: str
    sender: str
    recipient: str
    reply_to: str | None
    sent: datetime
    ttl: int
    payload: dict[str, Any]

    @property
    def is_receipt(self) -> bool:
        """Return whether this is a `mottatt` or `feilet` receipt."""
        return self.message_type in RECEIPT_TYPES


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """A received message that failed verification or decryption, with the reason."""

    envelope: Envelope
    error: FiksError


@dataclass(frozen=True, slots=True)
class ReceivedBatch:
    """One inbox read: the good messages and the rejected ones (neither yet acknowledged)."""

    messages: list[DecryptedMessage]
    rejected: list[RejectedMessage]


def _check(response: httpx.Response) -> Any:
    if response.is_success:
        return response.json()
    try:
        detail = str(response.json().get("detail", response.text))
    except ValueError:
        detail = response.text
    raise FiksRequestFailed(response.status_code, detail)


def register_account(
    http: httpx.Client,
    base_url: str,
    account: str,
    private_key: rsa.RSAPrivateKey,
    *,
    token: str | None = None,
) -> str:
    """Register `account` with its public key (re-key it if `token` is given); return the token."""
    headers = {TOKEN_HEADER: token} if token else {}
    body: dict[str, Any] = {
        "konto": account,
        "offentligNokkel": crypto.public_key_to_pem(private_key),
    }
    if token:
        body["token"] = token
    answer = _check(http.post(f"{base_url}/fiks/kontoer", json=body, headers=headers))
    return str(answer["token"])


class FiksClient:
    """One account's view of the message service. Thread-safe if `http` is."""

    def __init__(
        self,
        base_url: str,
        account: str,
        token: str,
        private_key: rsa.RSAPrivateKey,
        http: httpx.Client,
        *,
        ttl_s: int = 86_400,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.account = account
        self._headers = {TOKEN_HEADER: token}
        self._key = private_key
        self._http = http
        self._ttl_s = ttl_s
        self._public_keys: dict[str, rsa.RSAPublicKey] = {}

    def public_key(self, account: str, *, refresh: bool = False) -> rsa.RSAPublicKey:
        """Return an account's public key, fetched once and cached."""
        if refresh or account not in self._public_keys:
            url = f"{self.base_url}/fiks/kontoer/{quote(account, safe='')}/offentlig-nokkel"
            answer = _check(self._http.get(url, headers=self._headers))
            self._public_keys[account] = crypto.load_public_key(answer["offentligNokkel"])
        return self._public_keys[account]

    def send(
        self,
        recipient: str,
        message_type: str,
        payload: Mapping[str, Any],
        reply_to: str | None = None,
        *,
        message_id: str | None = None,
        ttl_s: int | None = None,
        sent: datetime | None = None,
    ) -> str:
        """Encrypt, sign and send a message; return its id (pass it and `sent` to resend)."""
        envelope = seal(
            melding_type=message_type,
            avsender=self.account,
            mottaker=recipient,
            payload=payload,
            recipient_key=self.public_key(recipient),
            sender_key=self._key,
            ttl=ttl_s or self._ttl_s,
            svar_pa_melding=reply_to,
            melding_id=message_id,
            sendt=sent,
        )
        return self.send_envelope(envelope)

    def send_envelope(self, envelope: Envelope) -> str:
        """Post a ready envelope and return its message id."""
        url = f"{self.base_url}/fiks/send"
        answer = _check(self._http.post(url, json=envelope.to_json(), headers=self._headers))
        return str(answer["meldingId"])

    def receive(self, max_messages: int = 10) -> list[DecryptedMessage]:
        """Lease, verify and decrypt up to `max_messages` messages; `ack` each once applied."""
        # messages that fail verification or decryption are not returned: each is answered
        # with a feilet receipt (unless a receipt itself), acknowledged and logged
        batch = self.receive_batch(max_messages)
        for rejected in batch.rejected:
            self.reject(rejected)
        return batch.messages

    def receive_batch(self, max_messages: int = 10) -> ReceivedBatch:
        """Lease up to `max_messages` messages and sort them into good and rejected."""
        url = f"{self.base_url}/fiks/innboks/{quote(self.account, safe='')}"
        answer = _check(self._http.get(url, params={"maks": max_messages}, headers=self._headers))
        messages: list[DecryptedMessage] = []
        rejected: list[RejectedMessage] = []
        for raw in answer["meldinger"]:
            try:
                envelope = Envelope.from_json(raw)
            except EnvelopeInvalid as exc:
                log.warning("skipping a malformed envelope from the service: %s", exc)
                continue
            try:
                messages.append(self._open(envelope))
            except FiksError as exc:
                rejected.append(RejectedMessage(envelope, exc))
        return ReceivedBatch(messages, rejected)

    def ack(self, message_id: str) -> bool:
        """Acknowledge a received message; False if nothing was left to acknowledge."""
        url = (
            f"{self.base_url}/fiks/innboks/{quote(self.account, safe='')}/"
            f"{quote(message_id, safe='')}/ack"
        )
        try:
            _check(self._http.post(url, headers=self._headers))
        except FiksRequestFailed as exc:
            if exc.status_code == 404:
                return False
            raise
        return True

    def reply_received(self, message: DecryptedMessage) -> str:
        """Send a `mottatt` receipt for a message and return the receipt's id."""
        return self.send(message.sender, MOTTATT, {}, reply_to=message.message_id)

    def reply_failed(self, message: DecryptedMessage | Envelope, reason: str) -> str:
        """Send a `feilet` receipt with `reason` and return the receipt's id."""
        if isinstance(message, Envelope):
            sender, message_id = message.avsender, message.melding_id
        else:
            sender, message_id = message.sender, message.message_id
        return self.send(sender, FEILET, {"feilmelding": reason}, reply_to=message_id)

    def reject(self, rejected: RejectedMessage) -> None:
        """Answer a rejected message with `feilet` (unless a receipt) and acknowledge it."""
        envelope = rejected.envelope
        log.warning("rejecting message %s: %s", envelope.melding_id, rejected.error)
        if envelope.melding_type not in RECEIPT_TYPES:
            try:
                self.reply_failed(envelope, str(rejected.error))
            except FiksError as exc:
                log.warning("feilet receipt for %s not sent: %s", envelope.melding_id, exc)
        self.ack(envelope.melding_id)

    def _open(self, envelope: Envelope) -> DecryptedMessage:
        try:
            payload = self._decrypt(envelope, refresh=False)
        except SignatureInvalid:
            # the sender may have rotated its key since we cached it
            payload = self._decrypt(envelope, refresh=True)
        return DecryptedMessage(
            message_id=envelope.melding_id,
            message_type=envelope.melding_type,
            sender=envelope.avsender,
            recipient=envelope.mottaker,
            reply_to=envelope.svar_pa_melding,
            sent=envelope.sendt_at,
            ttl=envelope.ttl,
            payload=payload,
        )

    def _decrypt(self, envelope: Envelope, *, refresh: bool) -> dict[str, Any]:
        return open_envelope(
            envelope,
            sender_key=self.public_key(envelope.avsender, refresh=refresh),
            recipient_key=self._key,
            recipient=self.account,
        )
