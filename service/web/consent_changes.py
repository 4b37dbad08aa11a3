"""The family's consent changes per service: grant, narrow (or widen) and withdraw.

Each change is ordinary Consent writes in one repository transaction, so the consent policy
decides them, the audit records them, the outbox carries them to the bus, and the very next
request anywhere sees them. Withdrawing sets a Consent `inactive`; a Consent that also names
other services is replaced by a new one for those services (signed by the visitor's login).
Granting creates a Consent for the service with the visitor as performer; narrowing is a
new Consent with the chosen actions and classes, the old one `inactive`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

import orjson

from service.repository import FhirRepository
from service.web.consent_view import (
    ACTION_SYSTEM,
    ACTIONS,
    CLASS_SYSTEM,
    CLASSES,
    action_codes,
    class_codes,
    names_org,
)
from service.web.directory import ENH, Directory, Org

__all__ = [
    "ChangePlan",
    "Choice",
    "apply_change",
    "effective_access",
    "has_exceptions",
    "plan_change",
]

_IRCP: Final = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}
_LOINC: Final = {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}
_CRITERIA: Final = ("securityLabel", "data", "code", "period", "dataPeriod", "purpose")


@dataclass(frozen=True, slots=True)
class Choice:
    """What the family lets one service do: actions, parts of the log, until when."""

    actions: tuple[str, ...]
    classes: tuple[str, ...]
    until: date


@dataclass(frozen=True, slots=True)
class ChangePlan:
    """The Consent writes of one change: updates (to inactive) and new Consents."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    creates: list[dict[str, Any]] = field(default_factory=list)


def _naming(
    consents: Sequence[Mapping[str, Any]], org: Org, directory: Directory
) -> list[Mapping[str, Any]]:
    return [
        c
        for c in consents
        if c.get("status") == "active" and names_org(c.get("provision") or {}, org, directory)
    ]


def _flattenable(nested: Mapping[str, Any]) -> bool:
    """Return whether a nested deny only removes actions or only removes classes."""
    if nested.get("type") != "deny" or any(nested.get(k) for k in _CRITERIA):
        return False
    return bool(nested.get("action")) != bool(nested.get("class"))


def effective_access(
    consents: Sequence[Mapping[str, Any]], org: Org, directory: Directory
) -> tuple[list[str], list[str]]:
    """Return the actions and classes the active Consents give a service (exceptions applied)."""
    actions: set[str] = set()
    classes: set[str] = set()
    for consent in _naming(consents, org, directory):
        root = consent.get("provision") or {}
        granted = set(action_codes(root) or ACTIONS)
        covered = set(class_codes(root) or CLASSES)
        for nested in root.get("provision") or ():
            if not _flattenable(nested) or not names_org(nested, org, directory):
                continue
            denied_actions = set(action_codes(nested))
            granted = set() if "access" in denied_actions else granted - denied_actions
            covered -= set(class_codes(nested))
        if granted and covered:
            actions |= granted | {"access"}
            classes |= covered
    return [a for a in ACTIONS if a in actions], [c for c in CLASSES if c in classes]


def _actor(org: Org) -> dict[str, Any]:
    reference: dict[str, Any] = (
        {"reference": f"Organization/{org.id}"}
        if org.id
        else {"identifier": {"system": ENH, "value": org.number}}
    )
    return {"role": copy.deepcopy(_IRCP), "reference": reference}


def _without_org(
    nested: list[Mapping[str, Any]], org: Org, directory: Directory
) -> list[dict[str, Any]]:
    kept: list[dict[str, Any]] = []
    for provision in nested:
        actors = provision.get("actor") or []
        if not actors:
            kept.append(copy.deepcopy(dict(provision)))
            continue
        others = [a for a in actors if not names_org({"actor": [a]}, org, directory)]
        if others:
            kept.append({**copy.deepcopy(dict(provision)), "actor": copy.deepcopy(others)})
    return kept


