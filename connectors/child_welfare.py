"""The child-welfare system (barnevern): Fiks IO-style messages, signed, encrypted and lossy.

The connector holds accounts on the message service (`connectors.fiks`); the agency answers
every message with a receipt to its sender, so the source and the sink each need their own.

Source: reads the inbox (verified and decrypted), maps `logg`, `tiltak` and `samtykke`
payloads to transaction Bundles (with a Provenance) and returns them to the runtime, which
publishes them and then stores the checkpoint. The next poll sees that checkpoint and only
then acknowledges the messages and answers `mottatt` (or `feilet` with the mapping error,
beside a dead letter). A crash before that leaves the messages leased: they come back with
the same event ids (derived from `meldingId`), which Stafett applies once. A version older
than one already sent is skipped (and receipted). A consent carries the child's newest log
(kept in the checkpoint), so a log that came before its consent, and was refused for want of
it, is written with it.

Consents: the samtykke message carries no signed form, and Stafett records a service's
Consent only with one. `consent_form_url` (`{id}` = samtykkeId) names where the agency
archives the signed forms; without it the agency's consents are refused by Stafett.

Sink: sends Stafett's measures (`tiltak`), consents (`samtykke`) and the agency's own log
(`logg`, when someone else changed it in Stafett) to the agency and waits for the receipt,
resending the same `meldingId` (derived from the delivery's event id) until `mottatt`; a
`feilet` receipt is a PermanentError (dead letter), no receipt in time a retry. A grant sends
the child's measures and consents; a revocation sends the child's consents that are no longer
active, as withdrawn. The identifiers of the child and guardians are kept in a state file, so
a withdrawal can still be told after the agency lost access.

Settings: `service_url`, `account`, `token`, `private_key_path` (created if missing),
`register_account` (register or re-key the account with the simulator's API), `ttl_s`,
`timeout_s`; source: `max_messages`, `consent_form_url`; sink: `agency_account`,
`resend_interval_s`, `receipt_timeout_s`, `state_dir`, `stafett_url`, `stafett_token`
(`system/*.rs`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from bus import Envelope, EventType
from connectors.base import DeadRecord, PermanentError, SourceBatch, SourceRecord
from connectors.checkpoints import FileCheckpointStore
from connectors.config import ConnectorConfig
from connectors.fiks import (
    LOGG,
    MOTTATT,
    SAMTYKKE,
    TILTAK,
    DecryptedMessage,
    FiksClient,
    FiksError,
    RejectedMessage,
    load_or_create_private_key,
    register_account,
)
from connectors.provenance import with_provenance
from connectors.stafett import StafettClient, references_in
from mapping import MappingEngine, MappingError, MappingResult, transaction_bundle

__all__ = [
    "ChildWelfareSink",
    "ChildWelfareSource",
    "FiksAccount",
    "KnownIdentities",
    "StafettReader",
    "recorded_on_behalf",
    "sink",
    "source",
    "version_key",
]

SYSTEM = "barnevern"
OSLO = ZoneInfo("Europe/Oslo")
_log = logging.getLogger("stafett.connectors.child_welfare")
_NAMESPACE = uuid.UUID("8b0f3c2e-6d5a-4f1b-a7c9-2e4d6f8a0b13")
_KINDS = {LOGG: "logg", TILTAK: "tiltak", SAMTYKKE: "samtykke"}
_BUSINESS_ID = {"logg": "fnr", "tiltak": "tiltakId", "samtykke": "samtykkeId"}
_OUTBOUND = {"Task": TILTAK, "Consent": SAMTYKKE, "CarePlan": LOGG}
_KEPT = ("Patient/", "RelatedPerson/")
_engine: MappingEngine | None = None


def _mappings() -> MappingEngine:
    global _engine  # noqa: PLW0603 - compiled once per process, shared by the connectors
    if _engine is None:
        _engine = MappingEngine.from_directory()
    return _engine


def _sid(config: ConnectorConfig, kind: str) -> str:
    return f"https://stafett.no/fhir/sid/{config.operator}/{config.source_system}/{kind}"


def _context(config: ConnectorConfig, **extra: Any) -> dict[str, Any]:
    return {
        "operator_orgnr": config.operator,
        "source_system": config.source_system,
        "unit_orgnr": config.organization,
        **extra,
    }


def recorded_on_behalf(
    result: MappingResult, form_url: str | None, *, signed_by_youth: bool = False
) -> MappingResult:
    """Return the result with its Consents naming the signed form (and signer) Stafett needs."""
    # Stafett records a service's Consent only with the signed form and a signer who may
    # consent (consent/README.md); the vendors' messages carry neither form nor, for NAV, a
    # signer, so the operator says where the vendor archives the forms and who signs
    entries = []
    for entry in result.entries:
        resource = dict(entry.resource)
        if resource.get("resourceType") == "Consent":
            vendor_id = next((i.get("value") for i in resource.get("identifier") or []), "")
            if form_url:
                resource["sourceAttachment"] = {
                    "contentType": "application/pdf",
                    "url": form_url.format(id=vendor_id),
                    "title": f"Signert samtykke {vendor_id}",
                }
            if signed_by_youth and not resource.get("performer"):
                resource["performer"] = [dict(resource["patient"])]
        entries.append(replace(entry, resource=resource))
    return replace(result, entries=tuple(entries))


class FiksAccount:
    """One account on the message service: its key, token and client, set up on first use."""

    def __init__(self, config: ConnectorConfig) -> None:
        settings = config.settings
        try:
            self.base_url = str(settings["service_url"]).rstrip("/")
            self.name = str(settings["account"])
            self._token = str(settings["token"])
            self._key_path = Path(str(settings["private_key_path"]))
        except KeyError as exc:
            raise ValueError(f"connector {config.name}: settings.{exc.args[0]} is missing") from exc
        self._register = bool(settings.get("register_account", False))
        self._ttl_s = int(settings.get("ttl_s", 86_400))
        self._http = httpx.Client(timeout=float(settings.get("timeout_s", 10)))
        self._client: FiksClient | None = None

    def client(self) -> FiksClient:
        """Return the client, registering (or re-keying) the account first if configured."""
        if self._client is None:
            key = load_or_create_private_key(self._key_path)
            token = self._token
            if self._register:
                token = register_account(self._http, self.base_url, self.name, key, token=token)
            self._client = FiksClient(
                self.base_url, self.name, token, key, self._http, ttl_s=self._ttl_s
            )
        return self._client

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


@dataclass
class _Answer:
    """How to answer a handled message once its batch is published."""

    message: DecryptedMessage | None = None
    rejected: RejectedMessage | None = None
    failure: str | None = None


@dataclass
class _Children:
    """What the checkpoint keeps: each child's newest log, and each record's newest version."""

    logs: dict[str, dict[str, Any]] = field(default_factory=dict)  # fnr -> payload and sent
    versions: dict[str, str] = field(default_factory=dict)  # kind/business id -> sent

    @classmethod
    def load(cls, checkpoint: Mapping[str, Any] | None) -> _Children:
        data = checkpoint or {}
        return cls(dict(data.get("logs") or {}), dict(data.get("versions") or {}))

    def dump(self) -> dict[str, Any]:
        return {"logs": self.logs, "versions": self.versions}

    def is_stale(self, key: str, sent: datetime) -> bool:
        newest = self.versions.get(key)
        return newest is not None and sent < datetime.fromisoformat(newest)

    def keep(self, key: str, sent: str, log: Mapping[str, Any] | None = None) -> None:
        self.versions[key] = sent
        if log is not None:
            self.logs[str(log["fnr"])] = {"payload": dict(log), "sent": sent}


class ChildWelfareSource:
    """Reads the agency's messages from the inbox and maps each to a transaction Bundle."""

    def __init__(self, config: ConnectorConfig, account: FiksAccount) -> None:
        self._config = config
        self._account = account
        self._max = int(config.settings.get("max_messages", 50))
        self._form_url = config.settings.get("consent_form_url")
        self._pending: tuple[str, SourceBatch, list[_Answer]] | None = None

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        """Answer the published batch, then read, map and return the next one."""
        if self._pending is not None:
            batch_id, batch, answers = self._pending
            if (checkpoint or {}).get("batch") != batch_id:
                return batch  # the runtime did not publish it: the same records again
            self._answer(answers)
            self._pending = None
        children = _Children.load(checkpoint)
        received = self._account.client().receive_batch(self._max)
        records: list[SourceRecord] = []
        dead: list[DeadRecord] = []
        answers = [_Answer(rejected=r) for r in received.rejected]
        dead += [
            DeadRecord(f"fiks/{r.envelope.melding_id}", str(r.error), r.envelope.to_json())
            for r in received.rejected
        ]
        seen: set[str] = set()
        for message in received.messages:
            if message.message_id in seen:
                continue  # a duplicate in the same read: acknowledging one removes both
            seen.add(message.message_id)
            answer = _Answer(message)
            answers.append(answer)
            if message.is_receipt:
                continue  # receipts of our receipts are never sent; nothing else to settle
            try:
                record = self._record(message, children)
            except MappingError as exc:
                answer.failure = str(exc)
                fnr = str(message.payload.get("fnr") or "")
                dead.append(
                    DeadRecord(f"fiks/{message.message_id}", str(exc), message.payload, fnr)
                )
                continue
            if record is not None:
                records.append(record)
        if not answers:
            return SourceBatch()
        batch_id = uuid.uuid4().hex
        batch = SourceBatch(
            records, dead, checkpoint={"batch": batch_id, **children.dump()}, more=True
        )
        self._pending = (batch_id, batch, answers)
        return batch

    def _record(self, message: DecryptedMessage, children: _Children) -> SourceRecord | None:
        kind = _KINDS.get(message.message_type)
        if kind is None:
            raise MappingError(f"unknown message type {message.message_type}", system=SYSTEM)
        payload = message.payload
        fnr = str(payload.get("fnr") or "")
        business_id = str(payload.get(_BUSINESS_ID[kind]) or "")
        key = f"{kind}/{business_id}"
        if children.is_stale(key, message.sent):
            return None  # an older version that came late: the newer one is in Stafett
        sent = message.sent.isoformat(timespec="milliseconds")
        results = self._map(kind, payload, sent, fnr, children)
        children.keep(key, sent, payload if kind == "logg" else None)
        if all(result.is_skipped for result in results):
            return None
        bundle = with_provenance(
            transaction_bundle(results),
            unit_orgnr=self._config.organization,
            record_system=_sid(self._config, kind),
            record_id=business_id,
            display=f"{kind} {business_id} fra barnevernet (Fiks-melding {message.message_id})",
            occurred=sent,
        )
        return SourceRecord(
            # one id per Fiks message: a resent or duplicated copy is applied once
            event_id=str(uuid.uuid5(_NAMESPACE, f"{self._account.name}|{message.message_id}")),
            subject=fnr,
            payload=bundle,
            record_id=key,
            correlation_id=message.message_id,
        )

    def _map(
        self, kind: str, payload: Mapping[str, Any], sent: str, fnr: str, children: _Children
    ) -> list[MappingResult]:
        engine = _mappings()
        context = _context(self._config, sent=sent)
        if kind == "tiltak":
            if fnr in children.logs:  # based on the agency's own log, not any log of the child
                context["careplan"] = f"CarePlan?identifier={_sid(self._config, 'logg')}|{fnr}"
            return [engine.map(SYSTEM, "inbound", "tiltak", payload, context)]
        if kind == "logg":
            return [engine.map(SYSTEM, "inbound", "logg", payload, context)]
        consent = engine.map(SYSTEM, "inbound", "samtykke", payload, context)
        results = [recorded_on_behalf(consent, self._form_url)]
        log = children.logs.get(fnr)
        if log is not None and not payload.get("trukket"):
            # the log travels with its consent: a log sent first was refused for want of it
            log_context = _context(self._config, sent=log["sent"])
            results.append(engine.map(SYSTEM, "inbound", "logg", log["payload"], log_context))
        return results

    def _answer(self, answers: list[_Answer]) -> None:
        fiks = self._account.client()
        for answer in answers:
            try:
                if answer.rejected is not None:
                    fiks.reject(answer.rejected)
                    continue
                message = answer.message
                assert message is not None
                fiks.ack(message.message_id)
                if message.is_receipt:
                    continue
                if answer.failure is not None:
                    fiks.reply_failed(message, answer.failure)
                else:
                    fiks.reply_received(message)
            except (FiksError, httpx.HTTPError) as exc:
                # the agency resends what has no receipt; Stafett drops the repeated event id
                _log.warning("answering a child-welfare message failed: %s", exc)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._account.close()


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """One message for the agency, sent again with the same id until a receipt comes."""

    message_id: str
    message_type: str
    payload: dict[str, Any]
    sent: datetime
    about: str


