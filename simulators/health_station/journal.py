"""What staff do in the health station's own journal, written as FHIR with the station's coding.

The `_sim` surface calls these; every version they write has `meta.source` = JOURNAL_SOURCE.
"""

from __future__ import annotations

from typing import Any

from simulators.common.errors import Conflict, Invalid, Problem
from simulators.common.validation import Checker
from simulators.health_station.fhir import (
    FNR_SYSTEM,
    JOURNAL_SOURCE,
    LEVEL_EXTENSION,
    ORGNR_SYSTEM,
    PLAN_TYPE_SYSTEM,
    TASK_CODE_SYSTEM,
)
from simulators.health_station.repository import FhirRepository
from simulators.health_station.search import parse_query

__all__ = ["HEALTH_STATION_ORGNR", "Journal"]

HEALTH_STATION_ORGNR = "945182733"
TASK_STATUS = ("requested", "accepted", "in-progress", "on-hold", "completed", "cancelled")
CAREPLAN_STATUS = ("active", "on-hold", "completed", "revoked")
CONSENT_STATUS = ("active", "inactive")
GENDER = ("female", "male", "other", "unknown")
_IRCP = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}


class Journal:
    """Staff actions: register a child, open a log, add a measure, evaluate, record consent."""

    def __init__(self, repository: FhirRepository) -> None:
        self.repository = repository

    def _find(self, resource_type: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        query = parse_query(resource_type, [*params, ("_count", "200")], strict=True)
        return self.repository.search(resource_type=resource_type, query=query).resources

    def _patient_ref(self, fnr: str) -> dict[str, str]:
        found = self._find("Patient", [("identifier", f"{FNR_SYSTEM}|{fnr}")])
        if not found:
            raise Invalid("Unknown child", [Problem("fodselsnummer", "Ingen pasient med dette")])
        return {"reference": f"Patient/{found[0]['id']}"}

    def _org_ref(self, orgnr: str) -> dict[str, Any]:
        found = self._find("Organization", [("identifier", f"{ORGNR_SYSTEM}|{orgnr}")])
        if found:
            return {"reference": f"Organization/{found[0]['id']}"}
        return {"identifier": {"system": ORGNR_SYSTEM, "value": orgnr}}

    def _write(self, resource: dict[str, Any]) -> dict[str, Any]:
        return self.repository.create(
            resource_type=resource["resourceType"], resource=resource, source=JOURNAL_SOURCE
        )

    def organization(self, *, orgnr: str, name: str) -> dict[str, Any]:
        """Register an organisation (once per org.nr)."""
        existing = self._find("Organization", [("identifier", f"{ORGNR_SYSTEM}|{orgnr}")])
        if existing:
            return existing[0]
        return self._write(
            {
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": orgnr}],
                "active": True,
                "name": name,
            }
        )

    def register_child(self, body: Any) -> dict[str, Any]:
        """Register a child as a Patient identified by fødselsnummer."""
        c, b = Checker(), _object(body)
        fnr = c.fnr(b, "fodselsnummer")
        patient: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
            "active": True,
            "name": [{"family": c.text(b, "etternavn"), "given": [c.text(b, "fornavn")]}],
            "birthDate": c.date(b, "fodselsdato"),
        }
        gender = c.choice(b, "kjonn", GENDER, required=False)
        if gender:
            patient["gender"] = gender
        c.raise_if_any()
        if self._find("Patient", [("identifier", f"{FNR_SYSTEM}|{fnr}")]):
            raise Conflict(f"A Patient with fødselsnummer {fnr} exists already")
        return self._write(patient)

    def open_log(self, body: Any) -> dict[str, Any]:
        """Open a stafettlogg: a CarePlan of the station's `bti` plan type with the level."""
        c, b = Checker(), _object(body)
        fnr, level = c.fnr(b, "fodselsnummer"), c.integer(b, "niva", low=0, high=3)
        concern, start = c.text(b, "oppmerksomhet"), c.date(b, "opprettet")
        status = c.choice(b, "status", CAREPLAN_STATUS, required=False) or "active"
        c.raise_if_any()
        return self._write(
            {
                "resourceType": "CarePlan",
                "extension": [{"url": LEVEL_EXTENSION, "valueInteger": level}],
                "status": status,
                "intent": "plan",
                "category": [
                    {"coding": [{"system": PLAN_TYPE_SYSTEM, "code": "bti", "display": "BTI"}]}
                ],
                "title": "Stafettlogg",
                "description": concern,
                "subject": self._patient_ref(str(fnr)),
                "period": {"start": start},
                "author": self._org_ref(HEALTH_STATION_ORGNR),
            }
        )

    def add_measure(self, body: Any) -> dict[str, Any]:
        """Add a measure: a Task coded `oppgave|tiltak`, planned evaluation in restriction."""
        c, b = Checker(), _object(body)
        fnr, text = c.fnr(b, "fodselsnummer"), c.text(b, "beskrivelse")
        status = c.choice(b, "status", TASK_STATUS, required=False) or "in-progress"
        start, evaluate = c.date(b, "startdato"), c.date(b, "evalueringsdato")
        owner = c.orgnr(b, "ansvarlig", required=False) or HEALTH_STATION_ORGNR
        c.raise_if_any()
        patient = self._patient_ref(str(fnr))
        task: dict[str, Any] = {
            "resourceType": "Task",
            "status": status,
            "intent": "plan",
            "code": {"coding": [{"system": TASK_CODE_SYSTEM, "code": "tiltak"}]},
            "description": text,
            "for": patient,
            "authoredOn": self.repository.clock.now().isoformat(timespec="seconds"),
            "owner": self._org_ref(owner),
            "restriction": {"period": {"start": start, "end": evaluate}},
        }
        if status not in ("requested", "accepted"):
            task["executionPeriod"] = {"start": start}
        logs = self._find("CarePlan", [("patient", patient["reference"]), ("status", "active")])
        if logs:
            task["basedOn"] = [{"reference": f"CarePlan/{logs[0]['id']}"}]
        return self._write(task)

    def evaluate(self, task_id: str, body: Any) -> dict[str, Any]:
        """Append an evaluation as a Task.note; optionally move the status or next date."""
        c, b = Checker(), _object(body)
        text = c.text(b, "tekst")
        when = c.timestamp(b, "tidspunkt", required=False) or self.repository.clock.now()
        status = c.choice(b, "status", TASK_STATUS, required=False)
        next_date = c.date(b, "nyEvalueringsdato", required=False)
        author = c.text(b, "forfatter", required=False) or "Helsesykepleier"
        c.raise_if_any()
        task = self.repository.read(resource_type="Task", resource_id=task_id)
        note = {"authorString": author, "time": when.isoformat(timespec="seconds"), "text": text}
        task["note"] = [*task.get("note", []), note]
        if status:
            task["status"] = status
        if next_date:
            task.setdefault("restriction", {}).setdefault("period", {})["end"] = next_date
        updated, _ = self.repository.update(
            resource_type="Task", resource_id=task_id, resource=task, source=JOURNAL_SOURCE
        )
        return updated

    def record_consent(self, body: Any) -> dict[str, Any]:
        """Record a signed consent: actors are organisations named by org.nr (logical)."""
        c, b = Checker(), _object(body)
        fnr = c.fnr(b, "fodselsnummer")
        orgs = [
            c.orgnr({f"deleMed[{i}]": v}, f"deleMed[{i}]")
            for i, v in enumerate(c.array(b, "deleMed") or [])
        ]
        signers = [
            c.fnr({f"signertAv[{i}]": v}, f"signertAv[{i}]")
            for i, v in enumerate(c.array(b, "signertAv", required=False) or [])
        ]
        start, end = c.date(b, "gyldigFra"), c.date(b, "gyldigTil")
        status = c.choice(b, "status", CONSENT_STATUS, required=False) or "active"
        c.raise_if_any()
        consent: dict[str, Any] = {
            "resourceType": "Consent",
            "status": status,
            "scope": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "patient-privacy",
                    }
                ]
            },
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": self._patient_ref(str(fnr)),
            "dateTime": self.repository.clock.now().isoformat(timespec="seconds"),
            "organization": [self._org_ref(HEALTH_STATION_ORGNR)],
            "policyRule": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
                ]
            },
            "provision": {
                "type": "permit",
                "period": {"start": start, "end": end},
                "actor": [
                    {
                        "role": _IRCP,
                        "reference": {"identifier": {"system": ORGNR_SYSTEM, "value": o}},
                    }
                    for o in orgs
                ],
            },
        }
        if signers:
            consent["performer"] = [
                {"identifier": {"system": FNR_SYSTEM, "value": s}} for s in signers
            ]
        return self._write(consent)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("Ugyldige data", [Problem("", "Innholdet må være et JSON-objekt")])
    return body
