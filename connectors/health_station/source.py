"""Health station → Stafett: its BTI CarePlans, Consents and measure Tasks, re-coded.

Changes are found with `_lastUpdated=gt<cursor>&_sort=_lastUpdated`, following `next` links;
the checkpoint is the last `meta.lastUpdated` per type. Versions with the sink's own
`meta.source` are its echo and skipped. A log travels with the child (a Patient built from
the station's, create-only) and all the child's consents in one transaction; when that
transaction carries an active consent, the child's measures follow it, so that measures
recorded before the signed consent (refused then: the log could not open) arrive. Copies of
Stafett resources written by the sink are not sent back, except Tasks: staff evaluate those,
and the evaluation goes to the Stafett Task the copy names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connectors.base import DeadRecord, SourceBatch, SourceRecord
from connectors.config import ConnectorConfig
from connectors.health_station.client import StationClient
from connectors.health_station.common import (
    SYSTEM,
    own_source,
    patient_reference,
    stafett_id,
)
from connectors.provenance import with_provenance
from connectors.school.common import (
    FNR_SYSTEM,
    event_id,
    identifier_value,
    mapping_context,
    mappings,
    record_system,
)
from connectors.school.lookup import StafettLookup, reconcile
from mapping import MappedResource, MappingError, transaction_bundle

__all__ = ["StationSource"]

# logs and consents before measures: a measure needs its log in Stafett
_TYPES = ("CarePlan", "Consent", "Task")
_KINDS = {"CarePlan": "careplan", "Consent": "consent", "Task": "task"}
_BTI = "http://helsestasjon.example/kodeverk/plantype|bti"


class StationSource:
    """Polls the station's FHIR server per type after a `meta.lastUpdated` cursor."""

    def __init__(
        self, config: ConnectorConfig, client: StationClient, lookup: StafettLookup | None = None
    ) -> None:
        self._config = config
        self._client = client
        self._lookup = lookup
        self._own = own_source(config)
        self._page = int(config.settings.get("page_size", 50))
        self._pages = int(config.settings.get("max_pages", 10))
        self._read: dict[str, dict[str, Any] | None] = {}

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        """Return the changes after each type's cursor."""
        cursors = {k: str(v) for k, v in (checkpoint or {}).items() if k in _TYPES and v}
        records: list[SourceRecord] = []
        dead: list[DeadRecord] = []
        sent: set[str] = set()  # event ids of `records`: a measure may follow its log already
        self._read = {}  # a fresh view of the station per poll
        for resource_type in _TYPES:
            found, more = self._client.changed(
                resource_type,
                cursors.get(resource_type),
                page_size=self._page,
                max_pages=self._pages,
            )
            for resource in found:
                meta = resource.get("meta") or {}
                cursors[resource_type] = str(meta["lastUpdated"])
                if meta.get("source") == self._own:
                    continue  # the sink's write, echoed
                if stafett_id(resource) and resource_type != "Task":
                    continue  # a copy of another service's log or consent: not ours to send
                if _event_id(self._config, resource) in sent:
                    continue
                try:
                    record = self._record(resource)
                except MappingError as exc:
                    name = f"{resource_type}/{resource.get('id')}"
                    dead.append(DeadRecord(name, str(exc), resource))
                    continue
                if record is not None:
                    records.append(record)
                    sent.add(record.event_id)
                    if resource_type != "Task" and _opens_log(record.payload):
                        records += self._measures_of(resource, sent)
            if more:
                return SourceBatch(records, dead, cursors, more=True)
        return SourceBatch(records, dead, cursors)

    def _station(self, reference: str) -> dict[str, Any] | None:
        if reference not in self._read:
            kind, _, ident = reference.partition("/")
            self._read[reference] = self._client.read(kind, ident) if ident else None
        return self._read[reference]

    def _identifiers(self, resource: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Return the identifiers of the station's Patients and Organizations referred to."""
        found: dict[str, list[dict[str, Any]]] = {}
        for element in ("subject", "for", "patient", "owner", "author"):
            reference = (resource.get(element) or {}).get("reference")
            kind = reference.split("/")[0] if isinstance(reference, str) else None
            if isinstance(reference, str) and kind in ("Patient", "Organization"):
                target = self._station(reference)
                if target is not None:
                    found[reference] = list(target.get("identifier") or [])
        return found

    def _record(self, resource: Mapping[str, Any]) -> SourceRecord | None:
        resource_type = str(resource["resourceType"])
        identifiers = self._identifiers(resource)
        child = patient_reference(resource)
        fnr = identifier_value([child.get("identifier") or {}], FNR_SYSTEM) or identifier_value(
            identifiers.get(str(child.get("reference"))), FNR_SYSTEM
        )
        context = mapping_context(self._config, fnr=fnr, identifiers=identifiers)
        kind = _KINDS[resource_type]
        changed = mappings().map(SYSTEM, "inbound", kind, resource, context)
        if changed.is_skipped:
            return None  # not a BTI plan or measure
        if resource_type == "Task":
            entries = self._measure(resource, list(changed.entries))
        else:
            # a withdrawal travels without the log: the station may no longer write it
            with_log = resource_type == "CarePlan" or resource.get("status") == "active"
            entries = self._log_and_consents(child, fnr, context, with_log=with_log)
        if not entries:
            return None
        meta = resource.get("meta") or {}
        bundle = with_provenance(
            transaction_bundle(entries),
            unit_orgnr=self._config.organization,
            record_system=record_system(self._config, kind),
            record_id=str(resource["id"]),
            display=f"{resource_type}/{resource['id']} i helsestasjonens journal",
            occurred=meta.get("lastUpdated"),
        )
        return SourceRecord(
            event_id=_event_id(self._config, resource),
            subject=str(fnr or ""),
            payload=bundle,
            record_id=f"{resource_type}/{resource['id']}",
        )

    def _measures_of(self, resource: Mapping[str, Any], sent: set[str]) -> list[SourceRecord]:
        """Return the records of the child's measures, to follow its log and consents.

        Staff may record measures before the family's signed consent: the measure reached
        Stafett before its log could open there, and was refused (dead-lettered). Sent again
        once the log travels with a consent, it lands; one Stafett already holds is dropped as
        a duplicate (same event id).
        """
        reference = str(patient_reference(resource).get("reference") or "")
        if not reference.startswith("Patient/"):
            return []
        found: list[SourceRecord] = []
        for task in self._client.search("Task", [("patient", reference)]):
            if (task.get("meta") or {}).get("source") == self._own:
                continue  # the sink's write, echoed
            if _event_id(self._config, task) in sent:
                continue
            try:
                record = self._record(task)
            except MappingError:
                continue  # the Task pass reports it with the record that changed
            if record is not None:
                found.append(record)
                sent.add(record.event_id)
        return found

    def _log_and_consents(
        self,
        child: Mapping[str, Any],
        fnr: str | None,
        context: dict[str, Any],
        *,
        with_log: bool,
    ) -> list[MappedResource]:
        # A log opens in Stafett only with the consent naming the station, and a consent
        # needs its child: the child, the BTI logs and the consents travel together.
        reference = str(child.get("reference") or "")
        patient = self._station(reference) if reference.startswith("Patient/") else None
        if patient is None or not fnr:
            return []
        params = [("patient", reference)]
        plans = self._client.search("CarePlan", [*params, ("category", _BTI)]) if with_log else []
        consents = self._client.search("Consent", params)
        entries = [_patient_entry(patient, fnr)]
        for kind, items in (("careplan", plans), ("consent", consents)):
            for item in items:
                if stafett_id(item) or (item.get("meta") or {}).get("source") == self._own:
                    continue  # copies of Stafett's resources stay out
                entries += mappings().map(SYSTEM, "inbound", kind, item, context).entries
        if not any(e.resource_type in ("CarePlan", "Consent") for e in entries):
            return []
        return reconcile(entries, self._lookup)

    def _measure(
        self, task: Mapping[str, Any], entries: list[MappedResource]
    ) -> list[MappedResource]:
        plan = ((task.get("basedOn") or [{}])[0]).get("reference")
        copied = stafett_id(self._station(plan) or {}) if isinstance(plan, str) else None
        if copied:
            # based on a station copy of a Stafett log: point at that log itself
            entries = [
                MappedResource(
                    {**e.resource, "basedOn": [{"reference": f"CarePlan/{copied}"}]},
                    e.spec,
                    e.match,
                )
                for e in entries
            ]
        linked = stafett_id(task)
        return reconcile(entries, self._lookup, linked={"Task": linked} if linked else None)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        if self._lookup is not None:
            self._lookup.close()


def _event_id(config: ConnectorConfig, resource: Mapping[str, Any]) -> str:
    """Return the event id of a station resource's version: the same on every poll."""
    meta = resource.get("meta") or {}
    return event_id(config, str(resource["resourceType"]), resource["id"], meta.get("versionId"))


def _opens_log(bundle: Mapping[str, Any]) -> bool:
    """Return whether a transaction carries an active consent (and so may open the log)."""
    return any(
        (entry.get("resource") or {}).get("resourceType") == "Consent"
        and (entry.get("resource") or {}).get("status") == "active"
        for entry in bundle.get("entry") or ()
    )


def _patient_entry(patient: Mapping[str, Any], fnr: str) -> MappedResource:
    """Return the child as a create-only Stafett Patient (shared with other systems)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
        "active": True,
    }
    for element in ("name", "birthDate", "gender"):
        if patient.get(element):
            resource[element] = patient[element]
    return MappedResource(
        resource, "helsestasjon-fhir/patient (connector)", f"identifier={FNR_SYSTEM}|{fnr}", True
    )
