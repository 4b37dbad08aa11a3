"""The school system itself: pupils, measures, consents and "changed after" queries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulators.common.clock import Clock
from simulators.common.errors import Conflict, Invalid, NotFound, PreconditionFailed, Problem
from simulators.common.store import JsonStore
from simulators.school.records import ID_FIELD, Kind, check_elev, check_samtykke, check_tiltak

__all__ = ["USER", "Record", "SchoolSystem", "initial_data"]

USER = "bruker"  # `endretAv` of changes made by staff in the system
COLLECTIONS: dict[Kind, str] = {"elev": "elever", "tiltak": "tiltak", "samtykke": "samtykker"}
_CHECKS: dict[Kind, Callable[[Any], dict[str, Any]]] = {
    "elev": check_elev,
    "tiltak": check_tiltak,
    "samtykke": check_samtykke,
}
_NAMES: dict[Kind, str] = {"elev": "eleven", "tiltak": "tiltaket", "samtykke": "samtykket"}
_FIRST_ID: dict[Kind, int] = {"elev": 5501, "tiltak": 9001, "samtykke": 301}


def initial_data() -> dict[str, Any]:
    """Return the empty store."""
    return {
        "neste": dict(_FIRST_ID),
        "elever": {},
        "tiltak": {},
        "samtykker": {},
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


def _content(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in ("endret", "endretAv")}


class SchoolSystem:
    """Pupils with their stafettlogg, measures and consents.

    Every record carries `endret` (strictly increasing, so `endretEtter=<last endret seen>`
    is a safe cursor) and `endretAv`: the OAuth client id for API writes, `bruker` for staff.
    """

    def __init__(self, *, store: JsonStore, clock: Clock, page_max: int) -> None:
        self.store = store
        self.clock = clock
        self.page_max = page_max
        with store.read() as data:
            stamps = [
                datetime.fromisoformat(e["data"]["endret"])
                for name in COLLECTIONS.values()
                for e in data[name].values()
            ]
        if stamps:
            clock.resume_after(max(stamps))

    def get(self, *, kind: Kind, record_id: int) -> Record:
        """Return one record."""
        with self.store.read() as data:
            entry = data[COLLECTIONS[kind]].get(str(record_id))
            if entry is None:
                raise NotFound(f"Fant ikke {_NAMES[kind]} {record_id}")
            return Record(entry["data"], entry["versjon"])

    def changed(
        self, *, kind: Kind, after: datetime | None, where: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Return records changed after `after`, oldest change first, at most `page_max`."""
        with self.store.read() as data:
            records = [e["data"] for e in data[COLLECTIONS[kind]].values()]
        if after is not None:
            records = [r for r in records if datetime.fromisoformat(r["endret"]) > after]
        if where:
            records = [r for r in records if all(r[k] == v for k, v in where.items())]
        records.sort(key=lambda r: datetime.fromisoformat(r["endret"]))
        return records[: self.page_max]

    def all_records(self, kind: Kind) -> list[dict[str, Any]]:
        """Return every record of a kind, by id."""
        with self.store.read() as data:
            return sorted(
                (e["data"] for e in data[COLLECTIONS[kind]].values()),
                key=lambda r: int(r[ID_FIELD[kind]]),
            )

    def create(self, *, kind: Kind, body: Any, author: str) -> Record:
        """Register a new record with the next id."""
        record = _CHECKS[kind](body)
        with self.store.transaction() as data:
            self._check_references(data, kind=kind, record=record, record_id=None)
            record_id = data["neste"][kind]
            data["neste"][kind] += 1
            record = {ID_FIELD[kind]: record_id, **record}
            return self._save(data, kind=kind, record=record, author=author)

    def update(
        self, *, kind: Kind, record_id: int, body: Any, author: str, if_match: str | None = None
    ) -> Record:
        """Replace a record; an unchanged body changes nothing (PUT is idempotent)."""
        key = ID_FIELD[kind]
        if isinstance(body, dict) and body.get(key, record_id) != record_id:
            raise Invalid("Ugyldige data", [Problem(key, "Stemmer ikke med id i adressen")])
        record = _CHECKS[kind](body)
        with self.store.transaction() as data:
            entry = data[COLLECTIONS[kind]].get(str(record_id))
            if entry is None:
                raise NotFound(f"Fant ikke {_NAMES[kind]} {record_id}")
            if if_match is not None and if_match.removeprefix("W/") not in (
                "*",
                f'"{entry["versjon"]}"',
            ):
                raise PreconditionFailed(f"{_NAMES[kind]} {record_id} er endret siden du leste")
            self._check_references(data, kind=kind, record=record, record_id=record_id)
            record = {key: record_id, **record}
            return self._save(data, kind=kind, record=record, author=author)

    def _check_references(
        self, data: dict[str, Any], *, kind: Kind, record: dict[str, Any], record_id: int | None
    ) -> None:
        if kind == "elev":
            for entry in data["elever"].values():
                other = entry["data"]
                if other["personnummer"] == record["personnummer"] and other["elevId"] != record_id:
                    raise Conflict(f"Eleven {other['elevId']} har allerede dette personnummeret")
        elif str(record["elevId"]) not in data["elever"]:
            raise Invalid("Ugyldige data", [Problem("elevId", "Ukjent elev")])

    def _save(
        self, data: dict[str, Any], *, kind: Kind, record: dict[str, Any], author: str
    ) -> Record:
        collection = data[COLLECTIONS[kind]]
        key = str(record[ID_FIELD[kind]])
        entry = collection.get(key)
        if entry is not None and _content(entry["data"]) == record:
            return Record(entry["data"], entry["versjon"])
        record = {**record, "endret": self.clock.tick().isoformat(timespec="milliseconds")}
        record["endretAv"] = author
        version = entry["versjon"] + 1 if entry else 1
        collection[key] = {"data": record, "versjon": version}
        return Record(record, version)
