"""Everything stored about one child, found through the search index and the tombstones.

A resource is about the child when it is in the child's log (Stafett's Patient compartment,
service/enforcement/compartment.py): the Patient, and every log resource whose `patient`
reference names it, live or deleted, with the Provenance that follows them. What another
child's log still refers to is *shared* and kept until nothing refers to it any more.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import orjson
from sqlalchemy import Connection, select, tuple_

from service.enforcement.compartment import LOG_TYPES, linked_references, patient_in
from service.search.extract import parse_reference
from service.storage.schema import resources, search_reference

__all__ = ["ChildData", "Key", "child_data", "chunks", "ghost_patients", "references_in"]

Key = tuple[str, str]
_CHUNK = 400


def chunks(items: Sequence[Key] | Sequence[str], size: int = _CHUNK) -> Iterator[list[Key]]:
    """Yield the items in lists of at most `size` (bounded IN lists)."""
    listed = list(items)
    for start in range(0, len(listed), size):
        yield listed[start : start + size]  # type: ignore[misc]


@dataclass(frozen=True, slots=True)
class ChildData:
    """The keys stored about one child: what goes, what stays shared, and the audit trail."""

    patient_id: str
    keys: frozenset[Key]
    shared: frozenset[Key]
    audit_events: frozenset[str]

    def by_type(self) -> dict[str, int]:
        """Return how many resources of each type go."""
        counts: dict[str, int] = {}
        for resource_type, _ in self.keys:
            counts[resource_type] = counts.get(resource_type, 0) + 1
        return dict(sorted(counts.items()))


def _live_members(conn: Connection, patient_id: str) -> set[Key]:
    stmt = select(search_reference.c.resource_type, search_reference.c.resource_id).where(
        search_reference.c.param == "patient",
        search_reference.c.target_type == "Patient",
        search_reference.c.target_id == patient_id,
        search_reference.c.resource_type.in_(sorted(LOG_TYPES - {"Provenance"})),
    )
    found = {(t, i) for t, i in conn.execute(stmt)}
    patient = conn.execute(
        select(resources.c.id).where(
            resources.c.resource_type == "Patient", resources.c.id == patient_id
        )
    ).first()
    if patient is not None:
        found.add(("Patient", patient_id))
    return found


def _tombstones(conn: Connection, patient_id: str, base_url: str) -> tuple[set[Key], set[Key]]:
    """Return deleted log resources of the child, and deleted Provenance with their targets."""
    # A tombstone has no index rows, so it is found by its last live JSON (kept in the row).
    # References are never encrypted, so the raw document answers whose log it was.
    stmt = select(resources.c.resource_type, resources.c.id, resources.c.content).where(
        resources.c.deleted.is_(True), resources.c.resource_type.in_(sorted(LOG_TYPES))
    )
    members: set[Key] = set()
    provenance: set[Key] = set()
    for resource_type, resource_id, content in conn.execute(stmt):
        try:
            data = orjson.loads(content)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(data, dict):
            continue
        if resource_type == "Provenance":
            provenance.add((resource_type, resource_id))
        elif patient_in(resource_type, data, base_url) == patient_id:
            members.add((resource_type, resource_id))
    return members, provenance


def _provenance_of(
    conn: Connection, keys: set[Key], deleted_provenance: set[Key], base_url: str
) -> tuple[set[Key], set[Key]]:
    """Return (Provenance only about these keys, Provenance also about others)."""
    targets: dict[str, set[Key]] = {}
    for batch in chunks(sorted(keys)):
        stmt = select(
            search_reference.c.resource_id,
            search_reference.c.target_type,
            search_reference.c.target_id,
        ).where(
            search_reference.c.resource_type == "Provenance",
            search_reference.c.param == "target",
            tuple_(search_reference.c.target_type, search_reference.c.target_id).in_(batch),
        )
        for provenance_id, _t, _i in conn.execute(stmt):
            targets.setdefault(provenance_id, set())
    # the full target list of each candidate decides whether it is the child's alone
    for provenance_id in list(targets):
        rows = conn.execute(
            select(search_reference.c.target_type, search_reference.c.target_id).where(
                search_reference.c.resource_type == "Provenance",
                search_reference.c.resource_id == provenance_id,
                search_reference.c.param == "target",
            )
        )
        targets[provenance_id] = {(t, i) for t, i in rows if t and i}
    own: set[Key] = set()
    shared: set[Key] = set()
    for provenance_id, about in targets.items():
        (own if about <= keys else shared).add(("Provenance", provenance_id))
    for key in deleted_provenance:
        row = conn.execute(
            select(resources.c.content).where(
                resources.c.resource_type == key[0], resources.c.id == key[1]
            )
        ).first()
        if row is None:
            continue
        about = set(linked_references("Provenance", orjson.loads(row[0]), base_url))
        if about and about <= keys:
            own.add(key)
    return own, shared


def _referred_from_outside(conn: Connection, keys: set[Key]) -> set[Key]:
    """Return the keys that a live resource outside `keys` refers to (AuditEvents aside)."""
    shared: set[Key] = set()
    for batch in chunks(sorted(keys)):
        stmt = select(
            search_reference.c.resource_type,
            search_reference.c.resource_id,
            search_reference.c.target_type,
            search_reference.c.target_id,
        ).where(
            search_reference.c.resource_type != "AuditEvent",
            tuple_(search_reference.c.target_type, search_reference.c.target_id).in_(batch),
        )
        for source_type, source_id, target_type, target_id in conn.execute(stmt):
            # index rows exist for live resources only, so every source here is live
            if (source_type, source_id) not in keys:
                shared.add((target_type, target_id))
    return shared


def _audit_events(conn: Connection, patient_id: str, keys: Iterable[Key]) -> set[str]:
    found = {
        row[0]
        for row in conn.execute(
            select(search_reference.c.resource_id).where(
                search_reference.c.resource_type == "AuditEvent",
                search_reference.c.target_type == "Patient",
                search_reference.c.target_id == patient_id,
            )
        )
    }
    for batch in chunks(sorted(keys)):
        stmt = select(search_reference.c.resource_id).where(
            search_reference.c.resource_type == "AuditEvent",
            tuple_(search_reference.c.target_type, search_reference.c.target_id).in_(batch),
        )
        found |= {row[0] for row in conn.execute(stmt)}
    return found


def child_data(conn: Connection, patient_id: str, base_url: str) -> ChildData:
    """Return every key stored about the child, split into what goes and what is shared."""
    keys = _live_members(conn, patient_id)
    deleted, deleted_provenance = _tombstones(conn, patient_id, base_url)
    keys |= deleted
    own_provenance, shared_provenance = _provenance_of(conn, keys, deleted_provenance, base_url)
    keys |= own_provenance
    # Nothing another log still uses is deleted: e.g. a guardian's RelatedPerson that a
    # sibling's meeting note names. It stays until that log is gone too (ghost_patients).
    shared = _referred_from_outside(conn, keys) & keys
    keys -= shared
    audit = _audit_events(conn, patient_id, keys)
    return ChildData(
        patient_id=patient_id,
        keys=frozenset(keys),
        shared=frozenset(shared | shared_provenance),
        audit_events=frozenset(audit),
    )


def ghost_patients(conn: Connection) -> list[str]:
    """Return ids of deleted children whose log resources were kept as shared and remain."""
    known = select(resources.c.id).where(resources.c.resource_type == "Patient")
    stmt = (
        select(search_reference.c.target_id)
        .where(
            search_reference.c.param == "patient",
            search_reference.c.target_type == "Patient",
            search_reference.c.resource_type.in_(sorted(LOG_TYPES - {"Provenance"})),
            search_reference.c.target_id.not_in(known),
        )
        .distinct()
    )
    return sorted(row[0] for row in conn.execute(stmt) if row[0])


def references_in(data: object, base_url: str) -> set[Key]:
    """Return the (type, id) of every literal reference inside a resource."""
    found: set[Key] = set()
    stack: list[object] = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str):
                target_type, target_id, _ = parse_reference(ref, base_url)
                if target_type and target_id:
                    found.add((target_type, target_id))
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found
