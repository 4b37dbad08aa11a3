"""NAV: Rapids & Rivers JSON on NAV's own Kafka topic `nav.bti.v1` (docs/vendor-formats.md).

Source: consumes the topic in its own consumer group, skips Stafett's own events
(`@kilde: "stafett"`), lets through (the "river") `bti_oppfolging`, `bti_tiltak` and
`bti_samtykke` with `@id` and a local `@opprettet`, and maps each to a transaction Bundle with
a Provenance; the event id is derived from `@id`, so an event read twice is applied once, and
an event older than the version already sent is skipped. The runtime publishes what `poll`
returns and then stores its checkpoint, so NAV's offsets are committed at the start of the
next `poll`, once the checkpoint shows the batch was stored: at least once, never lost (after
a crash or rebalance the events come again and Stafett drops the repeated event ids). A
consent carries the youth's newest follow-up (kept in the checkpoint), so a follow-up that
came before its consent, and was refused for want of it, is written with it.

Consents: NAV's `bti_samtykke` names no signer and carries no form, and Stafett records a
service's Consent only with both. `consent_form_url` (`{id}` = samtykkeId) names where NAV
archives the signed form; `consent_signed_by: youth` records the youth as the signer (NAV's
consent is the person's own; Stafett still checks the consent age). Without them NAV's
consents are refused and dead-lettered by Stafett's ingest.

Sink: publishes Stafett's measures, consents and NAV's own follow-up (changed by someone
else in Stafett) as events with `@kilde: "stafett"`, `@id` derived from the delivery's event
id (a redelivery gives the same `@id`, which NAV drops) and `@opprettet` = the time of the
change. A grant publishes the youth's measures and consents; a revocation publishes the
youth's consents that are no longer active as `bti_samtykke` with `trukket: true`.

Settings: `bootstrap` (NAV's brokers), `topic`, `client_config` (TLS/SASL for kafka-python),
`session_timeout_ms`, `heartbeat_interval_ms`, `max_poll_interval_ms`, `fetch_max_wait_ms`;
source: `group`, `poll_timeout_s`, `max_records`, `consent_form_url`, `consent_signed_by`;
sink: `state_dir`, `stafett_url`, `stafett_token` (`system/*.rs`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from bus import BusError, Envelope, EventType, Message, Record
from bus.kafka import KafkaBus, KafkaConsumerAdapter
from connectors.base import DeadRecord, PermanentError, SourceBatch, SourceRecord
from connectors.child_welfare import (
    OSLO,
    KnownIdentities,
    StafettReader,
    recorded_on_behalf,
    version_key,
)
from connectors.config import ConnectorConfig
from connectors.provenance import with_provenance
from connectors.stafett import references_in
from mapping import MappingEngine, MappingError, MappingResult, transaction_bundle

__all__ = ["NavRapid", "NavSink", "NavSource", "sink", "source"]

SYSTEM = "nav"
TOPIC = "nav.bti.v1"
_log = logging.getLogger("stafett.connectors.nav")
_NAMESPACE = uuid.UUID("3e9d1a77-52c4-4b0e-8f16-c0a9b2d4e5f6")
# the rivers: event name -> the record kind of the mapping and its business-id field
_RIVERS = {
    "bti_oppfolging": "fodselsnummer",
    "bti_tiltak": "tiltaksId",
    "bti_samtykke": "samtykkeId",
}
_OUTBOUND = ("Task", "Consent", "CarePlan")
_GROUP_SETTINGS = (
    "session_timeout_ms",
    "heartbeat_interval_ms",
    "max_poll_interval_ms",
    "fetch_max_wait_ms",
)
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


class NavRapid:
    """NAV's topic through `bus.kafka`: a consumer in the connector's group, and a producer."""

    def __init__(self, config: ConnectorConfig) -> None:
        settings = config.settings
        if "bootstrap" not in settings:
            raise ValueError(f"connector {config.name}: settings.bootstrap is missing")
        self.topic = str(settings.get("topic", TOPIC))
        self._group = str(settings.get("group", f"stafett-connect-{config.name}"))
        group = {k: int(settings[k]) for k in _GROUP_SETTINGS if k in settings}
        self._bus = KafkaBus(
            str(settings["bootstrap"]),
            client_id=f"stafett-connect-{config.name}",
            client_config=settings.get("client_config"),
            session_timeout_ms=group.get("session_timeout_ms", 10_000),
            heartbeat_interval_ms=group.get("heartbeat_interval_ms", 3_000),
            max_poll_interval_ms=group.get("max_poll_interval_ms", 300_000),
            fetch_max_wait_ms=group.get("fetch_max_wait_ms", 100),
        )
        self._consumer: KafkaConsumerAdapter | None = None

    def consumer(self) -> KafkaConsumerAdapter:
        """Return the consumer, joining the group on first use."""
        if self._consumer is None:
            self._consumer = self._bus.consumer([self.topic], self._group)
        return self._consumer

    def publish(self, events: list[dict[str, Any]]) -> None:
        """Publish events keyed by fødselsnummer and wait for the broker's acknowledgement."""
        self._bus.publish_many(
            [Record(self.topic, str(e.get("fodselsnummer") or ""), orjson.dumps(e)) for e in events]
        )

    def close(self) -> None:
        """Leave the group and close the clients."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._bus.close()


@dataclass
class _Youths:
    """What the checkpoint keeps: each youth's newest follow-up, each record's newest version."""

    follow_ups: dict[str, dict[str, Any]] = field(default_factory=dict)  # fnr -> event
    versions: dict[str, str] = field(default_factory=dict)  # event/business id -> @opprettet

    @classmethod
    def load(cls, checkpoint: Mapping[str, Any] | None) -> _Youths:
        data = checkpoint or {}
        return cls(dict(data.get("follow_ups") or {}), dict(data.get("versions") or {}))

    def dump(self) -> dict[str, Any]:
        return {"follow_ups": self.follow_ups, "versions": self.versions}

    def is_stale(self, key: str, opprettet: str) -> bool:
        newest = self.versions.get(key)
        if newest is None:
            return False
        return datetime.fromisoformat(opprettet) < datetime.fromisoformat(newest)

    def keep(self, key: str, event: Mapping[str, Any]) -> None:
        self.versions[key] = str(event["@opprettet"])
        if event["@event_name"] == "bti_oppfolging":
            self.follow_ups[str(event["fodselsnummer"])] = dict(event)


def _river(message: Message) -> dict[str, Any] | None:
    try:
        event = orjson.loads(message.value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(event, dict) or event.get("@kilde") == "stafett":
        return None  # not an event, or Stafett's own
    if event.get("@event_name") not in _RIVERS or not event.get("@id"):
        return None
    try:
        opprettet = datetime.fromisoformat(str(event.get("@opprettet")))
    except ValueError:
        return None
    return event if opprettet.tzinfo is None else None


class NavSource:
    """Reads NAV's events and maps each to a transaction Bundle; commits after publishing."""

    def __init__(self, config: ConnectorConfig, rapid: NavRapid) -> None:
        settings = config.settings
        self._config = config
        self._rapid = rapid
        self._poll_s = float(settings.get("poll_timeout_s", 0.5))
        self._max = int(settings.get("max_records", 200))
        self._form_url = settings.get("consent_form_url")
        self._youth_signs = settings.get("consent_signed_by") == "youth"
        self._pending: tuple[str, SourceBatch, list[Message]] | None = None

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        """Commit the published batch's offsets, then read, map and return the next batch."""
        consumer = self._rapid.consumer()
        if self._pending is not None:
            batch_id, batch, messages = self._pending
            if (checkpoint or {}).get("batch") != batch_id:
                return batch  # the runtime did not publish it: the same records again
            self._pending = None
            try:
                consumer.commit(messages)
            except BusError as exc:
                # a rebalance: the events come again, and Stafett drops their event ids
                _log.warning("NAV offsets not committed: %s", exc)
        messages = consumer.poll(self._poll_s, self._max)
        if not messages:
            return SourceBatch()
        youths = _Youths.load(checkpoint)
        records: list[SourceRecord] = []
        dead: list[DeadRecord] = []
        for message in messages:
            event = _river(message)
            if event is None:
                continue  # rivers ignore what they do not handle
            try:
                record = self._record(event, youths)
            except MappingError as exc:
                fnr = str(event.get("fodselsnummer") or "")
                dead.append(DeadRecord(f"{self._rapid.topic}/{event['@id']}", str(exc), event, fnr))
                continue
            if record is not None:
                records.append(record)
        batch_id = uuid.uuid4().hex
        batch = SourceBatch(
            records, dead, checkpoint={"batch": batch_id, **youths.dump()}, more=True
        )
        self._pending = (batch_id, batch, messages)
        return batch

    def _record(self, event: dict[str, Any], youths: _Youths) -> SourceRecord | None:
        name = str(event["@event_name"])
        fnr = str(event.get("fodselsnummer") or "")
        business_id = str(event.get(_RIVERS[name]) or "")
        opprettet = str(event["@opprettet"])
        key = f"{name}/{business_id}"
        if youths.is_stale(key, opprettet):
            return None  # an older version read late: NAV's last writer wins here too
        results = self._map(name, event, fnr, youths)
        youths.keep(key, event)
        if all(result.is_skipped for result in results):
            return None
        kind = name.removeprefix("bti_")
        bundle = with_provenance(
            transaction_bundle(results),
            unit_orgnr=self._config.organization,
            record_system=_sid(self._config, kind),
            record_id=business_id,
            display=f"{name} {business_id} fra NAV (hendelse {event['@id']})",
            occurred=datetime.fromisoformat(opprettet).replace(tzinfo=OSLO).isoformat(),
        )
        return SourceRecord(
            event_id=str(uuid.uuid5(_NAMESPACE, f"{self._rapid.topic}|{event['@id']}")),
            subject=fnr,
            payload=bundle,
            record_id=key,
            correlation_id=str(event["@id"]),
        )

    def _map(
        self, name: str, event: Mapping[str, Any], fnr: str, youths: _Youths
    ) -> list[MappingResult]:
        engine = _mappings()
        context = _context(self._config)
        if name == "bti_tiltak":
            if fnr in youths.follow_ups:  # based on NAV's own follow-up, not any log
                context["careplan"] = (
                    f"CarePlan?identifier={_sid(self._config, 'oppfolging')}|{fnr}"
                )
            return [engine.map(SYSTEM, "inbound", name, event, context)]
        if name == "bti_oppfolging":
            return [engine.map(SYSTEM, "inbound", name, event, context)]
        consent = engine.map(SYSTEM, "inbound", name, event, context)
        results = [recorded_on_behalf(consent, self._form_url, signed_by_youth=self._youth_signs)]
        follow_up = youths.follow_ups.get(fnr)
        if follow_up is not None and not event.get("trukket"):
            # the follow-up travels with its consent: one sent first was refused for want of it
            results.append(engine.map(SYSTEM, "inbound", "bti_oppfolging", follow_up, context))
        return results

    def close(self) -> None:
        """Leave NAV's consumer group (uncommitted events are read again) and disconnect."""
        self._rapid.close()


