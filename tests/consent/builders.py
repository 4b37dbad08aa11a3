"""Builders of realistic FHIR dicts for consent scenarios, adapted from examples/stafettlogg/.

Identities are the demo's synthetic ones (docs/stafettlogg-fhir.md §17): Nora
(15832151200, born 2021-03-15), mother Kari (04868941214), father Ola (22918731958),
nurse Hanne (HPR 9144896, fnr 28827913660), and the Fjellvik services.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from consent import Actor, ActorKind, ChildLog
from consent.constants import (
    CONSENT_ACTION,
    CONSENT_DOMAIN,
    CONSENT_SCOPE,
    ENH,
    FNR,
    HIDDEN_FROM_GUARDIANS,
    HPR,
    PARENTAL_RESPONSIBILITY,
    RESOURCE_TYPES,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "stafettlogg"
OSLO = timezone(timedelta(hours=2), "CEST")
NOW = datetime(2026, 10, 1, 12, 0, tzinfo=OSLO)

CHILD = "demo-child"
CHILD_FNR = "15832151200"
MOTHER_FNR = "04868941214"
FATHER_FNR = "22918731958"
STEP_FNR = "11889012345"
NURSE_FNR = "28827913660"
NURSE_HPR = "9144896"
TEACHER_FNR = "12898522405"

KINDERGARTEN = ("demo-kindergarten", "912837467")
HEALTH = ("demo-health-station", "945182733")
SCHOOL = ("demo-school", "927364514")
NAV = ("demo-nav", "961728398")

R_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
HIDDEN = {"system": HIDDEN_FROM_GUARDIANS[0], "code": HIDDEN_FROM_GUARDIANS[1]}
HIDDEN_URN = {"system": "urn:stafett:security-label", "code": "hidden-from-guardians"}
COMM_CS = "https://stafett.no/fhir/CodeSystem/communication-category"
SIGNED_FORM = {
    "contentType": "application/pdf",
    "data": "JVBERi0xLjQK",
    "title": "Samtykkeerklæring BTI (signert)",
    "creation": "2026-08-31T14:10:00+02:00",
}

Json = dict[str, Any]


def load(name: str) -> Json:
    """Return an example file of examples/stafettlogg/."""
    data: Json = json.loads((EXAMPLES / name).read_text(encoding="utf-8"))
    return data


# References -------------------------------------------------------------------------------


def org(which: tuple[str, str]) -> Json:
    """Return a literal reference to an Organization."""
    return {"reference": f"Organization/{which[0]}"}


def enh(which: tuple[str, str]) -> Json:
    """Return a logical reference to an Organization by org.nr."""
    return {"identifier": {"system": ENH, "value": which[1]}}


def ref(reference: str) -> Json:
    """Return a literal reference."""
    return {"reference": reference}


def hpr(number: str) -> Json:
    """Return a logical reference to a Practitioner by HPR number."""
    return {"identifier": {"system": HPR, "value": number}}


def by_fnr(number: str) -> Json:
    """Return a logical reference to a person by fødselsnummer."""
    return {"identifier": {"system": FNR, "value": number}}


# People -------------------------------------------------------------------------------------


def patient(
    *, fnr: str = CHILD_FNR, birth_date: str | None = "2021-03-15", system: str = FNR
) -> Json:
    """Return the child's Patient."""
    resource: Json = {
        "resourceType": "Patient",
        "id": CHILD,
        "identifier": [{"system": system, "value": fnr}],
        "active": True,
        "name": [{"family": "Eksempelsen", "given": ["Nora"]}],
        "gender": "female",
    }
    if birth_date is not None:
        resource["birthDate"] = birth_date
    return resource


def born(years_ago: int, *, days: int = 0) -> str:
    """Return a birthDate that makes the child `years_ago` old at NOW (minus `days`)."""
    day = NOW.date().replace(year=NOW.year - years_ago) + timedelta(days=days)
    return day.isoformat()


def guardian(
    rp_id: str = "demo-mother",
    *,
    fnr: str = MOTHER_FNR,
    code: str | None = "felles",
    family: str = "mor",
    active: bool | None = True,
    period: Json | None = None,
    child: str = CHILD,
) -> Json:
    """Return a RelatedPerson in the HL7 Norway no-basis shape (relatedperson-guardian.json)."""
    relationship: list[Json] = [
        {
            "coding": [
                {
                    "system": "http://hl7.no/fhir/CodeSystem/no-basis-family-relation",
                    "code": family,
                }
            ]
        }
    ]
    if code is not None:
        relationship.append({"coding": [{"system": PARENTAL_RESPONSIBILITY, "code": code}]})
    resource: Json = {
        "resourceType": "RelatedPerson",
        "id": rp_id,
        "identifier": [{"system": FNR, "value": fnr}],
        "patient": {"reference": f"Patient/{child}"},
        "relationship": relationship,
        "name": [{"family": "Eksempelsen", "given": ["Kari"]}],
    }
    if active is not None:
        resource["active"] = active
    if period is not None:
        resource["period"] = period
    return resource


MOTHER = guardian()
FATHER = guardian("demo-father", fnr=FATHER_FNR, family="far")


# Consent ------------------------------------------------------------------------------------


def coding_list(system: str, codes: list[str]) -> list[Json]:
    """Return Codings of one system."""
    return [{"system": system, "code": code} for code in codes]


