"""The consent decision point of the stafettlogg: pure, no I/O, no framework.

"The parents and the child have full insight and decide who else sees the log." The family's
FHIR R4 Consents (https://hl7.org/fhir/R4/consent.html) and the municipality's
`ConsentPolicy` go in; a `Decision` (permitted, basis, reason, consent, provision) comes out.
The enforcement side in `service/` loads the inputs, calls these functions on every path and
audits every decision. Rules and choices: consent/README.md.
"""

from consent.constants import LOG_CONTENT_TYPES, LOG_RESOURCE_TYPES
from consent.decision_point import (
    check_consent_write,
    consent_status,
    decide,
    readable_types,
    valid_consents,
)
from consent.errors import ConsentError, InvalidPolicy, InvalidRequest
from consent.model import (
    ALL_LOG_TYPES,
    AccessRequest,
    Action,
    Actor,
    ActorKind,
    Basis,
    ChildLog,
    ConsentPolicy,
    Decision,
    TypeAccess,
    ValidConsent,
)

__all__ = [
    "ALL_LOG_TYPES",
    "LOG_CONTENT_TYPES",
    "LOG_RESOURCE_TYPES",
    "AccessRequest",
    "Action",
    "Actor",
    "ActorKind",
    "Basis",
    "ChildLog",
    "ConsentError",
    "ConsentPolicy",
    "Decision",
    "InvalidPolicy",
    "InvalidRequest",
    "TypeAccess",
    "ValidConsent",
    "check_consent_write",
    "consent_status",
    "decide",
    "readable_types",
    "valid_consents",
]
