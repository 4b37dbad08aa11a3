"""The deletion record: an AuditEvent that proves a child's data was deleted, without the data.

It names the child's Patient id and the logs' CarePlan ids as *identifiers* (pseudonymous:
server-assigned ids, meaningless once the resources are gone), never as references, so no
search index row ties it to a child and a later purge never takes it for an event about one.
No name, fødselsnummer or free text: counts, dates, the rule that applied and the archive's
manifest hash (https://hl7.org/fhir/R4/auditevent.html).
"""

from __future__ import annotations

from datetime import date
from typing import Any

from service.audit import codes
from service.search.values import micros_to_instant

__all__ = [
    "DELETED_CHILD_SYSTEM",
    "DELETED_LOG_SYSTEM",
    "DELETION_SUBTYPE",
    "LIFECYCLE_INTERACTION",
    "deletion_record",
]

LIFECYCLE_INTERACTION = "https://stafett.no/fhir/CodeSystem/lifecycle-event"
DELETION_SUBTYPE = "deletion"
DELETED_CHILD_SYSTEM = "https://stafett.no/fhir/sid/deleted-patient"
DELETED_LOG_SYSTEM = "https://stafett.no/fhir/sid/deleted-careplan"


def _detail(name: str, value: object) -> dict[str, str]:
    return {"type": name, "valueString": str(value)}


def deletion_record(
    *,
    record_id: str,
    recorded: int,
    patient_id: str,
    careplans: tuple[str, ...],
    counts: dict[str, Any],
    reason: str,
    closed: date | None,
    retention_years: int,
    archive_sha256: str | None,
    actor: str,
) -> dict[str, Any]:
    """Return the AuditEvent (without meta) that records one deletion."""
    details = [_detail("reason", reason), _detail("retention-years", retention_years)]
    if closed is not None:
        details.append(_detail("log-closed", closed.isoformat()))
    if archive_sha256:
        details.append(_detail("archive-manifest-sha256", archive_sha256))
    for resource_type, count in counts.get("resources", {}).items():
        details.append(_detail(f"deleted-{resource_type}", count))
    for name, key in (
        ("deleted-versions", "versions"),
        ("deleted-index-rows", "indexRows"),
        ("deleted-audit-events", "auditEvents"),
        ("deleted-outbox-rows", "outboxRows"),
        ("deleted-time-events", "timeEvents"),
        ("deleted-delivery-states", "deliveryStates"),
        ("kept-shared", "keptShared"),
    ):
        details.append(_detail(name, counts.get(key, 0)))
    entities: list[dict[str, Any]] = [
        {
            "what": {"identifier": {"system": DELETED_CHILD_SYSTEM, "value": patient_id}},
            "type": {"system": codes.AUDIT_ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": codes.OBJECT_ROLE, "code": "1", "display": "Patient"},
            "description": "The deleted child's former Patient id (pseudonymous)",
            "detail": details,
        }
    ]
    entities.extend(
        {
            "what": {"identifier": {"system": DELETED_LOG_SYSTEM, "value": careplan}},
            "type": {"system": codes.AUDIT_ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": codes.OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
            "description": "A deleted stafettlogg (former CarePlan id)",
        }
        for careplan in careplans
    )
    description = (
        f"Deleted after retention ({retention_years} years after the log closed)"
        if reason == "retention"
        else "Deleted leftovers of an earlier deletion that another log no longer shares"
    )
    return {
        "resourceType": "AuditEvent",
        "id": record_id,
        "type": {
            "system": codes.DICOM,
            "code": "110110",
            "display": "Patient Record",
        },
        "subtype": [
            {"system": LIFECYCLE_INTERACTION, "code": DELETION_SUBTYPE, "display": "Deletion"}
        ],
        "action": "D",
        "recorded": micros_to_instant(recorded),
        "outcome": codes.OUTCOME_SUCCESS,
        "outcomeDesc": description,
        "purposeOfEvent": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": "RECORDMGT",
                        "display": "records management",
                    }
                ]
            }
        ],
        "agent": [
            {
                "type": {
                    "coding": [{"system": codes.DICOM, "code": "110150", "display": "Application"}]
                },
                "who": {"display": actor},
                "requestor": True,
            }
        ],
        "source": {
            "observer": {"display": codes.SOURCE_NAME},
            "type": [
                {
                    "system": codes.SECURITY_SOURCE_TYPE,
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
        "entity": entities,
    }
