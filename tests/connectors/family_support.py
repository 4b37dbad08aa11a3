"""A child's family as another service registered it in Stafett (for connector e2e tests).

School and health-station records name guardians by fødselsnummer only; whether a guardian
has parental responsibility comes from the kindergarten (or the population register). These
Bundles put a child, a guardian with joint parental responsibility and that service's
signed Consent into Stafett, optionally with the service's own log.
"""

from __future__ import annotations

from typing import Any

from tests.support import ORGNR_SYSTEM

FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
_IRCP = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}


def _uuid(n: int) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-{n:012d}"


def family_bundle(
    *,
    child: str,
    child_name: tuple[str, str],
    birth_date: str,
    guardian: str,
    custodian: str,
    recipients: list[str],
    with_log: bool = False,
) -> dict[str, Any]:
    """Return a transaction: the child, one guardian, the Consent and (optionally) a log."""
    patient, parent, consent, log = _uuid(1), _uuid(2), _uuid(3), _uuid(4)
    org = f"Organization?identifier={ORGNR_SYSTEM}|{custodian}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": FNR, "value": child}],
                "active": True,
                "name": [{"family": child_name[1], "given": [child_name[0]]}],
                "birthDate": birth_date,
            },
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={FNR}|{child}",
            },
        },
        {
            "fullUrl": parent,
            "resource": {
                "resourceType": "RelatedPerson",
                "identifier": [{"system": FNR, "value": guardian}],
                "active": True,
                "patient": {"reference": patient},
                "relationship": [
                    {
                        "coding": [
                            {
                                "system": "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility",
                                "code": "felles",
                            }
                        ]
                    }
                ],
                "name": [{"family": child_name[1], "given": ["Forelder"]}],
            },
            "request": {"method": "POST", "url": "RelatedPerson"},
        },
        {
            "fullUrl": consent,
            "resource": {
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
                "dateTime": "2026-08-01T10:00:00+02:00",
                "performer": [{"reference": parent}],
                "organization": [{"reference": org}],
                "sourceAttachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQK"},
                "policyRule": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                            "code": "OPTIN",
                        }
                    ]
                },
                "provision": {
                    "type": "permit",
                    "period": {"start": "2026-08-01", "end": "2028-08-01"},
                    "actor": [
                        {
                            "role": _IRCP,
                            "reference": {"identifier": {"system": ORGNR_SYSTEM, "value": o}},
                        }
                        for o in recipients
                    ],
                },
            },
            "request": {"method": "POST", "url": "Consent"},
        },
    ]
    if with_log:
        entries.append(
            {
                "fullUrl": log,
                "resource": {
                    "resourceType": "CarePlan",
                    "extension": [
                        {
                            "url": "https://stafett.no/fhir/StructureDefinition/bti-level",
                            "valueCoding": {
                                "system": "https://stafett.no/fhir/CodeSystem/bti-level",
                                "code": "1",
                            },
                        }
                    ],
                    "status": "active",
                    "intent": "plan",
                    "category": [
                        {
                            "coding": [
                                {
                                    "system": "https://stafett.no/fhir/CodeSystem/log-category",
                                    "code": "stafettlogg",
                                }
                            ]
                        }
                    ],
                    "title": f"Stafettlogg for {child_name[0]}",
                    "subject": {"reference": patient},
                },
                "request": {"method": "POST", "url": "CarePlan"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
