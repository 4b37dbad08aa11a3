"""Provenance for imported data (stafettlogg-fhir.md §15), added to a connector's Bundle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

__all__ = ["with_provenance"]

_ENH = "urn:oid:2.16.578.1.12.4.1.4.101"
_CONTENT_TYPES = frozenset({"CarePlan", "CareTeam", "Goal", "Task", "Communication"})


def with_provenance(
    bundle: dict[str, Any],
    *,
    unit_orgnr: str,
    record_system: str,
    record_id: str,
    display: str,
    occurred: str | None = None,
) -> dict[str, Any]:
    """Return the Bundle with one Provenance naming the vendor record behind its writes."""
    # Provenance goes with its targets under consent: only the log's content is named (the
    # child, guardians and Consents are not content a service may be permitted to annotate)
    targets = [
        {"reference": entry["fullUrl"]}
        for entry in bundle.get("entry", [])
        if entry.get("request", {}).get("method") == "PUT"
        and "fullUrl" in entry
        and entry.get("resource", {}).get("resourceType") in _CONTENT_TYPES
    ]
    if not targets:
        return bundle
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": "UPDATE",
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": {"reference": f"Organization?identifier={_ENH}|{unit_orgnr}"},
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": record_system, "value": record_id},
                    "display": display,
                },
            }
        ],
    }
    if occurred:
        provenance["occurredDateTime"] = occurred
    entries = [
        *bundle.get("entry", []),
        {"resource": provenance, "request": {"method": "POST", "url": "Provenance"}},
    ]
    return {**bundle, "entry": entries}