def provision(
    kind: str = "permit",
    *,
    actors: list[Json] | None = None,
    classes: list[str] | None = None,
    actions: list[str] | None = None,
    labels: list[Json] | None = None,
    codes: list[Json] | None = None,
    data: list[Json] | None = None,
    period: Json | None = None,
    nested: list[Json] | None = None,
) -> Json:
    """Return a Consent.provision element."""
    element: Json = {"type": kind}
    if period is not None:
        element["period"] = period
    if actors is not None:
        element["actor"] = [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "reference": actor,
            }
            for actor in actors
        ]
    if actions is not None:
        element["action"] = [{"coding": [{"system": CONSENT_ACTION, "code": a}]} for a in actions]
    if labels is not None:
        element["securityLabel"] = labels
    if classes is not None:
        element["class"] = coding_list(RESOURCE_TYPES, classes)
    if codes is not None:
        element["code"] = [{"coding": [c]} for c in codes]
    if data is not None:
        element["data"] = data
    if nested is not None:
        element["provision"] = nested
    return element


PERIOD = {"start": "2026-08-31", "end": "2027-11-01"}


def consent(
    consent_id: str = "demo-consent",
    *,
    status: str = "active",
    performers: list[Json] | None = None,
    actors: list[Json] | None = None,
    classes: list[str] | None = None,
    actions: list[str] | None = None,
    period: Json | None = PERIOD,
    nested: list[Json] | None = None,
    root: Json | None = None,
    domain: str | None = None,
    form: bool = True,
    child: str = CHILD,
    signed: str = "2026-08-31T14:10:00+02:00",
    scope: str = "patient-privacy",
    labels: list[Json] | None = None,
) -> Json:
    """Return a Consent shaped like consent-permit.json, with the given provision."""
    category: list[Json] = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    if domain is not None:
        category.append({"coding": [{"system": CONSENT_DOMAIN, "code": domain}]})
    if root is None:
        root = provision(
            "permit",
            actors=actors if actors is not None else [org(KINDERGARTEN)],
            classes=classes,
            actions=actions,
            nested=nested,
        )
    root = copy.deepcopy(root)
    if period is not None:
        root["period"] = period
    resource: Json = {
        "resourceType": "Consent",
        "id": consent_id,
        "status": status,
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": scope}]},
        "category": category,
        "patient": {"reference": f"Patient/{child}"},
        "dateTime": signed,
        "performer": performers if performers is not None else [ref("RelatedPerson/demo-mother")],
        "organization": [org(KINDERGARTEN)],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": root,
    }
    if form:
        resource["sourceAttachment"] = dict(SIGNED_FORM)
    if labels is not None:
        resource["meta"] = {"security": labels}
    return resource


def log(
    *consents: Json,
    related: tuple[Json, ...] = (MOTHER, FATHER),
    child: Json | None = None,
) -> ChildLog:
    """Return the child's log with these Consents."""
    return ChildLog(
        patient_id=CHILD,
        patient=child if child is not None else patient(),
        related_persons=related,
        consents=consents,
    )


# Log entries --------------------------------------------------------------------------------

_SUBJECT = {
    "Task": "for",
    "Communication": "subject",
    "CarePlan": "subject",
    "CareTeam": "subject",
    "Goal": "subject",
    "Consent": "patient",
    "RelatedPerson": "patient",
}


def entry(
    rtype: str,
    rid: str = "e1",
    *,
    labels: list[Json] | None = None,
    category: str | None = None,
    child: str = CHILD,
) -> Json:
    """Return a minimal log resource of a type, about the child."""
    if rtype == "Patient":
        resource = patient()
    elif rtype == "RelatedPerson":
        resource = copy.deepcopy(MOTHER)
    elif rtype == "Consent":
        resource = consent(rid)
    else:
        resource = {"resourceType": rtype, "id": rid}
        if rtype in _SUBJECT:
            resource[_SUBJECT[rtype]] = {"reference": f"Patient/{child}"}
        if rtype == "Provenance":
            resource["target"] = [{"reference": "Task/e1/_history/1"}]
    if category is not None:
        resource["category"] = [{"coding": [{"system": COMM_CS, "code": category}]}]
    if labels is not None:
        resource["meta"] = {"security": labels}
    return resource


# Actors -------------------------------------------------------------------------------------


def service(which: tuple[str, str], kind: ActorKind = ActorKind.SYSTEM) -> Actor:
    """Return a system (or practitioner without own identifiers) of an organisation."""
    return Actor(kind=kind, organization_number=which[1], organization_ids=frozenset({which[0]}))


TEACHER = Actor(
    kind=ActorKind.PRACTITIONER,
    organization_number=KINDERGARTEN[1],
    organization_ids=frozenset({KINDERGARTEN[0]}),
    practitioner_ids=frozenset({"demo-teacher"}),
    practitioner_role_ids=frozenset({"demo-teacher-role"}),
    pid=TEACHER_FNR,
)
NURSE = Actor(
    kind=ActorKind.PRACTITIONER,
    organization_number=HEALTH[1],
    organization_ids=frozenset({HEALTH[0]}),
    practitioner_ids=frozenset({"demo-nurse"}),
    pid=NURSE_FNR,
    hpr=NURSE_HPR,
)
KG_SYSTEM = service(KINDERGARTEN)
HEALTH_SYSTEM = service(HEALTH)
NAV_SYSTEM = service(NAV)
SCHOOL_SYSTEM = service(SCHOOL)
MOTHER_CITIZEN = Actor(kind=ActorKind.CITIZEN, pid=MOTHER_FNR)
FATHER_CITIZEN = Actor(kind=ActorKind.CITIZEN, pid=FATHER_FNR)
STEP_CITIZEN = Actor(kind=ActorKind.CITIZEN, pid=STEP_FNR)
CHILD_CITIZEN = Actor(kind=ActorKind.CITIZEN, pid=CHILD_FNR)
STRANGER = Actor(kind=ActorKind.CITIZEN, pid="01010112345")
DPO = Actor(kind=ActorKind.DPO, organization_number="936451284")
