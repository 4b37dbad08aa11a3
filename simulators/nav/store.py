"""NAV's own records of follow-ups, measures and consents, with NAV's ids.

A record is the event's fields plus metadata: `id` (NAV's own, e.g. `NAV-TILTAK-0003`),
`versjon`, `endret`, `endretAv` (`nav` for an advisor, else the event's `@kilde`) and
`sistOpprettet`, the `@opprettet` of the newest version applied or published, so that an
older event that comes late is skipped. Incoming events are applied idempotently: by `@id`
(remembered for the last `MAX_HANDLED` events) and by business id.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simulators.common.clock import Clock
from simulators.common.store import JsonStore
from simulators.nav.events import KILDE, KINDS, EventKind
from simulators.nav.rapids import build_message, parse_opprettet

__all__ = ["MAX_HANDLED", "Applied", "InvalidRecord", "NavStore", "RecordNotFound"]

MAX_HANDLED = 10_000
_MAX_IGNORED_SHOWN = 20
_PRUNE_CHUNK = 1_000

Publish = Callable[[str, dict[str, Any]], None]
"""Publishes a message with a key; raises if the broker did not take it."""


class Applied(StrEnum):
    """What an incoming event did to the store."""

    CREATED = "opprettet"
    UPDATED = "oppdatert"
    UNCHANGED = "uendret"
    STALE = "foreldet"
    DUPLICATE = "duplikat"


class RecordNotFound(Exception):
    """NAV has no record with this id."""


class InvalidRecord(Exception):
    """An advisor's change would make the record invalid."""


def _initial() -> dict[str, Any]:
    return {
        **{kind.collection: {} for kind in KINDS.values()},
        "behandlet": {},
        "teller": {**dict.fromkeys(KINDS, 0), "behandlet": 0},
        "statistikk": dict.fromkeys(
            ("ignorert", "ugyldig", "publisert", *(a.value for a in Applied)), 0
        ),
        "sisteIgnorerte": [],
    }


def _forget_oldest(handled: dict[str, Any]) -> None:
    # the saved JSON has sorted keys, so the order of the dict is no guide: use the numbers;
    # pruning in chunks keeps the sort off the path of most events
    if len(handled) > MAX_HANDLED + _PRUNE_CHUNK:
        by_age = sorted(handled, key=lambda event_id: handled[event_id]["nr"])
        for event_id in by_age[: len(handled) - MAX_HANDLED]:
            del handled[event_id]


def _payload(kind: EventKind, data: dict[str, Any]) -> dict[str, Any]:
    return kind.model.model_validate(data).wire()


