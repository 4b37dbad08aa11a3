"""Render stored JSON as responses: single resources, Bundles, and _summary/_elements subsets."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

import orjson

from service.fhir.spec import mandatory_elements, summary_elements
from service.search.query import SearchQuery
from service.search.values import micros_to_instant
from service.storage.store import StoredResource

__all__ = [
    "etag",
    "history_bundle",
    "last_modified",
    "resource_bytes",
    "search_bundle",
    "subset",
]

_SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_HTTP_DATE = "%a, %d %b %Y %H:%M:%S GMT"


def etag(stored: StoredResource) -> str:
    """Return the weak ETag of a version."""
    return f'W/"{stored.version_id}"'


def last_modified(stored: StoredResource) -> str:
    """Return the HTTP date of a version's lastUpdated."""
    moment = datetime.fromtimestamp(stored.last_updated / 1_000_000, tz=UTC)
    return moment.strftime(_HTTP_DATE)


def resource_bytes(stored: StoredResource) -> bytes:
    """Return the stored JSON as bytes, resourceType first whatever the database did to it."""
    assert stored.content is not None
    text = stored.content
    if text.startswith('{"resourceType"'):
        return text.encode()
    # PostgreSQL JSONB reorders keys (shortest first); restore the conventional order.
    data = orjson.loads(text)
    ordered = {"resourceType": data.pop("resourceType"), "id": data.pop("id", None)}
    if ordered["id"] is None:
        del ordered["id"]
    if "meta" in data:
        ordered["meta"] = data.pop("meta")
    ordered.update(data)
    return orjson.dumps(ordered)


def subset(stored: StoredResource, *, summary: str | None, elements: Sequence[str] | None) -> bytes:
    """Apply _summary / _elements, marking the result SUBSETTED as the spec asks."""
    if (summary in (None, "false")) and not elements:
        return resource_bytes(stored)
    data = orjson.loads(resource_bytes(stored))
    resource_type = data["resourceType"]
    keep: set[str]
    if elements:
        keep = set(elements) | set(mandatory_elements(resource_type))
    elif summary == "true":
        keep = set(summary_elements(resource_type))
    elif summary == "text":
        keep = {"text"} | set(mandatory_elements(resource_type))
    elif summary == "data":
        keep = set(data) - {"text"}
    else:
        keep = set(data)
    keep |= {"resourceType", "id", "meta"}
    choices = tuple(name[:-3] for name in keep if name.endswith("[x]"))
    result = {
        key: value
        for key, value in data.items()
        if key.lstrip("_") in keep
        or any(
            key.lstrip("_").startswith(c) and key.lstrip("_")[len(c) :][:1].isupper()
            for c in choices
        )
    }
    meta = dict(result.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    result["meta"] = meta
    return orjson.dumps(result)


def _bundle_head(kind: str, total: int | None, links: list[tuple[str, str]]) -> dict[str, Any]:
    head: dict[str, Any] = {"resourceType": "Bundle", "type": kind}
    if total is not None:
        head["total"] = total
    head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    return head


def _join_bundle(head: dict[str, Any], entries: Iterable[bytes]) -> bytes:
    body = orjson.dumps(head)
    entry_bytes = b",".join(entries)
    if not entry_bytes:
        return body
    return body[:-1] + b',"entry":[' + entry_bytes + b"]}"


def search_bundle(
    *,
    fhir_base: str,
    query: SearchQuery,
    matches: Sequence[StoredResource],
    included: Sequence[StoredResource],
    total: int | None,
    bundle_id: str,
) -> bytes:
    """Build a searchset Bundle from stored JSON without re-serialising each resource."""
    base_path = f"{fhir_base}/{query.resource_type}"
    params = [(k, v) for k, v in query.used if k not in ("_offset", "_count")]

    def page_url(offset: int) -> str:
        pairs = [*params, ("_count", str(query.count)), ("_offset", str(offset))]
        return f"{base_path}?{urlencode(pairs)}"

    links = [("self", page_url(query.offset))]
    if query.summary != "count":
        if query.offset > 0:
            links.append(("first", page_url(0)))
            links.append(("previous", page_url(max(query.offset - query.count, 0))))
        has_next = (total is not None and query.offset + query.count < total) or (
            total is None and len(matches) >= query.count > 0
        )
        if has_next:
            links.append(("next", page_url(query.offset + query.count)))
    head = _bundle_head("searchset", total, links)
    head["id"] = bundle_id
    entries = []
    for stored, mode in [*((m, "match") for m in matches), *((i, "include") for i in included)]:
        body = subset(stored, summary=query.summary, elements=query.elements)
        entries.append(
            b'{"fullUrl":"'
            + f"{fhir_base}/{stored.resource_type}/{stored.id}".encode()
            + b'","resource":'
            + body
            + b',"search":{"mode":"'
            + mode.encode()
            + b'"}}'
        )
    return _join_bundle(head, entries)


def history_bundle(
    *,
    fhir_base: str,
    path: str,
    entries: Sequence[StoredResource],
    total: int,
    count: int,
    offset: int,
    extra_params: Sequence[tuple[str, str]],
    bundle_id: str,
) -> bytes:
    """Build a history Bundle: newest first, deletions as entries with request DELETE."""

    def page_url(page_offset: int) -> str:
        pairs = [*extra_params, ("_count", str(count)), ("_offset", str(page_offset))]
        return f"{fhir_base}/{path}?{urlencode(pairs)}"

    links = [("self", page_url(offset))]
    if offset > 0:
        links.append(("previous", page_url(max(offset - count, 0))))
    if offset + count < total:
        links.append(("next", page_url(offset + count)))
    head = _bundle_head("history", total, links)
    head["id"] = bundle_id
    rendered = []
    for stored in entries:
        url = f"{stored.resource_type}/{stored.id}"
        response = {
            "status": "204" if stored.deleted else ("201" if stored.version_id == 1 else "200"),
            "etag": etag(stored),
            "lastModified": micros_to_instant(stored.last_updated),
        }
        method = stored.method or ("DELETE" if stored.deleted else "PUT")
        request = {"method": method, "url": url}
        if method == "POST":
            request["url"] = stored.resource_type
        part = b'{"fullUrl":"' + f"{fhir_base}/{url}".encode() + b'"'
        if not stored.deleted:
            part += b',"resource":' + resource_bytes(stored)
        part += b',"request":' + orjson.dumps(request)
        part += b',"response":' + orjson.dumps(response) + b"}"
        rendered.append(part)
    return _join_bundle(head, rendered)
