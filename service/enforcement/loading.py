"""Load what the decision point needs: the caller as an Actor, and children's logs.

All queries go through the search-index tables, so each is an indexed lookup. The caller
passes the connection of the current transaction: a write is decided on the state it would
leave behind, pending resources of a transaction Bundle included.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from sqlalchemy import Connection, and_, or_, select, union

from consent import Actor, ActorKind, ChildLog
from consent.constants import ENH, FNR, HPR, PERSON_ID_SYSTEMS
from service.auth import Principal, PrincipalKind
from service.search.extract import CONSENT_ACTOR_PARAM
from service.storage.schema import resources, search_reference, search_token

__all__ = [
    "actor_for",
    "consented_patients",
    "family_patients",
    "load_logs",
    "patients_of",
]


def _ids_with_identifier(
    conn: Connection, resource_type: str, pairs: Iterable[tuple[str, str]]
) -> frozenset[str]:
    conditions = [
        and_(search_token.c.system == system, search_token.c.code == code) for system, code in pairs
    ]
    if not conditions:
        return frozenset()
    stmt = select(search_token.c.resource_id).where(
        search_token.c.resource_type == resource_type,
        search_token.c.param == "identifier",
        or_(*conditions),
    )
    return frozenset(row[0] for row in conn.execute(stmt))


def actor_for(conn: Connection, principal: Principal) -> Actor:
    """Return the consent Actor of a principal, with its Organization/Practitioner ids."""
    if principal.kind is PrincipalKind.CITIZEN:
        return Actor(kind=ActorKind.CITIZEN, pid=principal.pid)
    kind = ActorKind.SYSTEM
    if principal.kind is PrincipalKind.PRACTITIONER:
        kind = ActorKind.DPO if principal.is_dpo else ActorKind.PRACTITIONER
    organization_ids = (
        _ids_with_identifier(conn, "Organization", [(ENH, principal.organization)])
        if principal.organization
        else frozenset()
    )
    person: list[tuple[str, str]] = []
    if principal.hpr:
        person.append((HPR, principal.hpr))
    if principal.pid:
        person.append((FNR, principal.pid))
    practitioner_ids = (
        _ids_with_identifier(conn, "Practitioner", person)
        if kind is not ActorKind.SYSTEM
        else frozenset()
    )
    return Actor(
        kind=kind,
        organization_number=principal.organization,
        organization_ids=organization_ids,
        practitioner_ids=practitioner_ids,
        pid=principal.pid,
        hpr=principal.hpr,
    )


def _referring(resource_type: str, param: str, patient_ids: Iterable[str]) -> Any:
    return select(search_reference.c.target_id, search_reference.c.resource_id).where(
        search_reference.c.resource_type == resource_type,
        search_reference.c.param == param,
        search_reference.c.target_type == "Patient",
        search_reference.c.target_id.in_(list(patient_ids)),
    )


def _live_contents(
    conn: Connection, resource_type: str, ids: Iterable[str]
) -> dict[str, Mapping[str, Any]]:
    id_list = list(ids)
    if not id_list:
        return {}
    stmt = select(resources.c.id, resources.c.content).where(
        resources.c.resource_type == resource_type,
        resources.c.id.in_(id_list),
        resources.c.deleted.is_(False),
    )
    return {row[0]: orjson.loads(row[1]) for row in conn.execute(stmt)}


def load_logs(conn: Connection, patient_ids: Iterable[str]) -> dict[str, ChildLog]:
    """Load the logs (Patient, RelatedPersons, Consents) of these children; skip unknown ids."""
    wanted = sorted(set(patient_ids))
    if not wanted:
        return {}
    patients = _live_contents(conn, "Patient", wanted)
    members: dict[str, dict[str, list[str]]] = {pid: {} for pid in patients}
    for resource_type in ("RelatedPerson", "Consent"):
        for patient_id, resource_id in conn.execute(_referring(resource_type, "patient", patients)):
            members[patient_id].setdefault(resource_type, []).append(resource_id)
    related = _live_contents(
        conn, "RelatedPerson", (i for m in members.values() for i in m.get("RelatedPerson", []))
    )
    consents = _live_contents(
        conn, "Consent", (i for m in members.values() for i in m.get("Consent", []))
    )
    logs: dict[str, ChildLog] = {}
    for patient_id, patient in patients.items():
        parts = members[patient_id]
        logs[patient_id] = ChildLog(
            patient_id=patient_id,
            patient=patient,
            related_persons=tuple(
                related[i] for i in sorted(parts.get("RelatedPerson", [])) if i in related
            ),
            consents=tuple(consents[i] for i in sorted(parts.get("Consent", [])) if i in consents),
        )
    return logs


def patients_of(conn: Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Return the child of each (type, id), from the index (for Provenance targets)."""
    found: dict[tuple[str, str], str] = {}
    for resource_type, resource_id in keys:
        if resource_type == "Patient":
            found[(resource_type, resource_id)] = resource_id
            continue
        stmt = select(search_reference.c.target_id).where(
            search_reference.c.resource_type == resource_type,
            search_reference.c.resource_id == resource_id,
            search_reference.c.param == "patient",
            search_reference.c.target_type == "Patient",
        )
        row = conn.execute(stmt).first()
        if row is not None:
            found[(resource_type, resource_id)] = row[0]
    return found


