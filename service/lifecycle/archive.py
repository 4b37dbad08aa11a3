"""The archive export: a child's whole log as a self-contained FHIR Bundle, a PDF and a manifest.

The Bundle (`type` collection, https://hl7.org/fhir/R4/bundle.html) holds every version of
every resource in the child's log (the history is part of the record: what was written, then
corrected), the Provenance and Consents, and the current version of everything they refer to
(services, employees), so every reference resolves inside the Bundle: each entry's `fullUrl`
is the resource's absolute URL, and versions of one resource share it with distinct
`meta.versionId` (bdl-7). The manifest lists each file's SHA-256; its own hash is stored in
`lifecycle_archives` and, after deletion, in the deletion record.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select

from service import __version__
from service.access import RequestContext
from service.audit import AuditRecord
from service.auth import Principal
from service.identifiers import is_valid_fnr
from service.lifecycle.compartment import Key, child_data, references_in
from service.lifecycle.pdf import summary_pdf
from service.lifecycle.purge import Purger
from service.lifecycle.tables import lifecycle_archives
from service.repository import RepositoryConfig
from service.search.values import micros_to_instant, now_micros
from service.storage.schema import search_token
from service.storage.store import StoredResource

__all__ = ["ArchiveResult", "archive_child", "find_patient"]

_FNR_SYSTEMS = ("urn:oid:2.16.578.1.12.4.1.4.1", "urn:oid:2.16.578.1.12.4.1.4.2")
_ORDER = (
    "Patient",
    "RelatedPerson",
    "Consent",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Task",
    "Communication",
    "Provenance",
    "Organization",
    "PractitionerRole",
    "Practitioner",
)
_MAX_VERSIONS = 10_000


@dataclass(frozen=True, slots=True)
class ArchiveResult:
    """Where the export went and what it holds."""

    directory: Path
    bundle: Path
    pdf: Path
    manifest: Path
    manifest_sha256: str
    resources: int
    versions: int
    log_closed: bool


def find_patient(conn: Connection, value: str) -> str | None:
    """Return the Patient id for an id or a fødselsnummer/D-nummer, if the child is known."""
    if len(value) == 11 and value.isdigit() and is_valid_fnr(value):
        row = conn.execute(
            select(search_token.c.resource_id).where(
                search_token.c.resource_type == "Patient",
                search_token.c.param == "identifier",
                search_token.c.system.in_(_FNR_SYSTEMS),
                search_token.c.code == value,
            )
        ).first()
        return row[0] if row is not None else None
    row = conn.execute(
        select(search_token.c.resource_id).where(
            search_token.c.resource_type == "Patient", search_token.c.resource_id == value
        )
    ).first()
    return row[0] if row is not None else None


def _versions(config: RepositoryConfig, conn: Connection, key: Key) -> list[StoredResource]:
    page = config.store.history(
        conn,
        resource_type=key[0],
        id=key[1],
        since=None,
        before=None,
        count=_MAX_VERSIONS,
        offset=0,
    )
    return sorted((e for e in page.entries if not e.deleted), key=lambda e: e.version_id)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_child(
    *,
    config: RepositoryConfig,
    patient_id: str,
    out_dir: Path,
    principal: Principal,
    clock: Any = None,
) -> ArchiveResult:
    """Export the child's log to out_dir/stafettlogg-<patient id>/ and record the export."""
    made = (clock or (lambda: datetime.now(UTC)))()
    base = config.base_url.rstrip("/")
    with config.database.read() as conn:
        data = child_data(conn, patient_id, base)
        if ("Patient", patient_id) not in data.keys | data.shared:
            raise LookupError(f"Patient/{patient_id} is not known")
        log_keys = sorted(data.keys | data.shared)
        history: dict[Key, list[StoredResource]] = {
            key: versions for key in log_keys if (versions := _versions(config, conn, key))
        }
        deleted = sorted(
            f"{s.resource_type}/{s.id}"
            for s in config.store.read_many(conn, log_keys, include_deleted=True)
            if s.deleted
        )
        closed = Purger(
            database=config.database, store=config.store, base_url=base, retention_years=0
        ).closed_children(conn, patient_id)
        # everything the log refers to, up to three hops (role -> practitioner, org -> parent)
        referenced: dict[Key, StoredResource] = {}
        frontier = [v.data for versions in history.values() for v in versions]
        unresolved: set[Key] = set()
        for _ in range(3):
            wanted: set[Key] = set()
            for resource in frontier:
                wanted |= references_in(resource, base)
            wanted -= set(history) | set(referenced) | unresolved
            if not wanted:
                break
            found = {
                (s.resource_type, s.id): s for s in config.store.read_many(conn, sorted(wanted))
            }
            referenced.update(found)
            unresolved |= wanted - set(found)
            frontier = [s.data for s in found.values()]
    entries: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    rank = {t: n for n, t in enumerate(_ORDER)}

    def order(key: Key) -> tuple[int, str, str]:
        return (rank.get(key[0], len(_ORDER)), key[0], key[1])

    for key in sorted(history, key=order):
        for version in history[key]:
            entries.append({"fullUrl": f"{base}/{key[0]}/{key[1]}", "resource": version.data})
        current.append(history[key][-1].data)
    for key in sorted(referenced, key=order):
        entries.append({"fullUrl": f"{base}/{key[0]}/{key[1]}", "resource": referenced[key].data})
        current.append(referenced[key].data)
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": made.isoformat(timespec="seconds")},
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{uuid.uuid4()}"},
        "type": "collection",
        "timestamp": made.isoformat(timespec="seconds"),
        "entry": entries,
    }
    bundle_bytes = orjson.dumps(bundle, option=orjson.OPT_INDENT_2)
    bundle_sha = _sha256(bundle_bytes)
    made_by = principal.display or principal.subject
    pdf_bytes = summary_pdf(
        current=current,
        patient_id=patient_id,
        made_at=made.isoformat(timespec="seconds"),
        made_by=made_by,
        bundle_sha256=bundle_sha,
    )
    folder = out_dir / f"stafettlogg-{patient_id}"
    folder.mkdir(parents=True, exist_ok=True)
    bundle_path = folder / "bundle.json"
    pdf_path = folder / "sammendrag.pdf"
    bundle_path.write_bytes(bundle_bytes)
    pdf_path.write_bytes(pdf_bytes)
    closed_at = closed[0].closed_at if closed else None
    resource_count = len(history) + len(referenced)
    manifest: dict[str, Any] = {
        "generator": f"Stafett {__version__}",
        "created": made.isoformat(timespec="seconds"),
        "patient": f"Patient/{patient_id}",
        "logClosed": micros_to_instant(closed_at) if closed_at is not None else None,
        "careplans": [f"CarePlan/{i}" for t, i in log_keys if t == "CarePlan"],
        "resources": resource_count,
        "versions": len(entries),
        "deletedResources": deleted,
        "unresolvedReferences": sorted(f"{t}/{i}" for t, i in unresolved),
        "files": [
            {"name": bundle_path.name, "sha256": bundle_sha, "bytes": len(bundle_bytes)},
            {"name": pdf_path.name, "sha256": _sha256(pdf_bytes), "bytes": len(pdf_bytes)},
        ],
    }
    manifest_bytes = orjson.dumps(manifest, option=orjson.OPT_INDENT_2)
    manifest_sha = _sha256(manifest_bytes)
    manifest_path = folder / "manifest.json"
    manifest_path.write_bytes(manifest_bytes)
    sums = "".join(
        f"{_sha256(path.read_bytes())}  {path.name}\n"
        for path in (bundle_path, pdf_path, manifest_path)
    )
    (folder / "SHA256SUMS").write_text(sums, encoding="utf-8")
    _record(
        config,
        patient_id=patient_id,
        principal=principal,
        closed_at=closed_at,
        manifest_sha=manifest_sha,
        resources=resource_count,
        keys=[f"{t}/{i}" for t, i in log_keys],
    )
    return ArchiveResult(
        directory=folder,
        bundle=bundle_path,
        pdf=pdf_path,
        manifest=manifest_path,
        manifest_sha256=manifest_sha,
        resources=resource_count,
        versions=len(entries),
        log_closed=closed_at is not None,
    )


