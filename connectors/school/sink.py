"""Stafett → school: measures and consents delivered by Stafett, and withdrawals.

Measures (Task) become `tiltak`: PUT when the Task carries the school's identifier (or the
sink created the tiltak before: a link in the state), else POST, and the new id is linked to
the Task so the next delivery updates it and the source sends the school's changes (an
evaluation) back to the same Task. Consents update the school's own `samtykker` (staff create
consents; the API cannot). A `consent.revoked` notice marks the pupil's consents `trukket`;
the school's API has no way to hide a pupil or delete a measure, so that is all it can do.
Pupils' logs are written by school staff, so CarePlans are not pushed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import httpx

from bus import Envelope, EventType
from connectors.base import PermanentError
from connectors.config import ConnectorConfig
from connectors.school.client import SchoolClient
from connectors.school.common import (
    FNR_SYSTEM,
    identifier_value,
    mapping_context,
    mappings,
    record_system,
)
from connectors.school.lookup import StafettLookup
from connectors.stafett import references_in
from connectors.state import LinkState
from mapping import MappingError

__all__ = ["SchoolSink"]

SYSTEM = "skolesystem"


def _filled(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if v not in (None, [], "", {})}


class SchoolSink:
    """Writes Stafett's deliveries for this school into the school system."""

    def __init__(
        self,
        config: ConnectorConfig,
        client: SchoolClient,
        stafett: StafettLookup,
        links: LinkState,
    ) -> None:
        self._config = config
        self._client = client
        self._stafett = stafett
        self._links = links

    def put(self, envelope: Envelope) -> None:
        """Apply one delivery or notice (idempotent)."""
        if envelope.event_type == EventType.CONSENT_REVOKED:
            self._revoke(envelope.subject_key)
            return
        if envelope.event_type == EventType.CONSENT_GRANTED:
            self._fnr(envelope.subject_key)  # learn the child while Stafett still shows it
            return
        if envelope.event_type != EventType.DELIVERY or not envelope.payload:
            return  # deletions and reminders need no write here
        resource = dict(envelope.payload)
        kind = resource.get("resourceType")
        if kind == "Patient":
            identifiers = list(resource.get("identifier") or [])
            self._stafett.remember(f"Patient/{resource['id']}", identifiers)
            fnr = identifier_value(identifiers, FNR_SYSTEM)
            if fnr:
                self._links.put("patient", str(resource["id"]), fnr)
        elif kind == "Task":
            self._measure(resource)
        elif kind == "Consent":
            self._consent(resource)

    def _map(
        self, resource: Mapping[str, Any], child: str | None, **extra: Any
    ) -> dict[str, Any] | None:
        identifiers = self._stafett.identifiers(references_in(resource))
        fnr = self._fnr(child.removeprefix("Patient/")) if child else None
        pupils = self._client.pupils(fnr) if fnr else []
        context = mapping_context(
            self._config,
            identifiers=identifiers,
            fnr=fnr,
            record_ids={"elev": str(pupils[0]["elevId"])} if pupils else None,
            **extra,
        )
        try:
            result = mappings().map(
                SYSTEM, "outbound", str(resource["resourceType"]), resource, context
            )
        except MappingError as exc:
            if fnr and not pupils:
                raise PermanentError(
                    f"the child is no pupil in the school system (register the pupil, then "
                    f"replay this dead letter): {exc}"
                ) from exc
            raise PermanentError(str(exc)) from exc
        return result.record

    def _measure(self, task: Mapping[str, Any]) -> None:
        linked = self._links.key_of("tiltak", str(task["id"]))
        record = self._map(task, _reference(task.get("for")), vendor_id=linked)
        if record is None:
            return  # not a measure (e.g. a level Task)
        tiltak_id = record.get("tiltakId")
        current = self._client.get("tiltak", tiltak_id) if tiltak_id else None
        if current is not None:
            # what Stafett cannot tell (a description it never had) keeps the school's value
            written = self._client.put("tiltak", tiltak_id, {**current, **_filled(record)})
        else:
            written = self._client.create_measure(record)
            self._links.put("tiltak", str(written["tiltakId"]), str(task["id"]))
        # the export has no `endretAv`: the CSV source recognises this version by its time
        self._links.put("echo", str(written["tiltakId"]), str(written.get("endret")))

    def _consent(self, consent: Mapping[str, Any]) -> None:
        if not identifier_value(consent.get("identifier"), record_system(self._config, "samtykke")):
            return  # recorded elsewhere: the school's API cannot create consents
        record = self._map(consent, _reference(consent.get("patient")))
        if record is None or not record.get("id"):
            return  # drafts, and consents recorded elsewhere: the school's API cannot create
        current = self._client.get("samtykke", record["id"])
        if current is not None:
            self._client.put("samtykke", record["id"], {**current, **_filled(record)})

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
        for pupil in self._client.pupils(fnr):
            for consent in self._client.of_pupil("samtykke", pupil["elevId"]):
                if not consent.get("trukket"):
                    self._client.put("samtykke", consent["id"], {**consent, "trukket": True})

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        self._stafett.close()


def _reference(value: Any) -> str | None:
    reference = value.get("reference") if isinstance(value, Mapping) else None
    return reference if isinstance(reference, str) and reference.startswith("Patient/") else None
