"""Consent enforcement: loads what the decision point needs and applies its decisions.

The decision itself is pure and lives in the `consent` package. This package resolves who the
caller is in FHIR terms (their Organization and Practitioner resources), which child's log a
resource belongs to, loads that log (Patient, RelatedPersons, Consents) and pushes the
family's decisions into SQL so that searches never page or count what the caller cannot see.
"""

from service.enforcement.policy import ConsentAccessPolicy

__all__ = ["ConsentAccessPolicy"]
