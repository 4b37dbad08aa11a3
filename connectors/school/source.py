"""School → Stafett: pupils with their stafettlogg, consents and measures since a cursor."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import DeadRecord, SourceBatch, SourceRecord
from connectors.config import ConnectorConfig
from connectors.provenance import with_provenance
from connectors.school.client import ID_FIELDS, SchoolClient
from connectors.school.common import (
    event_id,
    identifier_value,
    mapping_context,
    mappings,
    record_system,
)
from connectors.school.lookup import StafettLookup, reconcile
from connectors.state import LinkState
from mapping import MappedResource, MappingError, MappingResult, transaction_bundle

__all__ = ["SYSTEM", "SchoolSource"]

SYSTEM = "skolesystem"
# pupils first: a consent or measure needs the pupil's log to be in Stafett already
_ORDER = ("elev", "samtykke", "tiltak")


class SchoolSource:
    """Polls `GET /api/<kind>?endretEtter=<cursor>`; checkpoint: the last `endret` per kind."""

    def __init__(
        self,
        config: ConnectorConfig,
        client: SchoolClient,
        links: LinkState,
        lookup: StafettLookup | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._links = links
        self._lookup = lookup
        self._page_max = int(config.settings.get("page_max", 500))

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        """Return the changes after each kind's cursor, pupils before consents and measures."""
        cursors = {k: str(v) for k, v in (checkpoint or {}).items() if k in _ORDER and v}
        records: list[SourceRecord] = []
        dead: list[DeadRecord] = []
        pupils: dict[str, dict[str, Any] | None] = {}
        for kind in _ORDER:
            changes = self._client.changed(kind, cursors.get(kind))
            for raw in changes:
                cursors[kind] = str(raw["endret"])
                if raw.get("endretAv") == self._client.client_id:
                    continue  # our own write, echoed
                record_id = f"{kind}/{raw.get(ID_FIELDS[kind])}"
                pupil = raw if kind == "elev" else self._pupil(raw.get("elevId"), pupils)
                fnr = str((pupil or {}).get("personnummer") or "")
                try:
                    record = self._record(kind, raw, pupil)
                except MappingError as exc:
                    dead.append(DeadRecord(record_id, str(exc), raw, fnr))
                    continue
                if record is not None:
                    records.append(record)
            if len(changes) >= self._page_max:
                # the rest of this kind first; later kinds wait so pupils stay ahead
                return SourceBatch(records, dead, cursors, more=True)
        return SourceBatch(records, dead, cursors)

    def _pupil(
        self, elev_id: Any, cache: dict[str, dict[str, Any] | None]
    ) -> dict[str, Any] | None:
        key = str(elev_id)
        if key not in cache:
            cache[key] = self._client.get("elev", elev_id) if elev_id is not None else None
        return cache[key]

    def _record(
        self, kind: str, raw: Mapping[str, Any], pupil: Mapping[str, Any] | None
    ) -> SourceRecord | None:
        if pupil is None:
            return None  # the pupil is gone: nothing to name the child by
        fnr = str(pupil["personnummer"])
        if kind == "tiltak":
            entries = self._measure(raw, fnr, has_log=bool(pupil.get("stafettlogg")))
        else:
            # a withdrawal travels without the log: the school may no longer write it
            entries = self._log_and_consents(pupil, fnr, with_log=not raw.get("trukket"))
        if not entries:
            return None
        record_id = str(raw[ID_FIELDS[kind]])
        bundle = with_provenance(
            transaction_bundle(entries),
            unit_orgnr=self._config.organization,
            record_system=record_system(self._config, kind),
            record_id=record_id,
            display=f"{kind} {record_id} i skolesystemet",
            occurred=str(raw.get("endret") or "") or None,
        )
        return SourceRecord(
            event_id=event_id(self._config, kind, record_id, raw.get("endret")),
            subject=fnr,
            payload=bundle,
            record_id=f"{kind}/{record_id}",
        )

    def _log_and_consents(
        self, pupil: Mapping[str, Any], fnr: str, *, with_log: bool
    ) -> list[MappedResource]:
        # A log is opened in Stafett only together with the consent naming the school, and a
        # consent needs its child: the pupil and all the pupil's consents travel together.
        context = mapping_context(self._config)
        results: list[MappingResult] = [mappings().map(SYSTEM, "inbound", "elev", pupil, context)]
        consents = self._client.of_pupil("samtykke", pupil["elevId"])
        consent_context = mapping_context(self._config, fnr=fnr)
        results += [
            mappings().map(SYSTEM, "inbound", "samtykke", c, consent_context) for c in consents
        ]
        entries = [
            e
            for r in results
            for e in r.entries
            if with_log or e.resource_type in ("Patient", "Consent")
        ]
        if not any(e.resource_type in ("CarePlan", "Consent") for e in entries):
            return []  # a pupil without a stafettlogg or consent is none of Stafett's business
        return reconcile(entries, self._lookup, ours=self._employee)

    def _measure(self, raw: Mapping[str, Any], fnr: str, *, has_log: bool) -> list[MappedResource]:
        context = mapping_context(self._config, fnr=fnr)
        result = mappings().map(SYSTEM, "inbound", "tiltak", raw, context)
        # lastModified = endret: what a later CSV row compares with (csv_source.py)
        entries = [
            MappedResource({**e.resource, "lastModified": raw["endret"]}, e.spec, e.match)
            if e.resource_type == "Task" and raw.get("endret")
            else e
            for e in result.entries
        ]
        linked = self._links.get("tiltak", str(raw["tiltakId"]))
        merged = reconcile(entries, self._lookup, linked={"Task": linked} if linked else None)
        if not has_log and all("id" not in e.resource for e in merged):
            return []  # not a stafettlogg pupil, and not a measure Stafett knows: not shared
        return merged

    def _employee(self, member: Any) -> str | None:
        system = record_system(self._config, "ansatt")
        reference = member.get("reference") if isinstance(member, Mapping) else None
        if not isinstance(reference, str):
            return None
        prefix = f"PractitionerRole?identifier={system}|"
        if reference.startswith(prefix):
            return reference.removeprefix(prefix)
        if self._lookup is None or "?" in reference:
            return None
        found = self._lookup.identifiers([reference]).get(reference)
        return identifier_value(found, system)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        if self._lookup is not None:
            self._lookup.close()
