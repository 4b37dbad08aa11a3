"""The child-welfare agency's case records: its own ids, caseworker changes and incoming updates.

Functions here work on the agency's `JsonStore` data inside a transaction. A record is the
wire payload plus metadata: `id` (the agency's own id, e.g. `BV-TILTAK-0007`), `versjon`,
`endret`, `endretAv`, and `sistSendt`, the `sendt` time of the newest version applied or sent,
which lets an older message that arrives late be recognised and skipped.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from simulators.child_welfare.errors import RecordNotFound
from simulators.child_welfare.payloads import KINDS, Kind, parse_payload
from simulators.common.clock import OSLO

__all__ = [
    "COLLECTIONS",
    "Applied",
    "apply_incoming",
    "find",
    "initial_data",
    "save_local",
    "wire_payload",
]

COLLECTIONS = {"logg": "logger", "tiltak": "tiltak", "samtykke": "samtykker"}
CASEWORKER = "saksbehandler"


class Applied(StrEnum):
    """What an incoming record did to the store."""

    CREATED = "opprettet"
    UPDATED = "oppdatert"
    UNCHANGED = "uendret"
    STALE = "foreldet"


def initial_data() -> dict[str, Any]:
    """Return the empty store of the agency."""
    return {
        **{collection: {} for collection in COLLECTIONS.values()},
        "utboks": {},
        "behandlet": {},
        "teller": dict.fromkeys(KINDS, 0),
        "statistikk": dict.fromkeys(
            ("mottatt", "duplikater", *(a.value for a in Applied), "feilet", "kvitteringer"), 0
        ),
        "token": None,
    }


def find(data: dict[str, Any], kind: Kind, business_id: str) -> dict[str, Any] | None:
    """Return the record of `kind` whose business id is `business_id`, or None."""
    records: dict[str, dict[str, Any]] = data[COLLECTIONS[kind.name]]
    return next((r for r in records.values() if r[kind.id_field] == business_id), None)


def wire_payload(kind: Kind, record: dict[str, Any]) -> dict[str, Any]:
    """Return the message payload of a record (its metadata left out)."""
    return parse_payload(kind, record)


def _new_id(data: dict[str, Any], kind: Kind) -> str:
    data["teller"][kind.name] += 1
    return f"{kind.prefix}-{data['teller'][kind.name]:04d}"


def _store(data: dict[str, Any], kind: Kind, record: dict[str, Any]) -> None:
    data[COLLECTIONS[kind.name]][record["id"]] = record


def apply_incoming(
    data: dict[str, Any], *, kind: Kind, payload: dict[str, Any], sendt: datetime, avsender: str
) -> Applied:
    """Create or update the record with the payload's business id, unless it is older."""
    business_id = payload[kind.id_field]
    record = find(data, kind, business_id)
    if record is not None and sendt < datetime.fromisoformat(record["sistSendt"]):
        return Applied.STALE
    if record is not None and wire_payload(kind, record) == payload:
        record["sistSendt"] = sendt.isoformat(timespec="milliseconds")
        return Applied.UNCHANGED
    endret = datetime.now(OSLO).isoformat(timespec="milliseconds")
    meta = {"endret": endret, "endretAv": avsender}
    if record is None:
        record = {"id": _new_id(data, kind), **payload, "versjon": 1, **meta}
        outcome = Applied.CREATED
    else:
        record.update(payload, versjon=record["versjon"] + 1, **meta)
        outcome = Applied.UPDATED
    record["sistSendt"] = sendt.isoformat(timespec="milliseconds")
    _store(data, kind, record)
    return outcome


def save_local(
    data: dict[str, Any],
    *,
    kind: Kind,
    changes: dict[str, Any],
    business_id: str | None,
    sendt: datetime,
) -> tuple[dict[str, Any], bool]:
    """Apply a caseworker's change; return the record and whether it changed."""
    # a log is keyed by the child's fnr (created when missing); measures and consents are
    # created when business_id is None (own id = business id), else updated
    if kind.name == "logg":
        business_id = changes["fnr"]
    record = None if business_id is None else find(data, kind, business_id)
    if record is None and business_id is not None and kind.name != "logg":
        raise RecordNotFound(f"no {kind.name} {business_id!r}")
    if record is None:
        own_id = _new_id(data, kind)
        merged = {kind.id_field: own_id, **changes}
        record = {"id": own_id, **parse_payload(kind, merged), "versjon": 1}
    else:
        payload = parse_payload(kind, {**wire_payload(kind, record), **changes})
        if payload == wire_payload(kind, record):
            return record, False
        record.update(payload, versjon=record["versjon"] + 1)
    stamp = sendt.isoformat(timespec="milliseconds")
    record.update(endret=stamp, endretAv=CASEWORKER, sistSendt=stamp)
    _store(data, kind, record)
    return record, True