class NavStore:
    """The records and the handled event ids, in one `JsonStore`. Thread-safe."""

    def __init__(self, path: Path | None, *, clock: Clock | None = None) -> None:
        self._store = JsonStore(path, initial=_initial)
        self._clock = clock or Clock()

    def snapshot(self) -> dict[str, Any]:
        """Return everything, for `GET /_sim/store`."""
        return self._store.snapshot()

    def is_empty(self) -> bool:
        """Return whether there are no records."""
        data = self._store.snapshot()
        return not any(data[kind.collection] for kind in KINDS.values())

    def find(self, kind: EventKind, business_id: str) -> dict[str, Any] | None:
        """Return the record of `kind` with this business id, or None."""
        records = self._store.snapshot()[kind.collection]
        return next((r for r in records.values() if r[kind.id_field] == business_id), None)

    def note_ignored(self, message: dict[str, Any] | None, reason: str, *, invalid: bool) -> None:
        """Count an ignored message and keep the reason among the last few."""
        with self._store.transaction() as data:
            data["statistikk"]["ugyldig" if invalid else "ignorert"] += 1
            shown = data["sisteIgnorerte"]
            message = message or {}
            shown.append(
                {
                    "@id": message.get("@id"),
                    "@event_name": message.get("@event_name"),
                    "grunn": reason,
                }
            )
            del shown[:-_MAX_IGNORED_SHOWN]

    def apply(self, kind: EventKind, message: dict[str, Any]) -> Applied:
        """Apply an accepted event (payload already validated) unless seen or older."""
        event_id = str(message["@id"])
        created_at = parse_opprettet(message["@opprettet"])
        assert created_at is not None  # the river checked it
        payload = _payload(kind, message)
        with self._store.transaction() as data:
            handled: dict[str, Any] = data["behandlet"]
            if event_id in handled:
                outcome = Applied.DUPLICATE
            else:
                outcome = self._apply(data, kind, payload, created_at, str(message.get("@kilde")))
                data["teller"]["behandlet"] = number = data["teller"].get("behandlet", 0) + 1
                handled[event_id] = {
                    "@event_name": kind.event_name,
                    "resultat": outcome.value,
                    "nr": number,
                }
                _forget_oldest(handled)
            data["statistikk"][outcome.value] += 1
            return outcome

    def _apply(
        self,
        data: dict[str, Any],
        kind: EventKind,
        payload: dict[str, Any],
        created_at: datetime,
        kilde: str,
    ) -> Applied:
        records: dict[str, dict[str, Any]] = data[kind.collection]
        business_id = payload[kind.id_field]
        record = next((r for r in records.values() if r[kind.id_field] == business_id), None)
        if record is not None and created_at < datetime.fromisoformat(record["sistOpprettet"]):
            return Applied.STALE
        stamp = created_at.isoformat(timespec="milliseconds")
        if record is not None and _payload(kind, record) == payload:
            record["sistOpprettet"] = stamp
            return Applied.UNCHANGED
        meta = {
            "endret": self._clock.tick().isoformat(timespec="milliseconds"),
            "endretAv": kilde,
            "sistOpprettet": stamp,
        }
        if record is None:
            record = {"id": self._new_id(data, kind), **payload, "versjon": 1, **meta}
            records[record["id"]] = record
            return Applied.CREATED
        record.update(payload, versjon=record["versjon"] + 1, **meta)
        return Applied.UPDATED

    def save(
        self,
        kind: EventKind,
        changes: dict[str, Any],
        *,
        business_id: str | None,
        publish: Publish,
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Apply an advisor's change, publish its event; return both (event None: unchanged)."""
        # a follow-up is keyed by fødselsnummer (created when missing); measures and consents
        # are created when business_id is None, else updated (RecordNotFound if unknown)
        with self._store.transaction() as data:
            records: dict[str, dict[str, Any]] = data[kind.collection]
            if kind.id_field == "fodselsnummer":
                business_id = changes["fodselsnummer"]
            record = None
            if business_id is not None:
                record = next(
                    (r for r in records.values() if r[kind.id_field] == business_id), None
                )
                if record is None and kind.id_field != "fodselsnummer":
                    raise RecordNotFound(f"no {kind.name} {business_id!r}")
            try:
                if record is None:
                    own_id = self._new_id(data, kind)
                    record = {"id": own_id, **_payload(kind, {kind.id_field: own_id, **changes})}
                    record["versjon"] = 1
                else:
                    payload = _payload(kind, {**_payload(kind, record), **changes})
                    if payload == _payload(kind, record):
                        return dict(record), None
                    record.update(payload, versjon=record["versjon"] + 1)
            except ValidationError as exc:
                raise InvalidRecord(str(exc)) from exc
            now = self._clock.tick()
            event = build_message(kind.event_name, _payload(kind, record), kilde=KILDE, now=now)
            record.update(
                endret=now.isoformat(timespec="milliseconds"),
                endretAv=KILDE,
                sistOpprettet=event["@opprettet"],
            )
            records[record["id"]] = record
            data["statistikk"]["publisert"] += 1
            # inside the transaction: if the broker refuses, the change is rolled back
            publish(record["fodselsnummer"], event)
            return dict(record), event

    @staticmethod
    def _new_id(data: dict[str, Any], kind: EventKind) -> str:
        data["teller"][kind.name] += 1
        return f"{kind.prefix}-{data['teller'][kind.name]:04d}"
