"""Which organisations take part in a child's log: CareTeam members and Task owners.

A participant is a candidate recipient only; the consent decision point decides whether it
gets anything. References may name an Organization, a PractitionerRole (its organisation
counts) or carry an ENH identifier only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import date
from typing import Any

import orjson
from sqlalchemy import Connection, Select, select

from consent.constants import ENH
from service.enforcement.loading import organization_ids
from service.search.extract import LOG_OWNER_ORGNR, LOG_OWNER_PARAM, parse_reference
from service.storage.schema import resources, search_reference, search_token

__all__ = [
    "DirectoryCache",
    "OrgnrResolver",
    "log_organisations",
    "logs_organisations",
    "owner_orgnr",
    "stafettholder_organisation",
]

_STAFETTHOLDER = ("https://stafett.no/fhir/CodeSystem/careteam-role", "stafettholder")


def owner_orgnr(conn: Connection, reference: Any, base_url: str) -> str | None:
    """Return the org number a Task's `owner` reference names (Organization or role)."""
    return _orgnr_of(conn, reference, base_url)


class DirectoryCache:
    """The service directory as the router reads it, each answer kept for `ttl_s` seconds.

    Which org number an Organization or PractitionerRole has, and which Organization ids an
    org number has, change rarely (a new service, a corrected identifier), but looking them
    up cost the router about ten statements per batch: with small batches (low latency) that
    was a third of its database round trips. Consents are never cached here; a brand-new
    Organization is known at most `ttl_s` late, and until then deliveries to it are refused
    (and audited), never sent to someone else.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._orgnr: dict[tuple[str, str], tuple[float, str | None]] = {}
        self._ids: dict[str, tuple[float, frozenset[str]]] = {}

    def cached_orgnr(self, key: tuple[str, str]) -> tuple[bool, str | None]:
        """Return (known, org number) of an (Organization|PractitionerRole, id) reference."""
        with self._lock:
            entry = self._orgnr.get(key)
        if entry is None or entry[0] <= self._clock():
            return False, None
        return True, entry[1]

    def keep_orgnr(self, key: tuple[str, str], orgnr: str | None) -> None:
        """Remember the org number of a reference for `ttl_s`."""
        with self._lock:
            if len(self._orgnr) >= self._max:
                self._orgnr.clear()
            self._orgnr[key] = (self._clock() + self._ttl, orgnr)

    def organization_ids(self, conn: Connection, orgnr: str) -> frozenset[str]:
        """Return the ids of the Organization resources with this org number."""
        now = self._clock()
        with self._lock:
            entry = self._ids.get(orgnr)
        if entry is not None and entry[0] > now:
            return entry[1]
        ids = organization_ids(conn, orgnr)
        with self._lock:
            if len(self._ids) >= self._max:
                self._ids.clear()
            self._ids[orgnr] = (now + self._ttl, ids)
        return ids


class OrgnrResolver:
    """Org numbers of references, each Organization and PractitionerRole read once.

    For one batch of the router: an Organization's org.nr does not change between the events
    of a batch, and every Task event names its owner. With a `DirectoryCache`, answers are
    also shared between batches for the cache's time to live.
    """

    def __init__(
        self, conn: Connection, base_url: str, *, directory: DirectoryCache | None = None
    ) -> None:
        self._conn = conn
        self._base_url = base_url
        self._directory = directory
        self._cache: dict[tuple[str, str], str | None] = {}

    def orgnr(self, reference: Any) -> str | None:
        """Return the org number `reference` names, or None."""
        if not isinstance(reference, Mapping):
            return None
        raw = reference.get("reference")
        if isinstance(raw, str) and not isinstance(reference.get("identifier"), Mapping):
            target_type, target_id, _ = parse_reference(raw, self._base_url)
            if target_type and target_id:
                key = (target_type, target_id)
                if key not in self._cache:
                    self._cache[key] = self._lookup(key, reference)
                return self._cache[key]
        return _orgnr_of(self._conn, reference, self._base_url)

    def _lookup(self, key: tuple[str, str], reference: Mapping[str, Any]) -> str | None:
        if self._directory is None:
            return _orgnr_of(self._conn, reference, self._base_url)
        known, orgnr = self._directory.cached_orgnr(key)
        if not known:
            orgnr = _orgnr_of(self._conn, reference, self._base_url)
            self._directory.keep_orgnr(key, orgnr)
        return orgnr


def _log_members(conn: Connection, patient_id: str, types: tuple[str, ...]) -> list[dict[str, Any]]:
    return _members_of(conn, [patient_id], types).get(patient_id, [])


def _members_of(
    conn: Connection, patient_ids: Sequence[str], types: tuple[str, ...]
) -> dict[str, list[dict[str, Any]]]:
    """Return the current resources of these types in each child's log."""
    owner: dict[tuple[str, str], str] = {}
    for chunk in _chunks(sorted(set(patient_ids))):
        rows = conn.execute(
            select(
                search_reference.c.target_id,
                search_reference.c.resource_type,
                search_reference.c.resource_id,
            ).where(
                search_reference.c.resource_type.in_(types),
                search_reference.c.param == "patient",
                search_reference.c.target_type == "Patient",
                search_reference.c.target_id.in_(chunk),
            )
        )
        owner.update({(t, i): child for child, t, i in rows})
    found: dict[str, list[dict[str, Any]]] = {}
    for chunk in _chunks(sorted({i for _, i in owner})):
        rows = conn.execute(
            select(resources.c.resource_type, resources.c.id, resources.c.content).where(
                resources.c.resource_type.in_(types),
                resources.c.id.in_(chunk),
                resources.c.deleted.is_(False),
            )
        )
        for t, i, content in rows:
            child = owner.get((t, i))
            if child is not None:
                found.setdefault(child, []).append(orjson.loads(content))
    return found


