"""Consent decisions as FHIR AuditEvents in the shape of IHE BALP.

One ``AuditRecord`` is what the enforcement side knows about one decision; ``build_audit_event``
turns it into an R4 AuditEvent (https://hl7.org/fhir/R4/auditevent.html) laid out as the BALP
RESTful patterns (https://profiles.ihe.net/ITI/BALP/content.html) plus the consent decision
(after BALP's AuthZconsent pattern):

- ``type`` audit-event-type ``rest``; ``subtype`` the restful-interaction; ``action`` C/R/U/D/E.
- ``outcome`` ``0`` when permitted and served, ``4`` when permitted but the request still
  failed (e.g. 404, 410: a minor failure, not a refusal), ``8`` when consent denied, even
  when the caller was answered 404 to hide the resource's existence.
- agents: the requesting user (HPR number, else fødselsnummer, else issuer + subject), their
  organisation (ENH org.nr), the client application (the requestor itself for a system
  token) and the server, with BALP's client/server role codes for the interaction.
- entities: the Patient (type 1, role 1), each resource concerned (type 2, role 4), the
  query for searches (role 24, base64), the Consent that decided (type resource-types
  ``Consent``, as BALP AuthZconsent), the decision (type 2, identifier in
  ``urn:stafett:consent-decision``, details ``decision-id``, ``decision-basis``, ``reason``)
  and the request id (BALP ``XrequestId``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from service.audit import codes
from service.auth import Principal, PrincipalKind
from service.search.values import micros_to_instant

__all__ = ["AuditRecord", "build_audit_event"]


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the enforcement side knows about one consent decision."""

    request_id: str
    decision_id: str
    recorded: int  # microseconds since the epoch
    interaction: str  # a key of codes.ACTION_OF_INTERACTION
    permitted: bool
    principal: Principal
    patient_id: str | None  # the child whose log it concerns; None for type-level denials
    resources: tuple[str, ...]  # "Type/id" references concerned, capped by the caller
    query: str | None = None  # the raw query string of a search
    consent_id: str | None = None  # the Consent that decided, if any
    basis: str = ""  # e.g. "consent", "family-guardian", "default-deny"
    reason: str = ""
    outcome_detail: str | None = None  # what the caller got when it was not served, e.g. "404"
    client_address: str | None = None  # the caller's IP address, when known


def _coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return coding


def _concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    return {"coding": [_coding(system, code, display)]}


def _identifier(system: str, value: str) -> dict[str, Any]:
    return {"identifier": {"system": system, "value": value}}


# BALP's client/server agent types depend on the direction data flows: a read sends data to
# the client (client = destination), a create/update/query sends it to the server, and a
# delete names the client application and the server as custodian.
_CLIENT_TYPE = {
    "R": (codes.DICOM, "110152", "Destination Role ID"),
    "D": (codes.DICOM, "110150", "Application"),
}
_CLIENT_TYPE_DEFAULT = (codes.DICOM, "110153", "Source Role ID")
_SERVER_TYPE = {
    "R": (codes.DICOM, "110153", "Source Role ID"),
    "D": (codes.PROVENANCE_PARTICIPANT_TYPE, "custodian", "Custodian"),
}
_SERVER_TYPE_DEFAULT = (codes.DICOM, "110152", "Destination Role ID")
# The user receives data on reads and queries (BALP user slice IRCP) and is its source on
# writes (BALP DataSources value set: author, informant).
_USER_TYPE = {
    "C": ("AUT", "author (originator)"),
    "U": ("AUT", "author (originator)"),
    "D": ("INF", "informant"),
}
_USER_TYPE_DEFAULT = ("IRCP", "information recipient")


def _user_who(principal: Principal) -> dict[str, Any]:
    if principal.hpr is not None:
        return _identifier(codes.HPR_SYSTEM, principal.hpr)
    if principal.pid is not None:
        return _identifier(codes.FNR_SYSTEM, principal.pid)
    # OIDC subjects are unique per issuer only, so the issuer names their namespace
    return _identifier(principal.issuer, principal.subject)


def _client_who(principal: Principal) -> dict[str, Any] | None:
    if principal.client_id is not None:
        return _identifier(codes.CLIENT_ID_SYSTEM, principal.client_id)
    if principal.kind is PrincipalKind.SYSTEM:
        return _identifier(principal.issuer, principal.subject)
    return None