def _for_org(
    nested: list[Mapping[str, Any]], org: Org, directory: Directory
) -> list[dict[str, Any]]:
    """Return the exceptions that still narrow what this service gets in the new Consent."""
    kept: list[dict[str, Any]] = []
    for provision in nested:
        actors = provision.get("actor") or []
        if not actors:
            kept.append(copy.deepcopy(dict(provision)))
        elif names_org(provision, org, directory) and not _flattenable(provision):
            kept.append({**copy.deepcopy(dict(provision)), "actor": [_actor(org)]})
    return kept


def has_exceptions(consents: Sequence[Mapping[str, Any]], org: Org, directory: Directory) -> bool:
    """Return whether exceptions beyond actions and classes narrow what the service gets."""
    return any(
        _for_org(list((c.get("provision") or {}).get("provision") or ()), org, directory)
        for c in _naming(consents, org, directory)
    )


def _signed_by_me(consent: Mapping[str, Any], performer: str, now: str) -> dict[str, Any]:
    body = copy.deepcopy(dict(consent))
    for key in ("id", "meta", "text", "sourceAttachment", "identifier"):
        body.pop(key, None)
    body["status"] = "active"
    body["dateTime"] = now
    body["performer"] = [{"reference": performer}]
    return body


def _new_consent(
    patient_id: str,
    performer: str,
    org: Org,
    choice: Choice,
    *,
    category: list[Any],
    nested: list[dict[str, Any]],
    now: str,
    start: date,
) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "period": {"start": start.isoformat(), "end": choice.until.isoformat()},
        "actor": [_actor(org)],
        "action": [
            {"coding": [{"system": ACTION_SYSTEM, "code": code}]}
            for code in ACTIONS
            if code in choice.actions
        ],
    }
    if set(choice.classes) != set(CLASSES):
        provision["class"] = [
            {"system": CLASS_SYSTEM, "code": code} for code in CLASSES if code in choice.classes
        ]
    if nested:
        provision["provision"] = nested
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": category or [copy.deepcopy(_LOINC)],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": now,
        "performer": [{"reference": performer}],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": provision,
    }


def plan_change(
    *,
    consents: Sequence[Mapping[str, Any]],
    org: Org,
    directory: Directory,
    patient_id: str,
    performer: str,
    choice: Choice | None,
    now: str,
    start: date,
) -> ChangePlan:
    """Plan the writes that leave the service with exactly `choice` (None: withdraw)."""
    plan = ChangePlan()
    kept: list[dict[str, Any]] = []
    category: list[Any] = []
    for consent in _naming(consents, org, directory):
        plan.updates.append({**copy.deepcopy(dict(consent)), "status": "inactive"})
        root = consent.get("provision") or {}
        nested = list(root.get("provision") or ())
        category = category or copy.deepcopy(list(consent.get("category") or ()))
        kept.extend(_for_org(nested, org, directory))
        others = [
            a for a in root.get("actor") or () if not names_org({"actor": [a]}, org, directory)
        ]
        if others:
            body = _signed_by_me(consent, performer, now)
            body["provision"]["actor"] = copy.deepcopy(others)
            remaining = _without_org(nested, org, directory)
            if remaining:
                body["provision"]["provision"] = remaining
            else:
                body["provision"].pop("provision", None)
            plan.creates.append(body)
    if choice is not None:
        unique = {orjson.dumps(n, option=orjson.OPT_SORT_KEYS): n for n in kept}
        plan.creates.append(
            _new_consent(
                patient_id,
                performer,
                org,
                choice,
                category=category,
                nested=list(unique.values()),
                now=now,
                start=start,
            )
        )
    return plan


def apply_change(repo: FhirRepository, plan: ChangePlan) -> None:
    """Store the plan in one transaction; the policy decides it as a whole at commit."""
    with repo.transaction() as conn:
        for body in plan.updates:
            repo.update(resource_type="Consent", id=str(body["id"]), resource=body, conn=conn)
        for body in plan.creates:
            repo.create(resource=body, resource_type="Consent", conn=conn)