class KnownIdentities:
    """Fødselsnumre of children and guardians learnt while permitted, kept in a state file."""

    def __init__(self, stafett: StafettReader, directory: Path, name: str) -> None:
        self._stafett = stafett
        # created on the first save: building the sink (also `connectors check`) writes nothing
        self._store = FileCheckpointStore(directory, create=False)
        self._key = f"{name}.identities"
        self._known: dict[str, list[dict[str, Any]]] = dict(self._store.load(self._key) or {})

    def learn_family(self, patient: str) -> None:
        """Remember the child's and the guardians' identifiers while they may be read."""
        guardians = self._stafett.search("RelatedPerson", {"patient": patient})
        self.resolve({patient, *(f"RelatedPerson/{g['id']}" for g in guardians)})

    def resolve(self, references: set[str]) -> dict[str, list[dict[str, Any]]]:
        """Return identifiers of the references: read now, or remembered from earlier."""
        found = self._stafett.identifiers(references)
        learnt = {r: ids for r, ids in found.items() if r.startswith(_KEPT) and ids}
        if any(self._known.get(r) != ids for r, ids in learnt.items()):
            self._known.update(learnt)
            self._store.save(self._key, self._known)
        return {**{r: self._known[r] for r in references if r in self._known}, **found}


class ChildWelfareSink:
    """Sends Stafett's deliveries for the agency as messages, until each is receipted."""

    def __init__(
        self, config: ConnectorConfig, account: FiksAccount, stafett: StafettReader
    ) -> None:
        settings = config.settings
        self._config = config
        self._account = account
        self._stafett = stafett
        self._agency = str(settings.get("agency_account", "barnevern"))
        self._resend_s = float(settings.get("resend_interval_s", 10))
        self._timeout_s = float(settings.get("receipt_timeout_s", 30))
        state_dir = Path(str(settings.get("state_dir", ".stafett/connectors")))
        self._identities = KnownIdentities(stafett, state_dir, config.name)

    def put(self, envelope: Envelope) -> None:
        """Turn one delivery or notice into messages and send them until receipted."""
        messages = self._messages(envelope)
        if messages:
            self._send_until_receipted(messages)

    def _messages(self, envelope: Envelope) -> list[_Outgoing]:
        if envelope.event_type == EventType.CONSENT_REVOKED:
            return self._withdrawn(envelope)
        if envelope.event_type == EventType.CONSENT_GRANTED:
            return self._granted(envelope)
        if envelope.event_type != EventType.DELIVERY or not envelope.payload:
            return []  # deletions and reminders have no message in this format
        resource = envelope.payload
        if resource.get("resourceType") == "Patient":
            self._stafett.remember(
                f"Patient/{resource['id']}", list(resource.get("identifier") or [])
            )
            return []
        outgoing = self._outgoing(resource, envelope, "")
        return [outgoing] if outgoing is not None else []

    def _granted(self, envelope: Envelope) -> list[_Outgoing]:
        # the agency may now see the child: send what it could not be sent before
        patient = f"Patient/{envelope.subject_key}"
        self._identities.learn_family(patient)
        found = [
            *self._stafett.search("Task", {"patient": patient}),
            *self._stafett.search("Consent", {"patient": patient}),
        ]
        mine = (_sid(self._config, "tiltak"), _sid(self._config, "samtykke"))
        return [
            outgoing
            for resource in found
            if not any(i.get("system") in mine for i in resource.get("identifier") or [])
            and (outgoing := self._outgoing(resource, envelope, version_key(resource))) is not None
        ]

    def _withdrawn(self, envelope: Envelope) -> list[_Outgoing]:
        # consents that name the agency stay readable to it after a withdrawal
        found = self._stafett.search("Consent", {"patient": f"Patient/{envelope.subject_key}"})
        return [
            outgoing
            for consent in found
            if consent.get("status") != "active"
            and (outgoing := self._outgoing(consent, envelope, version_key(consent))) is not None
        ]

    def _outgoing(
        self, resource: dict[str, Any], envelope: Envelope, part: str
    ) -> _Outgoing | None:
        resource_type = str(resource.get("resourceType"))
        message_type = _OUTBOUND.get(resource_type)
        if message_type is None:
            return None
        record: Any = resource
        if resource_type == "CarePlan":
            if not _has_identifier(resource, _sid(self._config, "logg")):
                return None  # another service's log: the agency keeps one log per child
            record = [resource, *self._care_teams(resource)]
        context = _context(
            self._config, identifiers=self._identities.resolve(references_in(record))
        )
        try:
            result = _mappings().map(SYSTEM, "outbound", resource_type, record, context)
        except MappingError as exc:
            raise PermanentError(str(exc)) from exc
        if result.record is None:
            return None  # not for this system (e.g. a level Task or a draft Consent)
        key = f"{self._account.name}|{envelope.event_id}|{part}"
        return _Outgoing(
            message_id=str(uuid.uuid5(_NAMESPACE, key)),
            message_type=message_type,
            payload=result.record,
            sent=envelope.occurred_at.astimezone(OSLO),
            about=f"{resource_type}/{resource.get('id')}",
        )

    def _care_teams(self, careplan: Mapping[str, Any]) -> list[dict[str, Any]]:
        teams = (self._stafett.read(ref) for ref in sorted(references_in(careplan.get("careTeam"))))
        return [team for team in teams if team is not None]

    def _send_until_receipted(self, messages: list[_Outgoing]) -> None:
        fiks = self._account.client()
        pending = {m.message_id: m for m in messages}
        failed: list[str] = []
        deadline = time.monotonic() + self._timeout_s
        resend_at = 0.0
        while pending:
            now = time.monotonic()
            if now >= resend_at:
                for m in pending.values():
                    fiks.send(
                        self._agency,
                        m.message_type,
                        m.payload,
                        message_id=m.message_id,
                        sent=m.sent,
                    )
                resend_at = now + self._resend_s
            for receipt in self._receipts(fiks):
                done = pending.pop(receipt.reply_to or "", None)
                if done is not None and receipt.message_type != MOTTATT:
                    reason = str(receipt.payload.get("feilmelding") or "no reason given")
                    failed.append(f"{done.about}: {reason}")
            if not pending:
                break
            if time.monotonic() >= deadline:
                names = ", ".join(m.about for m in pending.values())
                raise TimeoutError(
                    f"no receipt from {self._agency} in {self._timeout_s} s: {names}"
                )
            time.sleep(0.1)
        if failed:
            raise PermanentError(f"{self._agency} refused: {'; '.join(failed)}")

    def _receipts(self, fiks: FiksClient) -> list[DecryptedMessage]:
        receipts = []
        for message in fiks.receive(100):
            if not message.is_receipt:
                # only receipts come to the sink's account; records go to the source's
                fiks.reply_failed(message, f"{fiks.account} takes receipts only")
            else:
                receipts.append(message)
            fiks.ack(message.message_id)
        return receipts

    def close(self) -> None:
        """Close the HTTP connections."""
        self._account.close()
        self._stafett.close()