def _record(
    config: RepositoryConfig,
    *,
    patient_id: str,
    principal: Principal,
    closed_at: int | None,
    manifest_sha: str,
    resources: int,
    keys: list[str],
) -> None:
    """Store the export and its audit record in one transaction: both or neither."""
    ctx = RequestContext(principal=principal, request_id=f"archive-{uuid.uuid4().hex[:12]}")
    with config.database.write() as conn:
        conn.execute(
            insert(lifecycle_archives).values(
                archive_id=str(uuid.uuid4()),
                patient_id=patient_id,
                archived_at=now_micros(),
                closed_at=closed_at,
                manifest_sha256=manifest_sha,
                resources=resources,
            )
        )
        if config.audit is not None:
            config.audit.record_in_transaction(
                conn,
                [
                    AuditRecord(
                        request_id=ctx.request_id,
                        decision_id=uuid.uuid4().hex,
                        recorded=now_micros(),
                        interaction="operation",
                        permitted=True,
                        principal=principal,
                        patient_id=patient_id,
                        resources=tuple(keys[:50]),
                        query=f"$archive manifest-sha256={manifest_sha}",
                        basis="archive",
                        reason=f"Archive export of the child's log ({resources} resources) "
                        "for the municipality's archive.",
                    )
                ],
            )