def _chunks(values: Sequence[str], size: int = 500) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


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
    """Return the org numbers of the current CareTeam members and Task owners of a log."""
    return logs_organisations(conn, [patient_id], base_url, today=today)[patient_id]


def logs_organisations(
    conn: Connection,
    patient_ids: Sequence[str],
    base_url: str,
    *,
    today: date,
    resolver: OrgnrResolver | None = None,
) -> dict[str, set[str]]:
    """Return, per child, the org numbers of the log's current CareTeam members and Task owners.

    A fixed number of statements for any number of children and Tasks: the distinct owners
    of the logs' Tasks (`_task_owners`; looking up every Task's owner by the Task's id made
    the router fall behind at 200 writes/s once logs held a hundred Tasks), then the
    CareTeams, which are read, since a service that left has a `period.end`, then the org
    numbers of the Organizations and PractitionerRoles named.
    """
    resolver = resolver or OrgnrResolver(conn, base_url)
    found: dict[str, set[str]] = {child: set() for child in patient_ids}
    references: dict[str, set[tuple[str, str]]] = {}
    for chunk in _chunks(sorted(set(patient_ids))):
        for child, owner in conn.execute(_task_owners(chunk)):
            if not owner:
                continue
            if owner.startswith(LOG_OWNER_ORGNR):
                # named by org.nr only (a logical reference)
                found[child].add(owner.removeprefix(LOG_OWNER_ORGNR))
            else:
                target_type, _, target_id = owner.partition("/")
                references.setdefault(child, set()).add((target_type, target_id))
    for child, members in _members_of(conn, patient_ids, ("CareTeam",)).items():
        for data in members:
            for reference in _references(data, today.isoformat()):
                orgnr = resolver.orgnr(reference)
                if orgnr is not None:
                    found[child].add(orgnr)
    by_reference = _orgnrs(conn, set().union(*references.values()) if references else set())
    for child, refs in references.items():
        found[child] |= {by_reference[ref] for ref in refs if ref in by_reference}
    return found


def _task_owners(children: Sequence[str]) -> Select[Any]:
    """Return the distinct (child, owner) pairs of the children's Tasks."""
    # the LOG_OWNER_PARAM rows: one index range per child, however many Tasks the log holds
    return (
        select(search_token.c.code, search_token.c.system)
        .where(
            search_token.c.resource_type == "Task",
            search_token.c.param == LOG_OWNER_PARAM,
            search_token.c.code.in_(children),
        )
        .distinct()
    )


def _orgnrs(conn: Connection, references: set[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Return the org number of each Organization, and of each PractitionerRole's organisation."""
    organizations = {i for t, i in references if t == "Organization"}
    role_org: dict[str, str] = {}
    for chunk in _chunks(sorted(i for t, i in references if t == "PractitionerRole")):
        rows = conn.execute(
            select(search_reference.c.resource_id, search_reference.c.target_id).where(
                search_reference.c.resource_type == "PractitionerRole",
                search_reference.c.resource_id.in_(chunk),
                search_reference.c.param == "organization",
                search_reference.c.target_type == "Organization",
            )
        )
        role_org.update({role: org for role, org in rows if org})
    organizations |= set(role_org.values())
    org_number: dict[str, str] = {}
    for chunk in _chunks(sorted(organizations)):
        rows = conn.execute(
            select(search_token.c.resource_id, search_token.c.code).where(
                search_token.c.resource_type == "Organization",
                search_token.c.resource_id.in_(chunk),
                search_token.c.param == "identifier",
                search_token.c.system == ENH,
            )
        )
        org_number.update({org: code for org, code in rows if code})
    out: dict[tuple[str, str], str] = {}
    for target_type, target_id in references:
        org = role_org.get(target_id) if target_type == "PractitionerRole" else target_id
        if org is not None and org in org_number:
            out[(target_type, target_id)] = org_number[org]
    return out


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
