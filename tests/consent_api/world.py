"""A small municipality for consent tests: services, staff, families and four children's logs.

Every log is opened the way a professional opens one in production: one transaction Bundle
with the child, the guardians, the signed Consent naming the professional's own organisation,
the CarePlan and the first entries.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support import FNR_SYSTEM, LiveServer, fhir_headers, synthetic_fnr

PARENTAL = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
HIDDEN = {"system": "urn:stafett:security-label", "code": "hidden-from-guardians"}
SIGNED_FORM = {
    "contentType": "application/pdf",
    "data": base64.b64encode(b"%PDF-1.4 signed consent form").decode(),
    "title": "Samtykkeskjema (signert)",
}
ORGS = {
    "kindergarten": "912837467",
    "school": "927364514",
    "health": "945182733",
    "nav": "961728398",
}


def org_ref(org_ids: dict[str, str], name: str) -> dict[str, Any]:
    return {"reference": f"Organization/{org_ids[name]}"}


def permit(
    org_ids: dict[str, str],
    *orgs: str,
    classes: tuple[str, ...] = (),
    actions: tuple[str, ...] = ("access", "collect", "correct"),
    start: str = "2026-01-01",
    end: str = "2027-12-31",
    nested: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    provision: dict[str, Any] = {
        "type": "permit",
        "period": {"start": start, "end": end},
        "actor": [
            {
                "role": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "IRCP",
                        }
                    ]
                },
                "reference": org_ref(org_ids, org),
            }
            for org in orgs
        ],
        "action": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                        "code": action,
                    }
                ]
            }
            for action in actions
        ],
    }
    if classes:
        provision["class"] = [
            {"system": "http://hl7.org/fhir/resource-types", "code": c} for c in classes
        ]
    if nested:
        provision["provision"] = nested
    return provision


def consent_resource(
    *, patient: str, performer: str, provision: dict[str, Any], signed: bool = True
) -> dict[str, Any]:
    consent: dict[str, Any] = {
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
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient},
        "dateTime": "2026-09-01T10:00:00+02:00",
        "performer": [{"reference": performer}],
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": provision,
    }
    if signed:
        consent["sourceAttachment"] = SIGNED_FORM
    return consent


@dataclass
class Child:
    """One child's log as created, with the ids the server gave."""

    name: str
    fnr: str
    patient: str = ""
    guardians: dict[str, str] = field(default_factory=dict)  # role name -> fnr
    ids: dict[str, str] = field(default_factory=dict)  # label -> "Type/id"


@dataclass
class World:
    """Everything the scenarios refer to."""

    server: LiveServer
    org_ids: dict[str, str]
    staff: dict[str, str]  # name -> fnr (teachers) or HPR (nurse)
    children: dict[str, Child]

    def client(self, who: str) -> httpx.Client:
        return self.server.client(self.token(who))

    def token(self, who: str) -> str:
        issuer, audience = self.server.issuer, self.server.settings.audience
        kind, _, name = who.partition(":")
        if kind == "teacher":
            return issuer.issue_practitioner(
                hpr=None,
                pid=self.staff[f"teacher-{name}"],
                organization=ORGS[name],
                audience=audience,
            )
        if kind == "nurse":
            return issuer.issue_practitioner(
                hpr=self.staff["nurse"], pid=None, organization=ORGS["health"], audience=audience
            )
        if kind == "system":
            return issuer.issue_system(
                organization=ORGS[name], scopes="system/*.cruds", audience=audience
            )
        if kind == "citizen":
            child_name, _, role = name.partition(".")
            child = self.children[child_name]
            pid = child.fnr if role == "self" else child.guardians[role]
            return issuer.issue_citizen(pid=pid, audience=audience)
        if kind == "stranger":
            return issuer.issue_citizen(pid=synthetic_fnr(), audience=audience)
        if kind == "dpo":
            return issuer.issue_practitioner(
                hpr=None,
                pid="01817010055",
                organization="936451284",
                scopes="user/*.rs",
                roles=("dpo",),
                audience=audience,
            )
        raise ValueError(who)


def _post(client: httpx.Client, resource: dict[str, Any]) -> str:
    response = client.post(f"/{resource['resourceType']}", json=resource, headers=fhir_headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _entry(resource: dict[str, Any], full_url: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"]},
    }
    if full_url:
        entry["fullUrl"] = full_url
    return entry


def open_log(
    client: httpx.Client,
    child: Child,
    *,
    birth_date: str,
    consent_provision: dict[str, Any],
    owner: str,
    signed: bool = True,
) -> httpx.Response:
    """Open a log with one transaction; record the ids of what was created."""
    patient, mother, father, aunt = (f"urn:uuid:{uuid.uuid4()}" for _ in range(4))
    plan = f"urn:uuid:{uuid.uuid4()}"
    guardians = {"mother": synthetic_fnr(), "father": synthetic_fnr(), "aunt": synthetic_fnr()}

    def related(fnr: str, code: str) -> dict[str, Any]:
        return {
            "resourceType": "RelatedPerson",
            "patient": {"reference": patient},
            "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
            "relationship": [{"coding": [{"system": PARENTAL, "code": code}]}],
        }

    entries = [
        _entry(
            {
                "resourceType": "Patient",
                "identifier": [{"system": FNR_SYSTEM, "value": child.fnr}],
                "birthDate": birth_date,
                "name": [{"family": "Testesen", "given": [child.name]}],
            },
            patient,
        ),
        _entry(related(guardians["mother"], "felles"), mother),
        _entry(related(guardians["father"], "felles"), father),
        _entry(related(guardians["aunt"], "andre"), aunt),
        _entry(
            consent_resource(
                patient=patient, performer=mother, provision=consent_provision, signed=signed
            )
        ),
        _entry(
            {
                "resourceType": "CarePlan",
                "status": "active",
                "intent": "plan",
                "subject": {"reference": patient},
                "description": "Uro i samlingsstund",
            },
            plan,
        ),
        _entry(
            {
                "resourceType": "Task",
                "status": "in-progress",
                "intent": "plan",
                "for": {"reference": patient},
                "basedOn": [{"reference": plan}],
                "owner": {"reference": f"Organization/{owner}"},
                "description": "Fast voksen i garderoben",
            }
        ),
        _entry(
            {
                "resourceType": "Communication",
                "status": "completed",
                "subject": {"reference": patient},
                "basedOn": [{"reference": plan}],
                "payload": [{"contentString": "Møte med foreldre"}],
            }
        ),
        _entry(
            {
                "resourceType": "Communication",
                "meta": {"security": [HIDDEN]},
                "status": "completed",
                "subject": {"reference": patient},
                "basedOn": [{"reference": plan}],
                "payload": [{"contentString": "Samtale med ungdommen alene"}],
            }
        ),
    ]
    response = client.post(
        "",
        json={"resourceType": "Bundle", "type": "transaction", "entry": entries},
        headers=fhir_headers(),
    )
    if response.status_code == 200:
        locations = [
            e["response"]["location"].split("/_history")[0] for e in response.json()["entry"]
        ]
        child.patient = locations[0].split("/")[1]
        child.guardians = guardians
        labels = [
            "patient",
            "mother",
            "father",
            "aunt",
            "consent",
            "careplan",
            "task",
            "note",
            "hidden",
        ]
        child.ids = dict(zip(labels, locations, strict=True))
    return response
