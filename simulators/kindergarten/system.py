"""The kindergarten system itself: records, ids and the change feed, free of HTTP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from simulators.common.clock import Clock
from simulators.common.errors import Conflict, Invalid, NotFound, PreconditionFailed, Problem
from simulators.common.store import JsonStore
from simulators.kindergarten.records import (
    Kind,
    check_barn,
    check_evaluering,
    check_samtykke,
    check_tiltak,
)

__all__ = ["COLLECTIONS", "KindergartenSystem", "Record", "Source", "initial_data"]

Source = Literal["api", "bruker"]
COLLECTIONS: dict[Kind, str] = {"barn": "barn", "tiltak": "tiltak", "samtykke": "samtykker"}
_CHECKS: dict[Kind, Callable[[Any], dict[str, Any]]] = {
    "barn": check_barn,
    "tiltak": check_tiltak,
    "samtykke": check_samtykke,
}
_NAMES: dict[Kind, str] = {"barn": "barnet", "tiltak": "tiltaket", "samtykke": "samtykket"}


def initial_data() -> dict[str, Any]:
    """Return the empty store."""
    return {
        "sekvens": 0,
        "teller": {"barn": 1000, "samtykke": 0, "tiltak": {}},
        "barn": {},
        "tiltak": {},
        "samtykker": {},
        "endringer": [],
    }


@dataclass(frozen=True)
class Record:
    """A record as the API shows it, with its version (the ETag)."""

    data: dict[str, Any]
    version: int

    @property
    def etag(self) -> str:
        """Return the strong ETag of this version."""
        return f'"{self.version}"'


def _matches(if_match: str | None, version: int) -> bool:
    if if_match is None:
        return True
    tags = [t.strip().removeprefix("W/") for t in if_match.split(",")]
    return "*" in tags or f'"{version}"' in tags


class KindergartenSystem:
    """Children with their logs, measures and consents, and a feed of every change.

    Writes carry a `source`: `api` for calls with the API key (the Stafett connector),
    `bruker` for staff working in the system (the `_sim` surface). The feed shows it as
    `kilde`, so a connector can skip the echo of its own writes.
    """

    def __init__(self, *, store: JsonStore, clock: Clock) -> None:
        self._store = store
        self.clock = clock

    def get(self, *, kind: Kind, record_id: str) -> Record:
        """Return one record."""
        with self._store.read() as data:
            entry = data[COLLECTIONS[kind]].get(record_id)
            if entry is None:
                raise NotFound(f"Fant ikke {_NAMES[kind]} {record_id}")
            return Record(entry["data"], entry["versjon"])

    def find(self, *, kind: Kind, fnr: str) -> list[dict[str, Any]]:
        """Return the records of one child, found by fødselsnummer."""
        key = "fodselsnummer" if kind == "barn" else "barn"
        with self._store.read() as data:
            entries = data[COLLECTIONS[kind]].values()
            return [e["data"] for e in entries if e["data"][key] == fnr]

    def changes(self, *, after: int, limit: int) -> dict[str, Any]:
        """Return a page of the change feed after the cursor `after`."""
        with self._store.read() as data:
            feed: list[dict[str, Any]] = data["endringer"]
            # sekvens n sits at index n - 1: the feed is append-only and gapless
            page = feed[after : after + limit]
            return {
                "endringer": page,
                "neste": str(page[-1]["sekvens"] if page else after),
                "flere": after + limit < len(feed),
            }

    def create(self, *, kind: Kind, body: Any, source: Source) -> Record:
        """Register a new record with a fresh id."""
        record = _CHECKS[kind](body)
        with self._store.transaction() as data:
            self._check_references(data, kind=kind, record=record, record_id=None, source=source)
            record_id = self._next_id(data, kind, record)
            record = {"id": record_id, **record}
            if kind == "barn":
                record["skjult"] = False
            return self._save(data, kind=kind, record_id=record_id, record=record, source=source)

    def update(
        self, *, kind: Kind, record_id: str, body: Any, source: Source, if_match: str | None = None
    ) -> Record:
        """Replace a record; an unchanged body changes nothing (PUT is idempotent)."""
        if isinstance(body, dict) and body.get("id", record_id) != record_id:
            raise Invalid("Ugyldige data", [Problem("id", "Stemmer ikke med id i adressen")])
        record = _CHECKS[kind](body)
        with self._store.transaction() as data:
            entry = data[COLLECTIONS[kind]].get(record_id)
            if entry is None:
                raise NotFound(f"Fant ikke {_NAMES[kind]} {record_id}")
            if not _matches(if_match, entry["versjon"]):
                raise PreconditionFailed(f"{record_id} er endret siden du leste den (If-Match)")
            self._check_references(
                data, kind=kind, record=record, record_id=record_id, source=source
            )
            record = {"id": record_id, **record}
            if kind == "barn":
                record["skjult"] = entry["data"]["skjult"]
            return self._save(data, kind=kind, record_id=record_id, record=record, source=source)

    def add_evaluation(self, *, tiltak_id: str, body: Any, source: Source) -> Record:
        """Append an evaluation to a measure."""
        evaluation = check_evaluering(body)
        with self._store.transaction() as data:
            entry = data["tiltak"].get(tiltak_id)
            if entry is None:
                raise NotFound(f"Fant ikke tiltaket {tiltak_id}")
            record = dict(entry["data"])
            record["evalueringer"] = [*record["evalueringer"], evaluation]
            return self._save(
                data, kind="tiltak", record_id=tiltak_id, record=record, source=source
            )

    def set_hidden(self, *, barn_id: str, hidden: bool, source: Source) -> Record:
        """Stop (or resume) sharing a child: the record stays, marked `skjult`."""
        with self._store.transaction() as data:
            entry = data["barn"].get(barn_id)
            if entry is None:
                raise NotFound(f"Fant ikke barnet {barn_id}")
            record = {**entry["data"], "skjult": hidden}
            return self._save(data, kind="barn", record_id=barn_id, record=record, source=source)

    def _check_references(
        self,
        data: dict[str, Any],
        *,
        kind: Kind,
        record: dict[str, Any],
        record_id: str | None,
        source: Source,
    ) -> None:
        children = {e["data"]["fodselsnummer"]: e["data"] for e in data["barn"].values()}
        if kind == "barn":
            other = children.get(record["fodselsnummer"])
            if other is not None and other["id"] != record_id:
                raise Conflict(f"Barnet {other['id']} har allerede dette fødselsnummeret")
            child = data["barn"][record_id]["data"] if record_id else None
        else:
            child = children.get(record["barn"])
            if child is None:
                raise Invalid("Ugyldige data", [Problem("barn", "Ukjent barn i barnehagen")])
        # a hidden child takes no new data from outside; a consent may still be withdrawn
        if source == "api" and kind != "samtykke" and child is not None and child["skjult"]:
            raise Conflict(f"Barnet {child['id']} er skjult: delingen er stoppet")

    def _next_id(self, data: dict[str, Any], kind: Kind, record: dict[str, Any]) -> str:
        counters = data["teller"]
        if kind == "tiltak":
            year = str(self.clock.now().year)
            counters["tiltak"][year] = counters["tiltak"].get(year, 0) + 1
            return f"T-{year}-{counters['tiltak'][year]:04d}"
        counters[kind] += 1
        prefix = "B" if kind == "barn" else "S"
        return f"{prefix}-{counters[kind]}"

    def _save(
        self,
        data: dict[str, Any],
        *,
        kind: Kind,
        record_id: str,
        record: dict[str, Any],
        source: Source,
    ) -> Record:
        collection = data[COLLECTIONS[kind]]
        entry = collection.get(record_id)
        if entry is not None and entry["data"] == record:
            return Record(entry["data"], entry["versjon"])
        endret = self.clock.tick().isoformat(timespec="seconds")
        version = entry["versjon"] + 1 if entry else 1
        collection[record_id] = {"data": record, "versjon": version, "endret": endret}
        data["sekvens"] += 1
        data["endringer"].append(
            {
                "sekvens": data["sekvens"],
                "type": kind,
                "id": record_id,
                "endret": endret,
                "kilde": source,
            }
        )
        return Record(record, version)
