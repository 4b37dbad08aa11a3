"""Errors of the consent package: raised for caller bugs, never for bad FHIR content.

Bad content in a Consent, Patient or RelatedPerson makes a *decision* (deny, with the reason);
only a wrong call, such as a naive `now` or a request whose type contradicts its resource,
raises.
"""

from __future__ import annotations

__all__ = ["ConsentError", "InvalidPolicy", "InvalidRequest"]


class ConsentError(Exception):
    """Base class of every error raised by the consent package."""


class InvalidRequest(ConsentError):
    """The caller passed arguments the decision point cannot decide on."""


class InvalidPolicy(ConsentError):
    """The municipal consent policy is inconsistent."""
