"""Inputs and outputs of the decision point: frozen dataclasses, no behaviour beyond checks.

The enforcement side (package `service`) builds an `Actor` from the token, a `ChildLog` from
the stored Patient, RelatedPersons and Consents, and an `AccessRequest` per read, search hit
or write; the decision point answers with a `Decision`. See consent/README.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Literal

from consent.constants import (
    DEFAULT_DOMAIN,
    DEFAULT_PARENTAL_CODES,
    HIDDEN_FROM_GUARDIANS,
    HIDDEN_FROM_GUARDIANS_URN,
    LOG_RESOURCE_TYPES,
)
from consent.errors import InvalidPolicy

__all__ = [
    "ALL_LOG_TYPES",
    "AccessRequest",
    "Action",
    "Actor",
    "ActorKind",
    "Basis",
    "ChildLog",
    "ConsentPolicy",
    "Decision",
    "TypeAccess",
    "ValidConsent",
]

Label = tuple[str, str]
"""A security label as (system, code)."""

ALL_LOG_TYPES = LOG_RESOURCE_TYPES
"""Every resource type of a child's log; `TypeAccess.types` equal to this means "all"."""


class ActorKind(StrEnum):
    """Who is asking: an employee, a machine of an organisation, a citizen, or a DPO."""

    PRACTITIONER = "practitioner"
    SYSTEM = "system"
    CITIZEN = "citizen"
    DPO = "dpo"


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller, with the resource ids its token resolves to (resolved by the caller).

    `organization_ids` are the ids of Stafett Organization resources whose ENH identifier
    equals `organization_number`; `practitioner_ids` those of Practitioner resources with the
    token's HPR number or fødselsnummer; `practitioner_role_ids` the caller's active
    PractitionerRoles at that organisation (may stay empty). `pid` is a fødselsnummer or
    D-nummer and is kept out of `repr`.
    """

    kind: ActorKind
    organization_number: str | None = None
    organization_ids: frozenset[str] = frozenset()
    practitioner_ids: frozenset[str] = frozenset()
    practitioner_role_ids: frozenset[str] = frozenset()
    pid: str | None = field(default=None, repr=False)
    hpr: str | None = None


@dataclass(frozen=True)
class ChildLog:
    """One child's log as the decision point needs it: the Patient, guardians and Consents.

    `related_persons` are the RelatedPersons with `patient` = this child and `consents` every
    Consent with `patient` = this child, whatever its status. To decide on a transaction that
    opens or changes a log, pass the resources pending in it too, with `urn:uuid:` references
    already rewritten to the ids they will get (see consent/README.md, "Opening a log").

    Treat the mappings as immutable once the log is built: parsed consents and per-`now`
    results are memoised on the instance, so one `ChildLog` per child per request makes every
    decision after the first cheap.
    """

    patient_id: str
    patient: Mapping[str, Any]
    related_persons: tuple[Mapping[str, Any], ...] = ()
    consents: tuple[Mapping[str, Any], ...] = ()
    _memo: dict[str, Any] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )


def _default_consent_age() -> Mapping[str, int]:
    return MappingProxyType({DEFAULT_DOMAIN: 16})


@dataclass(frozen=True)
class ConsentPolicy:
    """Municipal configuration of who may consent and who reads; never hard-coded rules.

    - `consent_age`: age from which the youth consents alone, per legal domain (the codes of
      `https://stafett.no/fhir/CodeSystem/consent-domain` in `Consent.category`); domains not
      listed use `default` (16 unless configured).
    - `guardians_required`: `one` guardian with parental responsibility suffices, or `all`
      guardians with joint responsibility (`felles`) must be performers.
    - `youth_read_age`: from this age the child reads their own log.
    - `parental_codes`: codes of no-basis-parental-responsibility that let a guardian read and
      consent (`andre` and `ukjent` do not by default).
    - `hidden_label`: the label that hides a resource from guardians; `also_hidden_labels`
      are honoured too (by default the issue-3 spelling `urn:stafett:security-label`).
    - `guardian_until_age`: parental responsibility ends when the child turns this old
      (barneloven § 30: 18); `None` keeps guardians' rights for the whole log.
    - `family_write_types`: log resource types the family may write besides Consent (none by
      default; e.g. `{"Communication"}` lets parents add notes).
    - `revision`: a label of this configuration, copied into every Decision for the audit.
    """

    consent_age: Mapping[str, int] = field(default_factory=_default_consent_age)
    guardians_required: Literal["one", "all"] = "one"
    youth_read_age: int = 12
    parental_codes: frozenset[str] = DEFAULT_PARENTAL_CODES
    hidden_label: Label = HIDDEN_FROM_GUARDIANS
    also_hidden_labels: frozenset[Label] = frozenset({HIDDEN_FROM_GUARDIANS_URN})
    guardian_until_age: int | None = 18
    family_write_types: frozenset[str] = frozenset()
    revision: str = "default"
    hidden_labels: frozenset[Label] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        """Refuse inconsistent settings and precompute the set of hiding labels."""
        if self.guardians_required not in ("one", "all"):
            raise InvalidPolicy(
                f"guardians_required must be 'one' or 'all', not {self.guardians_required!r}"
            )
        ages = [self.youth_read_age, *self.consent_age.values()]
        if self.guardian_until_age is not None:
            ages.append(self.guardian_until_age)
        if any(not isinstance(age, int) or age < 0 for age in ages):
            raise InvalidPolicy("ages in the consent policy must be non-negative integers")
        unknown = self.family_write_types - LOG_RESOURCE_TYPES
        if unknown or "Consent" in self.family_write_types:
            raise InvalidPolicy(
                "family_write_types must name log resource types other than Consent, "
                f"not {sorted(unknown) or ['Consent']}"
            )
        object.__setattr__(
            self, "hidden_labels", frozenset({self.hidden_label, *self.also_hidden_labels})
        )

    def consent_age_for(self, domain: str) -> int:
        """Return the age from which the youth consents alone in this legal domain."""
        age = self.consent_age.get(domain)
        if age is None:
            age = self.consent_age.get(DEFAULT_DOMAIN, 16)
        return age


class Action(StrEnum):
    """What the caller wants to do with the resource (consentaction in brackets).

    READ: read in Stafett (`access`). WRITE: create or update (`collect` or `correct`).
    DELIVER: have it delivered into the organisation's own system by the consent router
    (`collect`). DELETE: as WRITE, except that Consents are never deleted.
    """

    READ = "read"
    WRITE = "write"
    DELIVER = "deliver"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class AccessRequest:
    """One question: may the actor do `action` on this resource (or on this type)?

    With `resource` None the question is about the type ("could the actor read some Task of
    this log?") and the answer over-approximates; always decide again per resource.
    `security_labels` (from `meta.security`) default to those of `resource`.
    """

    action: Action
    resource_type: str
    resource: Mapping[str, Any] | None = None
    security_labels: frozenset[Label] | None = None


class Basis(StrEnum):
    """Which rule decided, for the audit record and the DPO."""

    FAMILY_GUARDIAN = "family-guardian"
    FAMILY_YOUTH = "family-youth"
    CONSENT = "consent"
    NAMED_IN_CONSENT = "named-in-consent"
    RECORDED_WITH_SIGNED_FORM = "recorded-with-signed-form"
    DPO = "dpo"
    DEFAULT_DENY = "default-deny"
    DENIED_BY_PROVISION = "denied-by-provision"
    CONSENT_INVALID = "consent-invalid"
    HIDDEN_FROM_GUARDIANS = "hidden-from-guardians"
    NOT_FAMILY = "not-family"
    NOT_IN_LOG = "not-in-log"
    CONSENT_WRITE_REFUSED = "consent-write-refused"


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """The answer: permitted or not, by which rule, Consent and provision, and why.

    `provision` is a FHIRPath-like path of the deciding provision, e.g.
    `Consent.provision.provision[1]`. `decision_id` comes from the caller and is stored with
    the audit record (as OPA decision logs do); `policy_revision` names the configuration.
    """

    permitted: bool
    basis: Basis
    reason: str
    decision_id: str
    consent_id: str | None = None
    provision: str | None = None
    policy_revision: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ValidConsent:
    """One Consent of the log with its verdict: does it count now, and why (not)."""

    consent_id: str | None
    valid: bool
    reason: str
    status: str | None
    domains: tuple[str, ...]
    performers: tuple[str, ...]
    period_start: str | None
    period_end: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeAccess:
    """What an actor might read in one log, for pushing a filter into SQL.

    `types` never under-approximates: a resource whose type is not in it is never readable.
    Resources carrying any of `excluded_labels` are never readable either. When
    `needs_resource_check` is False every other resource of `types` is readable, so the
    per-hit `decide` may be skipped (still audit); when True, decide per hit.
    """

    types: frozenset[str]
    excluded_labels: frozenset[Label] = frozenset()
    needs_resource_check: bool = True

    @property
    def is_all(self) -> bool:
        """Return whether every type of the log may be readable."""
        return self.types >= ALL_LOG_TYPES

    @property
    def is_none(self) -> bool:
        """Return whether nothing in the log is readable."""
        return not self.types