def _agents(record: AuditRecord, action: str, server_url: str | None) -> list[dict[str, Any]]:
    principal = record.principal
    is_system = principal.kind is PrincipalKind.SYSTEM
    agents: list[dict[str, Any]] = []
    kind_role = [_concept(codes.PRINCIPAL_KIND_SYSTEM, str(principal.kind))]
    if not is_system:
        user_code, user_display = _USER_TYPE.get(action, _USER_TYPE_DEFAULT)
        user: dict[str, Any] = {
            "type": _concept(codes.PARTICIPATION_TYPE, user_code, user_display),
            "role": kind_role,
            "who": _user_who(principal),
            "altId": principal.subject,
            "requestor": True,
        }
        if principal.display:
            user["name"] = principal.display
        if principal.token_id:
            user["policy"] = [codes.JTI_PREFIX + principal.token_id]
        agents.append(user)
    if principal.organization is not None:
        agents.append(
            {
                "type": _concept(codes.ROLE_CLASS, "PROV", "healthcare provider"),
                "who": _identifier(codes.ENH_SYSTEM, principal.organization),
                "requestor": False,
            }
        )
    client_who = _client_who(principal)
    if client_who is not None or record.client_address is not None:
        client: dict[str, Any] = {
            "type": _concept(*_CLIENT_TYPE.get(action, _CLIENT_TYPE_DEFAULT)),
            "who": client_who or {"display": "unidentified client"},
            # a system token has no user: the client application itself asked
            "requestor": is_system,
        }
        if is_system:
            client["role"] = kind_role
            client["altId"] = principal.subject
            if principal.token_id:
                client["policy"] = [codes.JTI_PREFIX + principal.token_id]
        if record.client_address is not None:
            client["network"] = {"address": record.client_address, "type": "2"}
        agents.append(client)
    server: dict[str, Any] = {
        "type": _concept(*_SERVER_TYPE.get(action, _SERVER_TYPE_DEFAULT)),
        "who": {"display": codes.SOURCE_NAME},
        "requestor": False,
    }
    if server_url:
        server["network"] = {"address": server_url, "type": "5"}
    agents.append(server)
    return agents


def _entities(record: AuditRecord) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = []
    patient_ref = f"Patient/{record.patient_id}" if record.patient_id is not None else None
    if patient_ref is not None:
        entities.append(
            {
                "what": {"reference": patient_ref},
                "type": _coding(codes.AUDIT_ENTITY_TYPE, "1", "Person"),
                "role": _coding(codes.OBJECT_ROLE, "1", "Patient"),
            }
        )
    seen = {patient_ref}
    for reference in record.resources:
        if reference in seen:
            continue
        seen.add(reference)
        entities.append(
            {
                "what": {"reference": reference},
                "type": _coding(codes.AUDIT_ENTITY_TYPE, "2", "System Object"),
                "role": _coding(codes.OBJECT_ROLE, "4", "Domain Resource"),
            }
        )
    if record.query:
        # BALP: base64 keeps exactly what was asked, including malformed or hostile input
        entities.append(
            {
                "type": _coding(codes.AUDIT_ENTITY_TYPE, "2", "System Object"),
                "role": _coding(codes.OBJECT_ROLE, "24", "Query"),
                "query": base64.b64encode(record.query.encode()).decode("ascii"),
            }
        )
    if record.consent_id is not None:
        entities.append(
            {
                "what": {"reference": f"Consent/{record.consent_id}"},
                "type": _coding(codes.RESOURCE_TYPES, "Consent", "Consent"),
            }
        )
    details = [
        {"type": "decision-id", "valueString": record.decision_id},
        {"type": "decision", "valueString": "permit" if record.permitted else "deny"},
    ]
    if record.basis:
        details.append({"type": "decision-basis", "valueString": record.basis})
    if record.reason:
        details.append({"type": "reason", "valueString": record.reason})
    entities.append(
        {
            "what": _identifier(codes.DECISION_SYSTEM, record.decision_id),
            "type": _coding(codes.AUDIT_ENTITY_TYPE, "2", "System Object"),
            "description": "Consent decision",
            "detail": details,
        }
    )
    entities.append(
        {
            "what": {"identifier": {"value": record.request_id}},
            "type": _coding(codes.BALP_ENTITY_TYPE, "XrequestId"),
        }
    )
    return entities


def _outcome(record: AuditRecord) -> str:
    if not record.permitted:
        return codes.OUTCOME_SERIOUS_FAILURE
    if record.outcome_detail:
        return codes.OUTCOME_MINOR_FAILURE
    return codes.OUTCOME_SUCCESS


def build_audit_event(
    record: AuditRecord, *, audit_id: str, server_url: str | None = None
) -> dict[str, Any]:
    """Return the AuditEvent (without meta) that records one consent decision."""
    action = codes.ACTION_OF_INTERACTION.get(record.interaction)
    if action is None:
        raise ValueError(f"'{record.interaction}' is not an audited FHIR interaction")
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": audit_id,
        "type": _coding(codes.AUDIT_EVENT_TYPE, "rest", "Restful Operation"),
        "subtype": [
            _coding(codes.STAFETT_INTERACTION, record.interaction, record.interaction)
            if record.interaction in codes.STAFETT_INTERACTIONS
            else _coding(codes.RESTFUL_INTERACTION, record.interaction, record.interaction)
        ],
        "action": action,
        "recorded": micros_to_instant(record.recorded),
        "outcome": _outcome(record),
    }
    description = ": ".join(part for part in (record.outcome_detail, record.reason) if part)
    if description:
        event["outcomeDesc"] = description
    event["agent"] = _agents(record, action, server_url)
    event["source"] = {
        "observer": {"display": codes.SOURCE_NAME},
        "type": [_coding(codes.SECURITY_SOURCE_TYPE, "4", "Application Server")],
    }
    event["entity"] = _entities(record)
    return event