class NavSink:
    """Publishes Stafett's deliveries for NAV as Rapids & Rivers events on NAV's topic."""

    def __init__(self, config: ConnectorConfig, rapid: NavRapid, stafett: StafettReader) -> None:
        self._config = config
        self._rapid = rapid
        self._stafett = stafett
        state_dir = Path(str(config.settings.get("state_dir", ".stafett/connectors")))
        self._identities = KnownIdentities(stafett, state_dir, config.name)

    def put(self, envelope: Envelope) -> None:
        """Turn one delivery or notice into events and publish them (idempotent by `@id`)."""
        events = self._events(envelope)
        if events:
            self._rapid.publish(events)

    def _events(self, envelope: Envelope) -> list[dict[str, Any]]:
        patient = f"Patient/{envelope.subject_key}"
        if envelope.event_type == EventType.CONSENT_REVOKED:
            # consents that name NAV stay readable to it after a withdrawal
            found = self._stafett.search("Consent", {"patient": patient})
            return self._all(envelope, [c for c in found if c.get("status") != "active"])
        if envelope.event_type == EventType.CONSENT_GRANTED:
            # NAV may now see the youth: publish what it could not be sent before
            self._identities.learn_family(patient)
            found = [
                *self._stafett.search("Task", {"patient": patient}),
                *self._stafett.search("Consent", {"patient": patient}),
            ]
            mine = (_sid(self._config, "tiltak"), _sid(self._config, "samtykke"))
            return self._all(envelope, [r for r in found if not _has_any(r, mine)])
        if envelope.event_type != EventType.DELIVERY or not envelope.payload:
            return []  # deletions and reminders have no event in NAV's format
        resource = envelope.payload
        if resource.get("resourceType") == "Patient":
            identifiers = list(resource.get("identifier") or [])
            self._stafett.remember(f"Patient/{resource['id']}", identifiers)
            return []
        event = self._event(resource, envelope, "")
        return [event] if event is not None else []

    def _all(self, envelope: Envelope, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
        events = (self._event(r, envelope, version_key(r)) for r in resources)
        return [event for event in events if event is not None]

    def _event(
        self, resource: dict[str, Any], envelope: Envelope, part: str
    ) -> dict[str, Any] | None:
        resource_type = str(resource.get("resourceType"))
        if resource_type not in _OUTBOUND:
            return None
        record: Any = resource
        if resource_type == "CarePlan":
            if not _has_any(resource, (_sid(self._config, "oppfolging"),)):
                return None  # another service's log: NAV keeps one follow-up per youth
            teams = (self._stafett.read(r) for r in sorted(references_in(resource.get("careTeam"))))
            record = [resource, *(team for team in teams if team is not None)]
        context = _context(
            self._config,
            identifiers=self._identities.resolve(references_in(record)),
            # the same delivery gives the same @id, which NAV recognises
            event_id=str(uuid.uuid5(_NAMESPACE, f"{envelope.event_id}|{part}")),
            event_time=envelope.occurred_at.astimezone(OSLO)
            .replace(tzinfo=None)
            .isoformat(timespec="milliseconds"),
        )
        try:
            result = _mappings().map(SYSTEM, "outbound", resource_type, record, context)
        except MappingError as exc:
            raise PermanentError(str(exc)) from exc
        return result.record

    def close(self) -> None:
        """Close the producer and the HTTP connections."""
        self._rapid.close()
        self._stafett.close()


def _has_any(resource: Mapping[str, Any], systems: tuple[str, ...]) -> bool:
    return any(i.get("system") in systems for i in resource.get("identifier") or [])


def source(config: ConnectorConfig) -> NavSource:
    """Build the source task."""
    return NavSource(config, NavRapid(config))


def sink(config: ConnectorConfig) -> NavSink:
    """Build the sink task."""
    settings = config.settings
    if "stafett_url" not in settings or "stafett_token" not in settings:
        raise ValueError(
            f"connector {config.name}: settings.stafett_url and settings.stafett_token are "
            "needed to look up the youth and services of a delivery"
        )
    stafett = StafettReader(settings["stafett_url"], settings["stafett_token"])
    return NavSink(config, NavRapid(config), stafett)