def _has_identifier(resource: Mapping[str, Any], system: str) -> bool:
    return any(i.get("system") == system for i in resource.get("identifier") or [])


def version_key(resource: Mapping[str, Any]) -> str:
    """Return `Type/id/version`: what a message made of this resource version is keyed by."""
    version = (resource.get("meta") or {}).get("versionId")
    return f"{resource.get('resourceType')}/{resource.get('id')}/{version}"


class StafettReader(StafettClient):
    """The sink's FHIR client: identifiers of references, and searches across pages."""

    def search(self, resource_type: str, params: Mapping[str, str]) -> list[dict[str, Any]]:
        """Return every resource of a search the organisation may see (consent decides)."""
        found: list[dict[str, Any]] = []
        url: str | None = f"/{resource_type}"
        query: dict[str, str] | None = {**params, "_count": "100"}
        while url is not None:
            response = self._http.get(url, params=query)
            response.raise_for_status()
            bundle = response.json()
            found += [e["resource"] for e in bundle.get("entry") or [] if "resource" in e]
            links = bundle.get("link") or []
            url = next((k["url"] for k in links if k.get("relation") == "next"), None)
            query = None  # the next link carries the query
        return found


def source(config: ConnectorConfig) -> ChildWelfareSource:
    """Build the source task."""
    return ChildWelfareSource(config, FiksAccount(config))


def sink(config: ConnectorConfig) -> ChildWelfareSink:
    """Build the sink task (its account must differ from the source's: receipts go to it)."""
    settings = config.settings
    if "stafett_url" not in settings or "stafett_token" not in settings:
        raise ValueError(
            f"connector {config.name}: settings.stafett_url and settings.stafett_token are "
            "needed to look up the child and services of a delivery"
        )
    return ChildWelfareSink(
        config,
        FiksAccount(config),
        StafettReader(settings["stafett_url"], settings["stafett_token"]),
    )