def consented_patients(conn: Connection, actor: Actor) -> frozenset[str]:
    """Return the children with an active Consent that names this actor in any provision.

    A superset for the SQL filter: the decision point still decides validity, period,
    classes and exceptions per child.
    """
    named = []
    if actor.organization_ids:
        named.append(
            and_(
                search_reference.c.target_type == "Organization",
                search_reference.c.target_id.in_(sorted(actor.organization_ids)),
            )
        )
    if actor.practitioner_ids:
        named.append(
            and_(
                search_reference.c.target_type == "Practitioner",
                search_reference.c.target_id.in_(sorted(actor.practitioner_ids)),
            )
        )
    logical = []
    if actor.organization_number:
        logical.append(
            and_(search_token.c.system == ENH, search_token.c.code == actor.organization_number)
        )
    if actor.hpr:
        logical.append(and_(search_token.c.system == HPR, search_token.c.code == actor.hpr))
    if actor.pid and actor.kind is not ActorKind.SYSTEM:
        logical.append(and_(search_token.c.system == FNR, search_token.c.code == actor.pid))
    selects = []
    if named:
        selects.append(
            select(search_reference.c.resource_id).where(
                search_reference.c.resource_type == "Consent",
                search_reference.c.param == CONSENT_ACTOR_PARAM,
                or_(*named),
            )
        )
    if logical:
        selects.append(
            select(search_token.c.resource_id).where(
                search_token.c.resource_type == "Consent",
                search_token.c.param == f"{CONSENT_ACTOR_PARAM}:identifier",
                or_(*logical),
            )
        )
    if not selects:
        return frozenset()
    naming = union(*selects).subquery()
    active = select(search_token.c.resource_id).where(
        search_token.c.resource_type == "Consent",
        search_token.c.param == "status",
        search_token.c.code == "active",
    )
    stmt = select(search_reference.c.target_id).where(
        search_reference.c.resource_type == "Consent",
        search_reference.c.param == "patient",
        search_reference.c.target_type == "Patient",
        search_reference.c.resource_id.in_(select(naming.c.resource_id)),
        search_reference.c.resource_id.in_(active),
    )
    return frozenset(row[0] for row in conn.execute(stmt))


def family_patients(conn: Connection, pid: str) -> frozenset[str]:
    """Return the children this citizen is (the youth) or is a RelatedPerson of."""
    pairs = [(system, pid) for system in sorted(PERSON_ID_SYSTEMS)]
    own = _ids_with_identifier(conn, "Patient", pairs)
    related = _ids_with_identifier(conn, "RelatedPerson", pairs)
    children: set[str] = set(own)
    if related:
        stmt = select(search_reference.c.target_id).where(
            search_reference.c.resource_type == "RelatedPerson",
            search_reference.c.resource_id.in_(sorted(related)),
            search_reference.c.param == "patient",
            search_reference.c.target_type == "Patient",
        )
        children.update(row[0] for row in conn.execute(stmt))
    return frozenset(children)
