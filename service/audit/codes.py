"""Code systems, codes and identifier systems of Stafett's AuditEvents, in one place.

The shapes follow IHE Basic Audit Log Patterns (BALP, https://profiles.ihe.net/ITI/BALP/) and
the R4 AuditEvent resource (https://hl7.org/fhir/R4/auditevent.html).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTION_OF_INTERACTION",
    "AUDIT_ENTITY_TYPE",
    "AUDIT_EVENT_TYPE",
    "BALP_ENTITY_TYPE",
    "CLIENT_ID_SYSTEM",
    "DECISION_SYSTEM",
    "DICOM",
    "ENH_SYSTEM",
    "FNR_SYSTEM",
    "HPR_SYSTEM",
    "JTI_PREFIX",
    "OBJECT_ROLE",
    "OUTCOME_MINOR_FAILURE",
    "OUTCOME_SERIOUS_FAILURE",
    "OUTCOME_SUCCESS",
    "PARTICIPATION_TYPE",
    "PRINCIPAL_KIND_SYSTEM",
    "PROVENANCE_PARTICIPANT_TYPE",
    "RESOURCE_TYPES",
    "RESTFUL_INTERACTION",
    "ROLE_CLASS",
    "SECURITY_SOURCE_TYPE",
    "SOURCE_NAME",
    "STAFETT_INTERACTION",
    "STAFETT_INTERACTIONS",
]

AUDIT_EVENT_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-event-type"
RESTFUL_INTERACTION: Final = "http://hl7.org/fhir/restful-interaction"
DICOM: Final = "http://dicom.nema.org/resources/ontology/DCM"
PARTICIPATION_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ROLE_CLASS: Final = "http://terminology.hl7.org/CodeSystem/v3-RoleClass"
PROVENANCE_PARTICIPANT_TYPE: Final = (
    "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
)
SECURITY_SOURCE_TYPE: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
AUDIT_ENTITY_TYPE: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE: Final = "http://terminology.hl7.org/CodeSystem/object-role"
RESOURCE_TYPES: Final = "http://hl7.org/fhir/resource-types"
BALP_ENTITY_TYPE: Final = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"

# Norwegian identifier systems (HL7 Norway / Volven OIDs).
HPR_SYSTEM: Final = "urn:oid:2.16.578.1.12.4.1.4.4"
FNR_SYSTEM: Final = "urn:oid:2.16.578.1.12.4.1.4.1"
ENH_SYSTEM: Final = "urn:oid:2.16.578.1.12.4.1.4.101"

# Stafett's own namespaces, for values no public system names.
CLIENT_ID_SYSTEM: Final = "urn:stafett:client-id"
DECISION_SYSTEM: Final = "urn:stafett:consent-decision"
PRINCIPAL_KIND_SYSTEM: Final = "urn:stafett:principal-kind"
# BALP OAuth patterns record the token's jti as agent.policy with this RFC 3553 prefix.
JTI_PREFIX: Final = "urn:ietf:params:oauth:jti:"
SOURCE_NAME: Final = "Stafett"

# AuditEvent.outcome (required binding, http://hl7.org/fhir/audit-event-outcome).
OUTCOME_SUCCESS: Final = "0"
OUTCOME_MINOR_FAILURE: Final = "4"
OUTCOME_SERIOUS_FAILURE: Final = "8"

# The restful-interaction codes Stafett audits and their AuditEvent.action. Searches, batches,
# transactions and operations execute a query or a set of requests (E, as in BALP Query);
# history of one resource reads that resource's versions (R); history of a type is a query.
# Interactions that are not REST calls (the consent router's deliveries) get Stafett's own
# subtype code system instead of http://hl7.org/fhir/restful-interaction.
STAFETT_INTERACTION: Final = "https://stafett.no/fhir/CodeSystem/audit-interaction"
STAFETT_INTERACTIONS: Final = frozenset({"delivery"})

ACTION_OF_INTERACTION: Final = {
    "read": "R",
    "vread": "R",
    "history-instance": "R",
    "search-type": "E",
    "search-system": "E",
    "history-type": "E",
    "history-system": "E",
    "create": "C",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "batch": "E",
    "transaction": "E",
    "operation": "E",
    # the consent router sending a change to an organisation's topic: data leaves, as a read
    "delivery": "R",
}
