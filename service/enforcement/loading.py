"""Load what the decision point needs: the caller as an Actor, and children's logs.

All queries go through the search-index tables, so each is an indexed lookup. The caller
passes the connection of the current transaction: a write is decided on the state it would
leave behind, pending resources of a transaction Bundle included.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    and_,
    any_,
    bindparam,
    or_,
    select,
    union,
    union_all,
)

from consent import Actor, ActorKind, ChildLog
from consent.constants import ENH, FNR, HPR, PERSON_ID_SYSTEMS
from service.auth import Principal, PrincipalKind
from service.enforcement.compartment import LOG_TYPES, linked_references, patient_in
from service.search.extract import CONSENT_ACTOR_PARAM
from service.storage.lists import array_param, uses_arrays
from service.storage.schema import resources, search_reference, search_token

__all__ = [
    "LogCache",
    "actor_for",
    "child_of",
    "consented_patients",
    "family_patients",
    "load_logs",
    "log_versions",
    "organization_ids",
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


def organization_ids(conn: Connection, organization_number: str) -> frozenset[str]:
    """Return the ids of the Organization resources with this organisation number."""
    return _ids_with_identifier(conn, "Organization", [(ENH, organization_number)])


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


def patients_of(
    conn: Connection,
    keys: Iterable[tuple[str, str]],
    written: Mapping[tuple[str, str], str] | None = None,
) -> dict[tuple[str, str], str]:
    """Return the child of each (type, id), from the index (for Provenance targets).

    `written` holds what the open transaction wrote itself, with its child: a Provenance of
    a Task written in the same transaction needs no query.
    """
    found: dict[tuple[str, str], str] = {}
    for resource_type, resource_id in keys:
        if resource_type == "Patient":
            found[(resource_type, resource_id)] = resource_id
            continue
        if written is not None and (resource_type, resource_id) in written:
            found[(resource_type, resource_id)] = written[(resource_type, resource_id)]
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


def child_of(
    conn: Connection,
    resource_type: str,
    data: Mapping[str, Any],
    base_url: str,
    written: Mapping[tuple[str, str], str] | None = None,
) -> str | None:
    """Return the id of the child whose log holds this resource, or None if in no log."""
    if resource_type not in LOG_TYPES:
        return None
    direct = patient_in(resource_type, data, base_url)
    if direct is not None:
        return direct
    found = patients_of(conn, linked_references(resource_type, data, base_url), written)
    return next(iter(found.values()), None)


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


Fingerprint = tuple[tuple[str, str, int, int], ...]


class LogCache:
    """Parsed logs shared across requests, keyed by the exact versions they were built from.

    Each request still asks the database which versions of a child's Patient, RelatedPersons
    and Consents are current (one indexed query), so a withdrawal or any other change is
    seen at once; only unchanged logs are reused, which spares parsing and compiling their
    Consents for every request (0.2-0.9 ms per log).
    """

    def __init__(self, *, max_logs: int = 10_000) -> None:
        self._max = max_logs
        self._entries: OrderedDict[str, tuple[Fingerprint, ChildLog]] = OrderedDict()
        self._lock = threading.Lock()

    def logs(
        self,
        conn: Connection,
        patient_ids: Iterable[str],
        *,
        known: dict[str, Fingerprint | None] | None = None,
    ) -> dict[str, ChildLog]:
        """Return current logs of these children (unknown ids are left out).

        `known` keeps fingerprints already read in the caller's transaction (None: no log),
        and gets those read here: the ingest worker's batch shares it between its messages
        and empties it whenever the batch writes a Patient, RelatedPerson or Consent.
        """
        wanted = sorted(set(patient_ids))
        if not wanted:
            return {}
        if known is None:
            prints = _fingerprints(conn, wanted)
        else:
            known.update(log_versions(conn, [p for p in wanted if p not in known]))
            prints = {p: f for p in wanted if (f := known[p]) is not None}
        found: dict[str, ChildLog] = {}
        stale: list[str] = []
        with self._lock:
            for patient_id, fingerprint in prints.items():
                entry = self._entries.get(patient_id)
                if entry is not None and entry[0] == fingerprint:
                    self._entries.move_to_end(patient_id)
                    found[patient_id] = entry[1]
                else:
                    stale.append(patient_id)
        if stale:
            loaded = load_logs(conn, stale)
            with self._lock:
                for patient_id, log in loaded.items():
                    found[patient_id] = log
                    self._entries[patient_id] = (prints[patient_id], log)
                    self._entries.move_to_end(patient_id)
                while len(self._entries) > self._max:
                    self._entries.popitem(last=False)
        return found


def _fingerprints_statement(ids: ColumnElement[str] | BindParameter[Any], arrays: bool) -> Any:
    def among(column: ColumnElement[str]) -> ColumnElement[bool]:
        return column == any_(ids) if arrays else column.in_(ids)

    return union_all(
        select(
            resources.c.id,
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
        ).where(
            resources.c.resource_type == "Patient",
            among(resources.c.id),
            resources.c.deleted.is_(False),
        ),
        select(
            search_reference.c.target_id,
            resources.c.resource_type,
            resources.c.id,
            resources.c.version_id,
            resources.c.last_updated,
        )
        .join(
            resources,
            and_(
                resources.c.resource_type == search_reference.c.resource_type,
                resources.c.id == search_reference.c.resource_id,
            ),
        )
        .where(
            search_reference.c.resource_type.in_(("RelatedPerson", "Consent")),
            search_reference.c.param == "patient",
            search_reference.c.target_type == "Patient",
            among(search_reference.c.target_id),
            resources.c.deleted.is_(False),
        ),
    )


# Built once: constructing a Core statement and its cache key costs more CPU than running it.
# One text for any number of children on PostgreSQL (service/storage/lists.py).
_FINGERPRINTS = _fingerprints_statement(bindparam("patient_ids", expanding=True), arrays=False)
_FINGERPRINTS_PG = _fingerprints_statement(array_param("patient_ids"), arrays=True)


def log_versions(conn: Connection, patient_ids: Iterable[str]) -> dict[str, Fingerprint | None]:
    """Return what each child's log is built from, as `LogCache.logs` reads it (None: no log).

    One statement for all of them: the ingest worker reads those of a whole batch at once.
    """
    wanted = sorted(set(patient_ids))
    if not wanted:
        return {}
    prints = _fingerprints(conn, wanted)
    return {patient_id: prints.get(patient_id) for patient_id in wanted}


def _fingerprints(conn: Connection, patient_ids: list[str]) -> dict[str, Fingerprint]:
    # one statement, one round trip: the Patients and the RelatedPersons and Consents that
    # refer to them, each as (type, id, version, last updated)
    parts: dict[str, list[tuple[str, str, int, int]]] = {}
    stmt = _FINGERPRINTS_PG if uses_arrays(conn) else _FINGERPRINTS
    rows = list(conn.execute(stmt, {"patient_ids": patient_ids}))
    for target, rtype, rid, version, updated in rows:
        if rtype == "Patient":
            parts.setdefault(target, []).append((rtype, rid, version, updated))
    for target, rtype, rid, version, updated in rows:
        # members of a Patient that is deleted or unknown do not make a log
        if rtype != "Patient" and target in parts:
            parts[target].append((rtype, rid, version, updated))
    return {patient_id: tuple(sorted(rows)) for patient_id, rows in parts.items()}
