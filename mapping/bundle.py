"""Build the transaction Bundle a connector sends for inbound mapping results.

Conditional references (`Patient?identifier=...`) resolve on the server only to resources
that already exist; a resource created in the same transaction must be referred to by its
`urn:uuid:` fullUrl. This module gives every entry a fullUrl derived from its match criteria
(stable, so a retried message produces the same Bundle), rewrites references to siblings,
and picks the request: `PUT <Type>?<match>` (conditional update), `POST` with `ifNoneExist`
for create-only entries, `PUT <Type>/<id>` when the id is known.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from mapping.result import MappedResource, MappingResult

__all__ = ["transaction_bundle"]

_NAMESPACE = uuid.UUID("5f0c3d1e-8a4b-4c57-9a8e-2f6d0b7c1a90")


def _full_url(entry: MappedResource, index: int) -> str:
    key = entry.conditional_url or f"{entry.resource_type}#{index}"
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, key)}"


def _rewrite(value: Any, targets: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: targets.get(child, child)
            if key == "reference" and isinstance(child, str)
            else _rewrite(child, targets)
            for key, child in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(child, targets) for child in value]
    return value


def _request(entry: MappedResource) -> dict[str, str]:
    resource_id = entry.resource.get("id")
    if isinstance(resource_id, str):
        return {"method": "PUT", "url": f"{entry.resource_type}/{resource_id}"}
    if entry.match is None:
        return {"method": "POST", "url": entry.resource_type}
    if entry.create_only:
        return {"method": "POST", "url": entry.resource_type, "ifNoneExist": entry.match}
    return {"method": "PUT", "url": f"{entry.resource_type}?{entry.match}"}


def transaction_bundle(results: Iterable[MappingResult | MappedResource]) -> dict[str, Any]:
    """Return a transaction Bundle writing the inbound results, siblings linked by urn:uuid.

    Entries with the same match criteria are written once (the last one wins, or the first
    for create-only entries, which are never overwritten anyway).
    """
    entries: dict[str, tuple[str, MappedResource]] = {}
    for number, item in enumerate(_flatten(results)):
        key = item.conditional_url or f"#{number}"
        if key in entries and item.create_only:
            continue
        entries[key] = (_full_url(item, number), item)
    targets = {key: full_url for key, (full_url, _) in entries.items() if not key.startswith("#")}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": full_url,
                "resource": _rewrite(item.resource, targets),
                "request": _request(item),
            }
            for full_url, item in entries.values()
        ],
    }


def _flatten(results: Iterable[MappingResult | MappedResource]) -> Iterable[MappedResource]:
    for item in results:
        if isinstance(item, MappingResult):
            yield from item.entries
        else:
            yield item
