"""Which organisations take part in a child's log: CareTeam members and Task owners.

A participant is a candidate recipient only; the consent decision point decides whether it
gets anything. References may name an Organization, a PractitionerRole (its organisation
counts) or carry an ENH identifier only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import orjson
from sqlalchemy import Connection, select

from consent.constants import ENH
from service.search.extract import parse_reference
from service.storage.schema import resources, search_reference, search_token

__all__ = ["log_organisations", "owner_orgnr", "stafettholder_organisation"]

_STAFETTHOLDER = ("https://stafett.no/fhir/CodeSystem/careteam-role", "stafettholder")


def owner_orgnr(conn: Connection, reference: Any, base_url: str) -> str | None:
    """Return the org number a Task's `owner` reference names (Organization or role)."""
    return _orgnr_of(conn, reference, base_url)


def _log_members(conn: Connection, patient_id: str, types: tuple[str, ...]) -> list[dict[str, Any]]:
    ids = select(search_reference.c.resource_type, search_reference.c.resource_id).where(
        search_reference.c.resource_type.in_(types),
        search_reference.c.param == "patient",
        search_reference.c.target_type == "Patient",
        search_reference.c.target_id == patient_id,
    )
    found = {(t, i) for t, i in conn.execute(ids)}
    if not found:
        return []
    rows = conn.execute(
        select(resources.c.resource_type, resources.c.id, resources.c.content).where(
            resources.c.resource_type.in_(types),
            resources.c.id.in_(sorted({i for _, i in found})),
            resources.c.deleted.is_(False),
        )
    )
    return [orjson.loads(content) for t, i, content in rows if (t, i) in found]


def _references(data: Mapping[str, Any], today: str) -> Iterable[Any]:
    if data.get("resourceType") == "CareTeam":
        for participant in data.get("participant") or ():
            end = (participant.get("period") or {}).get("end")
            if isinstance(end, str) and end[:10] < today:
                continue  # a service that has left the team gets nothing more
            yield participant.get("member")
            yield participant.get("onBehalfOf")
        yield from data.get("managingOrganization") or ()
    elif data.get("resourceType") == "Task":
        yield data.get("owner")


def _orgnr_of(conn: Connection, reference: Any, base_url: str) -> str | None:
    if not isinstance(reference, Mapping):
        return None
    identifier = reference.get("identifier")
    if isinstance(identifier, Mapping) and identifier.get("system") == ENH:
        value = identifier.get("value")
        return value if isinstance(value, str) else None
    raw = reference.get("reference")
    if not isinstance(raw, str):
        return None
    target_type, target_id, _ = parse_reference(raw, base_url)
    if target_type == "PractitionerRole" and target_id:
        role = _content(conn, "PractitionerRole", target_id)
        return _orgnr_of(conn, (role or {}).get("organization"), base_url)
    if target_type == "Organization" and target_id:
        organization = _content(conn, "Organization", target_id) or {}
        for item in organization.get("identifier") or ():
            if item.get("system") == ENH and isinstance(item.get("value"), str):
                return str(item["value"])
    return None


def _content(conn: Connection, resource_type: str, id: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(resources.c.content).where(
            resources.c.resource_type == resource_type,
            resources.c.id == id,
            resources.c.deleted.is_(False),
        )
    ).first()
    return None if row is None else dict(orjson.loads(row[0]))


def log_organisations(conn: Connection, patient_id: str, base_url: str, *, today: date) -> set[str]:
    """Return the org numbers of the current CareTeam members and Task owners of a log.

    Task owners come from the search index in two queries however many Tasks the log has;
    CareTeams (one or two per log) are read, since a service that left has a `period.end`.
    """
    references: set[tuple[str, str]] = set()
    found: set[str] = set()
    owners = conn.execute(
        select(search_reference.c.target_type, search_reference.c.target_id).where(
            search_reference.c.resource_type == "Task",
            search_reference.c.param == "owner",
            search_reference.c.resource_id.in_(_in_log("Task", patient_id)),
        )
    )
    for target_type, target_id in owners:
        if target_type in ("Organization", "PractitionerRole") and target_id:
            references.add((target_type, target_id))
    # owners named by org.nr only (logical references) are in the token index
    found |= {
        row[0]
        for row in conn.execute(
            select(search_token.c.code).where(
                search_token.c.resource_type == "Task",
                search_token.c.param == "owner:identifier",
                search_token.c.system == ENH,
                search_token.c.resource_id.in_(_in_log("Task", patient_id)),
            )
        )
        if row[0]
    }
    for data in _log_members(conn, patient_id, ("CareTeam",)):
        for reference in _references(data, today.isoformat()):
            orgnr = _orgnr_of(conn, reference, base_url)
            if orgnr is not None:
                found.add(orgnr)
    found |= _orgnrs(conn, references)
    return found


def _in_log(resource_type: str, patient_id: str) -> Any:
    return select(search_reference.c.resource_id).where(
        search_reference.c.resource_type == resource_type,
        search_reference.c.param == "patient",
        search_reference.c.target_type == "Patient",
        search_reference.c.target_id == patient_id,
    )


def _orgnrs(conn: Connection, references: set[tuple[str, str]]) -> set[str]:
    """Return the org numbers of Organizations and of PractitionerRoles' organisations."""
    organizations = {i for t, i in references if t == "Organization"}
    roles = sorted(i for t, i in references if t == "PractitionerRole")
    if roles:
        organizations |= {
            row[0]
            for row in conn.execute(
                select(search_reference.c.target_id).where(
                    search_reference.c.resource_type == "PractitionerRole",
                    search_reference.c.resource_id.in_(roles),
                    search_reference.c.param == "organization",
                    search_reference.c.target_type == "Organization",
                )
            )
        }
    if not organizations:
        return set()
    rows = conn.execute(
        select(search_token.c.code).where(
            search_token.c.resource_type == "Organization",
            search_token.c.resource_id.in_(sorted(organizations)),
            search_token.c.param == "identifier",
            search_token.c.system == ENH,
        )
    )
    return {row[0] for row in rows if row[0]}


def stafettholder_organisation(conn: Connection, patient_id: str, base_url: str) -> str | None:
    """Return the org number of the child's current stafettholder (open CareTeam period)."""
    for data in _log_members(conn, patient_id, ("CareTeam",)):
        if data.get("status") not in (None, "active", "proposed"):
            continue
        for participant in data.get("participant") or ():
            roles = participant.get("role") or ()
            holder = any(
                (coding.get("system"), coding.get("code")) == _STAFETTHOLDER
                for role in roles
                for coding in role.get("coding") or ()
            )
            if holder and not (participant.get("period") or {}).get("end"):
                orgnr = _orgnr_of(conn, participant.get("onBehalfOf"), base_url) or _orgnr_of(
                    conn, participant.get("member"), base_url
                )
                if orgnr is not None:
                    return orgnr
    for data in _log_members(conn, patient_id, ("CareTeam",)):
        orgnr = next(
            (
                found
                for ref in data.get("managingOrganization") or ()
                if (found := _orgnr_of(conn, ref, base_url)) is not None
            ),
            None,
        )
        if orgnr is not None:
            return orgnr
    return None
