"""Stafett → health station: logs, measures and consents into the station's FHIR server.

Each delivery is re-coded (mapping/specs/helsestasjon-fhir), names the child by the station's
own Patient (created from Stafett's when the station does not know the child) and carries the
Stafett id as an identifier. It updates the station's resource when the Stafett resource
carries the station's id, or the copy found by the Stafett id, merging with the current
version (notes, authoredOn and other elements Stafett cannot tell keep their value, with
If-Match against concurrent edits); otherwise a conditional update on the Stafett id creates
it once. Writes carry the connector's `meta.source`, so the source skips their echo. A
`consent.revoked` notice sets the child's Consents in the station to inactive; the station
has no delete, so copied logs and measures stay in its journal.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import httpx

from bus import Envelope, EventType
from connectors.base import PermanentError
from connectors.config import ConnectorConfig
from connectors.health_station.client import StationClient
from connectors.health_station.common import (
    SYSTEM,
    own_source,
    patient_reference,
    stafett_id_system,
)
from connectors.school.common import (
    FNR_SYSTEM,
    ORGNR_SYSTEM,
    identifier_value,
    mapping_context,
    mappings,
)
from connectors.school.lookup import StafettLookup
from connectors.school.merge import merge_annotations, merge_identifiers, merge_resource
from connectors.stafett import references_in
from connectors.state import LinkState
from mapping import MappingError

__all__ = ["StationSink"]

_CHILD = {"CarePlan": "subject", "Task": "for", "Consent": "patient"}


class StationSink:
    """Writes Stafett's deliveries for the health station into its FHIR server."""

    def __init__(
        self,
        config: ConnectorConfig,
        client: StationClient,
        stafett: StafettLookup,
        links: LinkState,
    ) -> None:
        self._config = config
        self._client = client
        self._stafett = stafett
        self._links = links
        self._source = own_source(config)

    def put(self, envelope: Envelope) -> None:
        """Apply one delivery or notice (idempotent)."""
        if envelope.event_type == EventType.CONSENT_REVOKED:
            self._revoke(envelope.subject_key)
            return
        if envelope.event_type == EventType.CONSENT_GRANTED:
            self._fnr(envelope.subject_key)  # learn the child while Stafett still shows it
            return
        if envelope.event_type != EventType.DELIVERY or not envelope.payload:
            return
        resource = dict(envelope.payload)
        resource_type = resource.get("resourceType")
        if resource_type == "Patient":
            identifiers = list(resource.get("identifier") or [])
            self._stafett.remember(f"Patient/{resource['id']}", identifiers)
            fnr = identifier_value(identifiers, FNR_SYSTEM)
            if fnr:
                self._links.put("patient", str(resource["id"]), fnr)
        elif resource_type in _CHILD:
            self._write(resource)

    def _write(self, resource: dict[str, Any]) -> None:
        resource_type = str(resource["resourceType"])
        child = str(patient_reference(resource).get("reference") or "")
        fnr = self._fnr(child.removeprefix("Patient/")) if child.startswith("Patient/") else None
        context = mapping_context(
            self._config,
            identifiers=self._stafett.identifiers(references_in(resource)),
            fnr=fnr,
        )
        try:
            result = mappings().map(SYSTEM, "outbound", resource_type, resource, context)
        except MappingError as exc:
            raise PermanentError(str(exc)) from exc
        if result.record is None:
            return  # not a log or a measure (e.g. a level Task), or a draft
        record = self._localise(dict(result.record), resource, fnr, child)
        key = (stafett_id_system(resource_type), str(resource["id"]))
        current = self._client.read(resource_type, str(record["id"])) if record.get("id") else None
        if current is None:
            copies = self._client.search(resource_type, [("identifier", "|".join(key))])
            current = copies[0] if len(copies) == 1 else None
        if current is None:
            self._client.upsert(record, f"identifier={key[0]}|{key[1]}")
            return
        merged = _merge(current, record)
        if merged != current:
            self._client.update(merged, version=str(current["meta"]["versionId"]))

    def _localise(
        self, record: dict[str, Any], resource: Mapping[str, Any], fnr: str | None, child: str
    ) -> dict[str, Any]:
        """Name the child, owner and log by the station's own resources where it has them."""
        resource_type = str(record["resourceType"])
        patient = self._station_patient(fnr, child) if fnr else None
        if patient is not None:
            record[_CHILD[resource_type]] = {
                "reference": f"Patient/{patient}",
                "identifier": {"system": FNR_SYSTEM, "value": fnr},
            }
        if resource_type == "Task":
            self._localise_task(record, resource)
        if not record.get("id"):
            # a copy of another service's resource names what it copies (the station's own
            # resources are known by their ids, and are not marked as copies)
            record["identifier"] = merge_identifiers(
                record.get("identifier"),
                [{"system": stafett_id_system(resource_type), "value": str(resource["id"])}],
            )
        record["meta"] = {"source": self._source}
        return record

    def _localise_task(self, record: dict[str, Any], task: Mapping[str, Any]) -> None:
        # the owner as the station's Organization if it has one (its own convention)
        owner = (record.get("owner") or {}).get("identifier") or {}
        if owner.get("system") == ORGNR_SYSTEM:
            criteria = f"{ORGNR_SYSTEM}|{owner.get('value')}"
            found = self._client.search("Organization", [("identifier", criteria)])
            if found:
                record["owner"] = {"reference": f"Organization/{found[0]['id']}"}
        # a log the station holds as a copy of Stafett's (the mapping knows only its own)
        plan = ((task.get("basedOn") or [{}])[0]).get("reference")
        if not record.get("basedOn") and isinstance(plan, str) and plan.startswith("CarePlan/"):
            criteria = f"{stafett_id_system('CarePlan')}|{plan.removeprefix('CarePlan/')}"
            copies = self._client.search("CarePlan", [("identifier", criteria)])
            if copies:
                record["basedOn"] = [{"reference": f"CarePlan/{copies[0]['id']}"}]

    def _station_patient(self, fnr: str, child: str) -> str | None:
        """Return the station's Patient id of the child, registering the child if unknown."""
        known = self._links.get("station-patient", fnr)
        if known:
            return known
        found = self._client.search("Patient", [("identifier", f"{FNR_SYSTEM}|{fnr}")])
        if found:
            patient_id = str(found[0]["id"])
        else:
            stafett = self._stafett.read(child) if child else None
            patient: dict[str, Any] = {
                "resourceType": "Patient",
                "meta": {"source": self._source},
                "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
                "active": True,
            }
            for element in ("name", "birthDate", "gender"):
                if stafett and stafett.get(element):
                    patient[element] = stafett[element]
            created = self._client.create(patient, if_none_exist=f"identifier={FNR_SYSTEM}|{fnr}")
            patient_id = str(created["id"])
        self._links.put("station-patient", fnr, patient_id)
        return patient_id

    def _fnr(self, patient_id: str) -> str | None:
        known = self._links.get("patient", patient_id)
        if known:
            return known
        with contextlib.suppress(httpx.HTTPStatusError):
            found = self._stafett.identifiers([f"Patient/{patient_id}"])
            fnr = identifier_value(found.get(f"Patient/{patient_id}"), FNR_SYSTEM)
            if fnr:
                self._links.put("patient", patient_id, fnr)
                return fnr
        return None

    def _revoke(self, patient_id: str) -> None:
        fnr = self._fnr(patient_id)
        if fnr is None:
            return  # the child was never known here
        for patient in self._client.search("Patient", [("identifier", f"{FNR_SYSTEM}|{fnr}")]):
            consents = self._client.search("Consent", [("patient", f"Patient/{patient['id']}")])
            for consent in consents:
                if consent.get("status") == "active":
                    withdrawn = {**consent, "status": "inactive"}
                    withdrawn["meta"] = {"source": self._source}
                    self._client.update(withdrawn, version=str(consent["meta"]["versionId"]))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        self._stafett.close()


def _merge(current: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """Return the station's resource updated from Stafett; what Stafett cannot tell stays."""
    merged = merge_resource(current, record)
    if record.get("resourceType") == "Task":
        notes = merge_annotations(current.get("note"), record.get("note"))
        if notes:
            merged["note"] = notes
    merged["meta"] = {**(current.get("meta") or {}), **(record.get("meta") or {})}
    return merged
