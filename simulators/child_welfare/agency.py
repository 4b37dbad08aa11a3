"""The child-welfare agency's own case system, which talks to Stafett only through messages."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

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
from simulators.child_welfare import cases
from simulators.child_welfare.errors import FiksError, NotLeased
from simulators.child_welfare.mailbox import MessageService
from simulators.child_welfare.payloads import KINDS, kind_of, parse_payload
from simulators.common.clock import Clock
from simulators.common.store import JsonStore

__all__ = ["Agency", "AgencyLoop"]

log = logging.getLogger(__name__)

PENDING = "venter"


class Agency:
    """The agency's case system: caseworker records out, Stafett's records in, with receipts.

    A caseworker change is stored and queued in the outbox (`utboks`). Each `tick()` reads
    the agency's inbox (records are applied idempotently, by message id and by business id,
    and answered with a `mottatt` or `feilet` receipt; receipts settle outbox entries) and
    sends every pending outbox entry whose turn has come: again every `resend_interval_s`,
    with the same message id, until a receipt arrives or its ttl has run out. A newer
    version of the same record supersedes (`erstattet`) a pending older one.
    """

    def __init__(
        self,
        *,
        mailbox: MessageService,
        store: JsonStore,
        account: str,
        private_key: rsa.RSAPrivateKey,
        stafett_account: str,
        ttl_s: int = 86_400,
        resend_interval_s: float = 10.0,
        max_batch: int = 100,
        now: Callable[[], float] = time.time,
        clock: Clock | None = None,
    ) -> None:
        self.account = account
        self.stafett_account = stafett_account
        self._mailbox = mailbox
        self._store = store
        self._key = private_key
        self._ttl_s = ttl_s
        self._resend_s = resend_interval_s
        self._max_batch = max_batch
        self._now = now
        self._clock = clock or Clock()

    def register(self) -> None:
        """Register (or re-key) the agency's account with the message service."""
        with self._store.transaction() as data:
            if data["token"] is None:
                data["token"] = secrets.token_urlsafe(24)
            token: str = data["token"]
        self._mailbox.register(
            account=self.account,
            public_key_pem=crypto.public_key_to_pem(self._key),
            token=token,
            presented_token=token,
        )

    def record(
        self, kind_name: str, changes: dict[str, Any], business_id: str | None = None
    ) -> dict[str, Any]:
        """Store a caseworker's change and queue it for Stafett; return the record."""
        kind = KINDS[kind_name]
        sendt = self._clock.tick()
        with self._store.transaction() as data:
            record, changed = cases.save_local(
                data, kind=kind, changes=changes, business_id=business_id, sendt=sendt
            )
            if changed:
                self._enqueue(data, kind_name, record, sendt)
            return dict(record)

    def is_empty(self) -> bool:
        """Return whether the agency has no records."""
        data = self._store.snapshot()
        return not any(data[collection] for collection in cases.COLLECTIONS.values())

    def tick(self) -> None:
        """Handle the inbox once, then send what is due."""
        self._process_inbox()
        self._send_due()

    def snapshot(self) -> dict[str, Any]:
        """Return the agency's store for `GET /_sim/sak` (without its token)."""
        data = self._store.snapshot()
        data.pop("token", None)
        data["konto"] = self.account
        data["stafettKonto"] = self.stafett_account
        return data

    def _enqueue(
        self, data: dict[str, Any], kind_name: str, record: dict[str, Any], sendt: datetime
    ) -> None:
        kind = KINDS[kind_name]
        business_id = record[kind.id_field]
        for entry in data["utboks"].values():
            if entry["status"] == PENDING and (entry["type"], entry["forretningsId"]) == (
                kind_name,
                business_id,
            ):
                entry["status"] = "erstattet"
        now = self._now()
        melding_id = str(uuid.uuid4())
        data["utboks"][melding_id] = {
            "meldingId": melding_id,
            "meldingType": kind.melding_type,
            "type": kind_name,
            "egenId": record["id"],
            "forretningsId": business_id,
            "mottaker": self.stafett_account,
            "innhold": cases.wire_payload(kind, record),
            "sendt": sendt.isoformat(timespec="milliseconds"),
            "status": PENDING,
            "forsok": 0,
            "nesteForsok": now,
            "utloper": now + self._ttl_s,
            "sisteFeil": None,
            "feilmelding": None,
        }

    def _send_due(self) -> None:
        now = self._now()
        with self._store.transaction() as data:
            for entry in data["utboks"].values():
                if entry["status"] != PENDING or entry["nesteForsok"] > now:
                    continue
                if now >= entry["utloper"]:
                    entry["status"] = "utlopt"
                    continue
                entry["forsok"] += 1
                entry["nesteForsok"] = now + self._resend_s
                try:
                    self._mailbox.send(sender=self.account, envelope=self._seal(entry, now))
                except FiksError as exc:
                    if entry["sisteFeil"] != str(exc):  # once per cause, not every resend
                        log.warning("sending %s failed: %s", entry["meldingId"], exc)
                    entry["sisteFeil"] = str(exc)
                else:
                    entry["sisteFeil"] = None

    def _seal(self, entry: dict[str, Any], now: float) -> Envelope:
        return seal(
            melding_type=entry["meldingType"],
            avsender=self.account,
            mottaker=entry["mottaker"],
            payload=entry["innhold"],
            recipient_key=self._mailbox.public_key(entry["mottaker"]),
            sender_key=self._key,
            # a resend carries what is left of the ttl, so no copy outlives the first
            ttl=max(1, int(entry["utloper"] - now)),
            melding_id=entry["meldingId"],
            sendt=datetime.fromisoformat(entry["sendt"]),
        )

    def _process_inbox(self) -> None:
        for envelope in self._mailbox.receive(account=self.account, max_messages=self._max_batch):
            try:
                if envelope.melding_type in RECEIPT_TYPES:
                    self._handle_receipt(envelope)
                else:
                    self._handle_record(envelope)
            except Exception:
                # left unacknowledged: the message comes back when its lease ends
                log.exception("handling message %s failed", envelope.melding_id)
                continue
            # a second copy in the same batch is gone already: the first ack removed both
            with contextlib.suppress(NotLeased):
                self._mailbox.ack(account=self.account, melding_id=envelope.melding_id)

    def _handle_record(self, envelope: Envelope) -> None:
        with self._store.transaction() as data:
            stats = data["statistikk"]
            stats["mottatt"] += 1
            done = data["behandlet"].get(envelope.melding_id)
            if done is not None:
                stats["duplikater"] += 1
            else:
                done = self._apply(data, envelope)
                data["behandlet"][envelope.melding_id] = done
        # answered again for a duplicate: the sender resends because our receipt got lost
        self._reply(envelope, done["kvittering"], done["svar"])

    def _apply(self, data: dict[str, Any], envelope: Envelope) -> dict[str, Any]:
        stats = data["statistikk"]
        try:
            kind = kind_of(envelope.melding_type)
            raw = open_envelope(
                envelope,
                sender_key=self._mailbox.public_key(envelope.avsender),
                recipient_key=self._key,
                recipient=self.account,
            )
            payload = parse_payload(kind, raw)
        except FiksError as exc:
            stats["feilet"] += 1
            log.warning("message %s rejected: %s", envelope.melding_id, exc)
            return self._done(envelope, FEILET, {"feilmelding": str(exc)}, None)
        outcome = cases.apply_incoming(
            data, kind=kind, payload=payload, sendt=envelope.sendt_at, avsender=envelope.avsender
        )
        stats[outcome.value] += 1
        return self._done(envelope, MOTTATT, {}, outcome.value)

    def _done(
        self, envelope: Envelope, receipt: str, answer: dict[str, Any], outcome: str | None
    ) -> dict[str, Any]:
        return {
            "meldingType": envelope.melding_type,
            "avsender": envelope.avsender,
            "mottattTid": self._clock.now().isoformat(timespec="milliseconds"),
            "resultat": outcome,
            "kvittering": receipt,
            "svar": answer,
        }

    def _handle_receipt(self, envelope: Envelope) -> None:
        try:
            answer = open_envelope(
                envelope,
                sender_key=self._mailbox.public_key(envelope.avsender),
                recipient_key=self._key,
                recipient=self.account,
            )
        except FiksError as exc:
            log.warning("receipt %s ignored: %s", envelope.melding_id, exc)
            return
        with self._store.transaction() as data:
            data["statistikk"]["kvitteringer"] += 1
            entry = data["utboks"].get(envelope.svar_pa_melding or "")
            if entry is None or entry["status"] not in (PENDING, "erstattet", "utlopt"):
                return
            if envelope.melding_type == MOTTATT:
                entry["status"] = "mottatt"
            else:
                entry["status"] = "feilet"
                entry["feilmelding"] = str(answer.get("feilmelding", ""))
            entry["kvittertTid"] = self._clock.now().isoformat(timespec="milliseconds")

    def _reply(self, envelope: Envelope, melding_type: str, payload: dict[str, Any]) -> None:
        try:
            receipt = seal(
                melding_type=melding_type,
                avsender=self.account,
                mottaker=envelope.avsender,
                payload=payload,
                recipient_key=self._mailbox.public_key(envelope.avsender),
                sender_key=self._key,
                ttl=self._ttl_s,
                svar_pa_melding=envelope.melding_id,
            )
            self._mailbox.send(sender=self.account, envelope=receipt)
        except FiksError as exc:
            log.warning("receipt for %s not sent: %s", envelope.melding_id, exc)


class AgencyLoop:
    """Runs `Agency.tick()` every `interval_s` in a daemon thread until stopped."""

    def __init__(self, agency: Agency, interval_s: float) -> None:
        self._agency = agency
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="barnevern-agency", daemon=True)

    def start(self) -> None:
        """Start the loop."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for the current tick to end."""
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            try:
                self._agency.tick()
            except Exception:
                log.exception("agency tick failed")
