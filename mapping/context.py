"""What the caller knows and the record does not: the `context` of a mapping call."""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = ["MappingContext"]


class MappingContext(TypedDict, total=False):
    """Values a connector supplies; every key is optional except `operator_orgnr`.

    - `operator_orgnr`: org.nr of the legal entity operating the vendor system (§2 identifiers).
    - `source_system`: the instance slug (default: the spec's system, e.g. `barnehagesystem`).
    - `unit_orgnr`: org.nr of the service unit the connector serves (custodian, owner default).
    - `fnr`: the child's fødselsnummer when the record names the child otherwise (school ids).
    - `patient`: a literal reference to the child's Patient (`Patient/123`) if known.
    - `careplan`: a reference to the child's log; default: the child's active stafettlogg.
    - `ids`: Stafett ids already known, by resource type (`{"Task": "abc"}`) — sets `id`.
    - `identifiers`: outbound: identifiers of referenced resources, by literal reference
      (`{"Organization/x": [{"system": "urn:oid:...101", "value": "912837467"}]}`).
    - `vendor_id`: outbound: the record's id in the vendor system if the resource lacks it.
    - `record_ids`: outbound: vendor ids of related records by kind (`{"elev": "5501"}`).
    - `today`: `YYYY-MM-DD` for expiry decisions (default: the current date).
    - `sent`: time of the message/event when its payload lacks one (Fiks IO `sendt`).
    - `event_id`, `event_time`: outbound NAV `@id` and `@opprettet`.
    """

    operator_orgnr: str
    source_system: str
    unit_orgnr: str
    fnr: str
    patient: str
    careplan: str
    ids: dict[str, str]
    identifiers: dict[str, Any]
    vendor_id: str
    record_ids: dict[str, str]
    today: str
    sent: str
    event_id: str
    event_time: str
