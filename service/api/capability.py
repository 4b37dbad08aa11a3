"""The CapabilityStatement, generated from what the server really indexes and serves."""

from __future__ import annotations

from typing import Any

import orjson

from service import __version__
from service.fhir import spec
from service.fhir.validation import WRITABLE_TYPES

__all__ = ["build_capability_statement", "capability_statement"]

_WRITE_INTERACTIONS = ("create", "update", "patch", "delete")
_READ_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
_MODIFIERS = {
    "token": ":missing :not :exact",
    "uri": ":missing :not :below :above",
    "string": ":missing :exact :contains",
    "date": ":missing :not; prefixes eq ne gt lt ge le sa eb ap",
    "reference": ":missing :not :identifier :[Type], chaining one level (e.g. subject.identifier)",
}


def build_capability_statement(*, fhir_base: str, search_params: Any) -> dict[str, Any]:
    """Build the CapabilityStatement from the compiled search parameters."""
    resources = []
    referenced_by: dict[str, list[str]] = {}
    for resource_type in spec.SUPPORTED_RESOURCE_TYPES:
        for code, param in search_params[resource_type].items():
            if param.type == "reference":
                for target in param.target:
                    referenced_by.setdefault(target, []).append(f"{resource_type}:{code}")
    common = spec.common_search_params()
    for resource_type in spec.SUPPORTED_RESOURCE_TYPES:
        params = search_params[resource_type]
        type_defs = spec.search_params(resource_type)
        entries = [
            {
                "name": name,
                "definition": common[name].url,
                "type": common[name].type,
                "documentation": doc,
            }
            for name, doc in (
                ("_id", "Logical id of the resource"),
                ("_lastUpdated", "When the resource version last changed (date prefixes)"),
            )
        ]
        for code in sorted(params):
            param = params[code]
            definition = type_defs.get(code) or common[code]
            entries.append(
                {
                    "name": code,
                    "definition": definition.url,
                    "type": param.type,
                    "documentation": (
                        f"{definition.description} Modifiers: {_MODIFIERS[param.type]}"
                    ),
                }
            )
        interactions = _READ_INTERACTIONS + (
            _WRITE_INTERACTIONS if resource_type in WRITABLE_TYPES else ()
        )
        resource: dict[str, Any] = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in sorted(interactions)],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": resource_type in WRITABLE_TYPES,
            "conditionalCreate": resource_type in WRITABLE_TYPES,
            "conditionalRead": "not-supported",
            "conditionalUpdate": resource_type in WRITABLE_TYPES,
            "conditionalDelete": "not-supported",
            "referencePolicy": ["literal", "logical", "local"],
            "searchInclude": sorted(
                f"{resource_type}:{code}"
                for code, param in params.items()
                if param.type == "reference"
            ),
            "searchRevInclude": sorted(referenced_by.get(resource_type, [])),
            "searchParam": entries,
        }
        if resource_type not in WRITABLE_TYPES:
            resource["documentation"] = "Read-only: Stafett records AuditEvents itself."
        if resource_type == "Patient":
            resource["operation"] = [
                {
                    "name": "consent-status",
                    "definition": "https://stafett.no/fhir/OperationDefinition/consent-status",
                    "documentation": (
                        "GET Patient/{id}/$consent-status[?organization=<org.nr>]: may this "
                        "organisation (or the caller) see the child's log, and by which Consent. "
                        "Answers a Parameters resource (permitted, basis, reason, consent, "
                        "decisionId). For the family, a DPO, and professionals who see the log."
                    ),
                },
                {
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything",
                    "documentation": (
                        "GET Patient/{id}/$everything[?_count=&_offset=&_type=]: every resource "
                        "of the child's log the caller may read (searchset, paged), with the "
                        "services and employees it refers to. The family's right of access; "
                        "professionals get what the family's Consents let them read; entries "
                        "hidden from guardians stay hidden from guardians; 404 for a caller who "
                        "may not see the child."
                    ),
                },
            ]
        if resource_type == "CarePlan":
            resource["operation"] = [
                {
                    "name": "close",
                    "definition": "https://stafett.no/fhir/OperationDefinition/careplan-close",
                    "documentation": (
                        "POST CarePlan/{id}/$close [Parameters date]: BTI outcome a, in one "
                        "transaction: the open level Task gets the outcome close, the CareTeam "
                        "becomes inactive, the CarePlan completed with period.end (which starts "
                        "the retention clock). Decided by consent like the writes it makes."
                    ),
                }
            ]
        resources.append(resource)
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "Stafett",
        "kind": "instance",
        "software": {"name": "Stafett", "version": __version__},
        "implementation": {
            "description": "Stafett FHIR R4 system of record for the BTI stafettlogg",
            "url": fhir_base,
        },
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                "mode": "server",
                "documentation": (
                    "Results are paged with _count and _offset. Unknown search parameters are "
                    "ignored unless the request says Prefer: handling=strict."
                ),
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "OAuth",
                                },
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                },
                            ]
                        }
                    ],
                    "description": (
                        "Bearer JWTs from configured issuers (HelseID, ID-porten, Maskinporten "
                        "styles); SMART v2 scopes gate each interaction."
                    ),
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}],
            }
        ],
    }


def capability_statement(*, fhir_base: str, search_params: Any) -> bytes:
    """Return the serialised CapabilityStatement."""
    return orjson.dumps(
        build_capability_statement(fhir_base=fhir_base, search_params=search_params)
    )
