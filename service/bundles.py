"""Batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

A transaction runs in one database transaction: all entries succeed or nothing is written.
``urn:uuid:`` fullUrls get server ids before any write, so entries may refer to each other in
any order; conditional references (``Patient?identifier=...``) resolve to exactly one match.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from sqlalchemy import Connection

from service.api import render
from service.api.outcomes import operation_outcome
from service.errors import BadRequest, FhirError, Issue, NotFound, PreconditionFailed
from service.repository import FhirRepository, WriteResult
from service.search.values import micros_to_instant
from service.storage.store import StoredResource

__all__ = ["conditional_targets", "process_bundle"]

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_STATUS_TEXT = {200: "200 OK", 201: "201 Created", 204: "204 No Content"}
_MAX_ENTRIES = 1000
_REQUEST_STRINGS = ("method", "url", "ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince")


@dataclass(slots=True)
class _Entry:
    index: int
    method: str
    url: str
    resource: Any
    full_url: str | None
    request: dict[str, Any]
    assigned_id: str | None = None
    existing: StoredResource | None = None
    response: bytes | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def process_bundle(repo: FhirRepository, body: Any, fhir_base: str) -> bytes:
    """Process a batch or transaction Bundle and return the response Bundle."""
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base URL takes a Bundle of type batch or transaction")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise BadRequest(f"Bundle.type must be batch or transaction, not '{kind}'")
    raw_entries = body.get("entry") or []
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array")
    if len(raw_entries) > _MAX_ENTRIES:
        raise BadRequest(f"A Bundle may hold at most {_MAX_ENTRIES} entries")
    entries = [_parse_entry(i, raw) for i, raw in enumerate(raw_entries)]
    if kind == "transaction":
        _process_transaction(repo, entries, fhir_base)
    else:
        _process_batch(repo, entries, fhir_base)
    response_entries = b",".join(entry.response or b"{}" for entry in entries)
    head = orjson.dumps(
        {"resourceType": "Bundle", "id": uuid.uuid4().hex, "type": f"{kind}-response"}
    )
    if not entries:
        return head
    return head[:-1] + b',"entry":[' + response_entries + b"]}"


def _parse_entry(index: int, raw: Any) -> _Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object")
    request = raw.get("request")
    if not isinstance(request, dict):
        raise BadRequest(f"{where}.request is required in a batch or transaction")
    for name in _REQUEST_STRINGS:
        # read as strings below; a list or a number there was a 500 (tests/hardening fuzzing)
        if name in request and not isinstance(request[name], str):
            raise BadRequest(
                f"{where}.request.{name} must be a string",
                issues=[
                    Issue(
                        "structure",
                        f"{where}.request.{name} must be a string",
                        expression=(f"{where}.request.{name}",),
                    )
                ],
            )
    method = request.get("method")
    url = request.get("url")
    if method not in _ORDER or not isinstance(url, str) or not url:
        raise BadRequest(f"{where}.request needs a method (GET, POST, PUT, PATCH, DELETE) and url")
    full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
    return _Entry(index, method, url.lstrip("/"), raw.get("resource"), full_url, request)


def conditional_targets(body: Any) -> tuple[list[str], list[tuple[str, str]]]:
    """Return the lock keys and the conditional searches a transaction Bundle will make.

    The keys are those `_assign_ids` locks (conditional updates and creates); the searches,
    as (type, criteria), are theirs and those of the conditional references in the entries'
    resources. The ingest worker takes and looks up a whole batch's at once beforehand. Only
    a hint: whatever cannot be read here is left out, and processing the Bundle decides (and
    refuses) everything as always.
    """
    keys: list[str] = []
    searches: list[tuple[str, str]] = []
    if not isinstance(body, dict) or body.get("type") != "transaction":
        return keys, searches
    raw_entries = body.get("entry")
    if not isinstance(raw_entries, list) or len(raw_entries) > _MAX_ENTRIES:
        return keys, searches
    for index, raw in enumerate(raw_entries):
        try:
            entry = _parse_entry(index, raw)
        except FhirError:
            continue
        path, _ = _split_url(entry.url)
        criteria = None
        if entry.method == "POST" and len(path) == 1:
            criteria = entry.request.get("ifNoneExist") or None
        elif entry.method == "PUT" and len(path) == 1:
            criteria = urlsplit(entry.url).query or None
        if criteria is not None:
            keys.append(f"{path[0]}?{criteria}")
            searches.append((path[0], criteria))
        _conditional_references(entry.resource, searches)
    return keys, searches


def _conditional_references(value: Any, out: list[tuple[str, str]]) -> None:
    # the references `_resolve_ref` resolves by search
    if isinstance(value, dict):
        for key, child in value.items():
            if key == "reference" and isinstance(child, str):
                if "?" in child and not child.startswith(("http:", "https:", "urn:")):
                    resource_type, _, criteria = child.partition("?")
                    out.append((resource_type, criteria))
            else:
                _conditional_references(child, out)
    elif isinstance(value, list):
        for child in value:
            _conditional_references(child, out)


def _split_url(url: str) -> tuple[list[str], list[tuple[str, str]]]:
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    return path, parse_qsl(parts.query, keep_blank_values=True)


# -- transaction ------------------------------------------------------------------------------
def _process_transaction(repo: FhirRepository, entries: list[_Entry], fhir_base: str) -> None:
    try:
        with repo.transaction() as conn:
            mapping = _assign_ids(repo, entries, conn)
            for entry in entries:
                if entry.resource is not None:
                    entry.resource = _rewrite_references(
                        entry.resource, lambda ref: _resolve_ref(repo, ref, mapping, conn)
                    )
            for entry in sorted(entries, key=lambda e: (_ORDER[e.method], e.index)):
                entry.response = _run_entry(repo, entry, fhir_base, conn)
    except FhirError as exc:
        raise _at_entry(exc) from exc


def _at_entry(exc: FhirError) -> FhirError:
    index = getattr(exc, "entry_index", None)
    if index is None:
        return exc
    prefix = f"Bundle.entry[{index}]"
    issues = tuple(
        Issue(
            issue.code,
            f"{prefix}: {issue.diagnostics}",
            issue.severity,
            tuple(
                f"{prefix}.resource.{e.split('.', 1)[1]}" if "." in e else prefix
                for e in issue.expression
            ),
        )
        for issue in exc.issues
    )
    return type(exc)(f"{prefix}: {exc.diagnostics}", issues=issues)


def _assign_ids(repo: FhirRepository, entries: list[_Entry], conn: Connection) -> dict[str, str]:
    mapping: dict[str, str] = {}
    seen_full_urls: set[str] = set()
    for entry in entries:
        try:
            if entry.full_url and entry.full_url in seen_full_urls:
                raise BadRequest(f"fullUrl '{entry.full_url}' appears twice")
            if entry.full_url:
                seen_full_urls.add(entry.full_url)
            path, _ = _split_url(entry.url)
            if entry.method == "POST":
                if len(path) != 1:
                    raise BadRequest("A POST entry's request.url must be a resource type")
                if_none_exist = entry.request.get("ifNoneExist")
                if if_none_exist:
                    repo.lock_conditional(conn, f"{path[0]}?{if_none_exist}")
                    entry.existing = repo.find_conditional(
                        resource_type=path[0], criteria=if_none_exist, conn=conn
                    )
                entry.assigned_id = (
                    entry.existing.id if entry.existing is not None else str(uuid.uuid4())
                )
                if entry.full_url and entry.full_url.startswith(("urn:uuid:", "urn:oid:")):
                    mapping[entry.full_url] = f"{path[0]}/{entry.assigned_id}"
            elif entry.method == "PUT" and len(path) == 1:
                # conditional update: find the target now, so references to it resolve
                query = urlsplit(entry.url).query
                if not query:
                    raise BadRequest("A PUT entry's request.url must be Type/id or Type?criteria")
                entry.assigned_id = repo.resolve_conditional_target(
                    resource_type=path[0], criteria=query, resource=entry.resource, conn=conn
                )
                if entry.full_url and entry.full_url.startswith(("urn:uuid:", "urn:oid:")):
                    mapping[entry.full_url] = f"{path[0]}/{entry.assigned_id}"
            elif (
                entry.method == "PUT"
                and len(path) == 2
                and entry.full_url
                and entry.full_url.startswith(("urn:uuid:", "urn:oid:"))
            ):
                mapping[entry.full_url] = f"{path[0]}/{path[1]}"
        except FhirError as exc:
            exc.entry_index = entry.index  # type: ignore[attr-defined]
            raise
    return mapping


def _resolve_ref(
    repo: FhirRepository, reference: str, mapping: dict[str, str], conn: Connection
) -> str:
    if reference in mapping:
        return mapping[reference]
    if reference.startswith(("urn:uuid:", "urn:oid:")):
        raise BadRequest(f"Reference '{reference}' matches no fullUrl in the transaction")
    if "?" in reference and not reference.startswith(("http:", "https:")):
        resource_type, _, criteria = reference.partition("?")
        match = repo.find_conditional(resource_type=resource_type, criteria=criteria, conn=conn)
        if match is None:
            raise PreconditionFailed(f"Conditional reference '{reference}' matches nothing")
        resolved = f"{resource_type}/{match.id}"
        mapping[reference] = resolved
        return resolved
    return reference


def _rewrite_references(value: Any, resolve: Callable[[str], str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, child in value.items():
            if key == "reference" and isinstance(child, str):
                out[key] = resolve(child)
            else:
                out[key] = _rewrite_references(child, resolve)
        return out
    if isinstance(value, list):
        return [_rewrite_references(child, resolve) for child in value]
    return value


# -- batch ------------------------------------------------------------------------------------
def _process_batch(repo: FhirRepository, entries: list[_Entry], fhir_base: str) -> None:
    for entry in entries:
        try:
            if entry.method == "POST" and entry.request.get("ifNoneExist"):
                path, _ = _split_url(entry.url)
                if len(path) != 1:
                    raise BadRequest("A POST entry's request.url must be a resource type")
                entry.existing = repo.find_conditional(
                    resource_type=path[0], criteria=entry.request["ifNoneExist"], conn=None
                )
            entry.response = _run_entry(repo, entry, fhir_base, None)
        except FhirError as exc:
            entry.response = orjson.dumps(
                {"response": {"status": str(exc.status), "outcome": operation_outcome(exc.issues)}}
            )


# -- one entry --------------------------------------------------------------------------------
def _run_entry(
    repo: FhirRepository, entry: _Entry, fhir_base: str, conn: Connection | None
) -> bytes:
    try:
        return _dispatch(repo, entry, fhir_base, conn)
    except FhirError as exc:
        exc.entry_index = entry.index  # type: ignore[attr-defined]
        raise


def _write_entry(result: WriteResult) -> bytes:
    stored = result.stored
    status = 201 if result.created else 200
    response = {
        "status": _STATUS_TEXT[status],
        "location": f"{stored.resource_type}/{stored.id}/_history/{stored.version_id}",
        "etag": render.etag(stored),
        "lastModified": micros_to_instant(stored.last_updated),
    }
    return (
        b'{"fullUrl":"'
        + f"{stored.resource_type}/{stored.id}".encode()
        + b'","resource":'
        + render.resource_bytes(stored)
        + b',"response":'
        + orjson.dumps(response)
        + b"}"
    )


def _dispatch(
    repo: FhirRepository, entry: _Entry, fhir_base: str, conn: Connection | None
) -> bytes:
    path, params = _split_url(entry.url)
    if not path:
        raise BadRequest("request.url names no resource type")
    resource_type = path[0]
    if entry.method == "POST":
        if entry.existing is not None:
            return _write_entry(WriteResult(stored=entry.existing, created=False, changed=False))
        result = repo.create(
            resource=_with_id(entry.resource, None),
            resource_type=resource_type,
            id=entry.assigned_id,
            conn=conn,
        )
        return _write_entry(result)
    if entry.method == "PUT":
        if len(path) == 1 and entry.assigned_id is not None:
            return _write_entry(
                repo.update(
                    resource_type=resource_type,
                    id=entry.assigned_id,
                    resource=_with_id(entry.resource, entry.assigned_id),
                    conn=conn,
                )
            )
        if len(path) == 1 and conn is None:  # batch: each entry is its own transaction
            return _write_entry(
                repo.update_conditional(
                    resource_type=resource_type,
                    criteria=urlsplit(entry.url).query,
                    resource=entry.resource,
                )
            )
        if len(path) != 2:
            raise BadRequest("A PUT entry's request.url must be Type/id or Type?criteria")
        return _write_entry(
            repo.update(
                resource_type=resource_type,
                id=path[1],
                resource=entry.resource,
                if_match=entry.request.get("ifMatch"),
                conn=conn,
            )
        )
    if entry.method == "PATCH":
        if len(path) != 2:
            raise BadRequest("A PATCH entry's request.url must be Type/id")
        return _write_entry(
            repo.patch(
                resource_type=resource_type,
                id=path[1],
                operations=_patch_document(entry.resource),
                if_match=entry.request.get("ifMatch"),
                conn=conn,
            )
        )
    if entry.method == "DELETE":
        if len(path) != 2:
            raise BadRequest("A DELETE entry's request.url must be Type/id")
        repo.delete(resource_type=resource_type, id=path[1], conn=conn)
        return orjson.dumps({"response": {"status": _STATUS_TEXT[204]}})
    return _get_entry(repo, path, params, fhir_base, conn)


def _get_entry(
    repo: FhirRepository,
    path: list[str],
    params: list[tuple[str, str]],
    fhir_base: str,
    conn: Connection | None,
) -> bytes:
    resource_type = path[0]
    if len(path) == 1:
        query = repo.parse_search(resource_type, params)
        result = repo.search(query, conn=conn)
        bundle = render.search_bundle(
            fhir_base=fhir_base,
            query=query,
            matches=result.matches,
            included=result.included,
            total=result.total,
            bundle_id=uuid.uuid4().hex,
        )
        return b'{"resource":' + bundle + b',"response":{"status":"200 OK"}}'
    if len(path) == 2:
        stored = repo.read(resource_type=resource_type, id=path[1], conn=conn)
    elif len(path) == 4 and path[2] == "_history":
        stored = repo.vread(resource_type=resource_type, id=path[1], version_id=path[3], conn=conn)
    else:
        raise NotFound(f"GET {'/'.join(path)} is not supported inside a Bundle")
    response = {"status": "200 OK", "etag": render.etag(stored)}
    return (
        b'{"fullUrl":"'
        + f"{fhir_base}/{stored.resource_type}/{stored.id}".encode()
        + b'","resource":'
        + render.resource_bytes(stored)
        + b',"response":'
        + orjson.dumps(response)
        + b"}"
    )


def _with_id(resource: Any, id: str | None) -> Any:
    if isinstance(resource, dict):
        resource = {k: v for k, v in resource.items() if k != "id"}
        if id is not None:
            resource["id"] = id
    return resource


def _patch_document(resource: Any) -> Any:
    """Return the JSON Patch carried by a Binary entry (R4's way to PATCH in a Bundle)."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "Binary":
        raise BadRequest("A PATCH entry carries its JSON Patch in a Binary resource")
    if resource.get("contentType") != "application/json-patch+json":
        raise BadRequest("The Binary of a PATCH entry must be application/json-patch+json")
    try:
        return orjson.loads(base64.b64decode(resource.get("data", ""), validate=True))
    except (binascii.Error, orjson.JSONDecodeError) as exc:
        raise BadRequest(f"The Binary of a PATCH entry is not a JSON Patch: {exc}") from exc
