"""Code systems, identifier systems and resource-type sets the decision point relies on.

Every URL the package compares against lives here, so the enforcement side, the audit module
and the tests use the same strings. See docs/stafettlogg-fhir.md §2, §4, §13, §14 and §18.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ACTION_ACCESS",
    "ACTION_COLLECT",
    "ACTION_CORRECT",
    "CONSENT_ACTION",
    "CONSENT_DOMAIN",
    "CONSENT_SCOPE",
    "DEFAULT_DOMAIN",
    "DEFAULT_PARENTAL_CODES",
    "DNR",
    "ENH",
    "FNR",
    "HIDDEN_FROM_GUARDIANS",
    "HIDDEN_FROM_GUARDIANS_URN",
    "HPR",
    "IDENTITY_TYPES",
    "JOINT_RESPONSIBILITY",
    "LOG_CONTENT_TYPES",
    "LOG_RESOURCE_TYPES",
    "PARENTAL_RESPONSIBILITY",
    "PATIENT_PRIVACY",
    "PERSON_ID_SYSTEMS",
    "RECTIFICATION_CODE",
    "RESOURCE_TYPES",
    "SECURITY_LABEL",
    "TASK_TYPE",
]

# Norwegian identifier systems (HL7 Norway no-basis).
FNR: Final = "urn:oid:2.16.578.1.12.4.1.4.1"
"""Fødselsnummer."""
DNR: Final = "urn:oid:2.16.578.1.12.4.1.4.2"
"""D-nummer."""
HPR: Final = "urn:oid:2.16.578.1.12.4.1.4.4"
"""HPR-nummer (health personnel register)."""
ENH: Final = "urn:oid:2.16.578.1.12.4.1.4.101"
"""Organisasjonsnummer (Enhetsregisteret)."""
PERSON_ID_SYSTEMS: Final = frozenset({FNR, DNR})

PARENTAL_RESPONSIBILITY: Final = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
JOINT_RESPONSIBILITY: Final = "felles"
DEFAULT_PARENTAL_CODES: Final = frozenset({"felles", "mor", "far", "medmor"})

# FHIR R4 code systems used by Consent.
RESOURCE_TYPES: Final = "http://hl7.org/fhir/resource-types"
CONSENT_ACTION: Final = "http://terminology.hl7.org/CodeSystem/consentaction"
CONSENT_SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
PATIENT_PRIVACY: Final = "patient-privacy"
ACTION_ACCESS: Final = "access"
ACTION_COLLECT: Final = "collect"
ACTION_CORRECT: Final = "correct"

# Stafett's own code systems.
CONSENT_DOMAIN: Final = "https://stafett.no/fhir/CodeSystem/consent-domain"
"""Legal domain of a Consent (`Consent.category`): health, education, child-welfare, ..."""
DEFAULT_DOMAIN: Final = "default"
SECURITY_LABEL: Final = "https://stafett.no/fhir/CodeSystem/security-label"
HIDDEN_FROM_GUARDIANS: Final = (SECURITY_LABEL, "hidden-from-guardians")
"""The label of docs/stafettlogg-fhir.md §14 and the example files."""
HIDDEN_FROM_GUARDIANS_URN: Final = ("urn:stafett:security-label", "hidden-from-guardians")
"""The spelling used in issue 3; honoured too, so neither spelling leaks to guardians."""
TASK_TYPE: Final = "https://stafett.no/fhir/CodeSystem/task-type"
RECTIFICATION_CODE: Final = "rectification-request"
"""Task.code of the family's request for a correction (GDPR art. 16), which the family writes."""

# What belongs to one child's log: the Patient compartment as Stafett stores it.
LOG_CONTENT_TYPES: Final = ("CarePlan", "CareTeam", "Goal", "Task", "Communication")
"""The log's own entries, the classes a BTI consent form lists."""
IDENTITY_TYPES: Final = frozenset({"Patient", "RelatedPerson"})
"""Whose log it is: shown to anyone permitted something in the log (§13)."""
LOG_RESOURCE_TYPES: Final = frozenset(
    {*LOG_CONTENT_TYPES, *IDENTITY_TYPES, "Consent", "Provenance"}
)
