"""The station's FHIR repository: versioned resources in a JSON store, searches with paging.

Follows the R4 RESTful API (https://hl7.org/fhir/R4/http.html): create assigns `hs-<n>`,
update increments `meta.versionId`, and an update that changes nothing creates no version.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from simulators.common.clock import Clock
from simulators.common.errors import NotFound, PreconditionFailed
from simulators.common.store import JsonStore
from simulators.health_station.fhir import RESOURCE_TYPES, BadRequest, Gone, validate
from simulators.health_station.search import Query

__all__ = ["FhirRepository", "Page", "initial_data"]

_KEPT_SEARCHES = 100


def initial_data() -> dict[str, Any]:
    """Return the empty store."""
    return {"next_id": 1, "resources": {t: {} for t in RESOURCE_TYPES}}


@dataclass(frozen=True)
class Page:
    """One page of a search: the resources, the total, and where the next page starts."""

    resources: list[dict[str, Any]]
    total: int
    search_id: str
    next_offset: int | None


def _content(resource: dict[str, Any]) -> dict[str, Any]:
    # what makes two versions different: everything except the server's bookkeeping
    meta = {k: v for k, v in (resource.get("meta") or {}).items() if k in ("tag", "security")}
    body = {k: v for k, v in resource.items() if k not in ("meta", "id")}
    return {**body, "meta": meta}


def _version_matches(if_match: str | None, version: str) -> bool:
    if if_match is None:
        return True
    tag = if_match.strip().removeprefix("W/").strip('"')
    return tag in ("*", version)


class FhirRepository:
    """Patients, CarePlans, Tasks, Consents and Organizations with full version history.

    `source` is stamped into `meta.source` for writes by staff (the journal); API writes keep
    the `meta.source` the client sent, so a connector can recognise its own versions.
    """

    def __init__(self, *, store: JsonStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock
        self._searches: OrderedDict[str, list[tuple[str, str, str]]] = OrderedDict()
        self._lock = threading.Lock()
        with store.read() as data:
            stamps = [
                datetime.fromisoformat(entry["current"]["meta"]["lastUpdated"])
                for by_id in data["resources"].values()
                for entry in by_id.values()
            ]
        if stamps:
            clock.resume_after(max(stamps))

    def read(self, *, resource_type: str, resource_id: str) -> dict[str, Any]:
        """Read the current version (R4 http.html#read)."""
        with self.store.read() as data:
            entry = self._entry(data, resource_type, resource_id)
            return copy.deepcopy(entry["current"])

    def vread(self, *, resource_type: str, resource_id: str, version: str) -> dict[str, Any]:
        """Read one version (R4 http.html#vread)."""
        with self.store.read() as data:
            entry = self._entry(data, resource_type, resource_id)
            for old in entry["history"]:
                if old["meta"]["versionId"] == version:
                    return copy.deepcopy(old)
        raise NotFound(f"{resource_type}/{resource_id} has no version {version}")

    def create(
        self, *, resource_type: str, resource: Any, source: str | None = None
    ) -> dict[str, Any]:
        """Create with a server-assigned id (R4 http.html#create); a client id is ignored."""
        validate(resource_type, resource)
        with self.store.transaction() as data:
            resource_id = f"hs-{data['next_id']}"
            data["next_id"] += 1
            stored = self._stamp(resource, resource_id, "1", source)
            data["resources"][resource_type][resource_id] = {
                "current": stored,
                "history": [stored],
            }
            return copy.deepcopy(stored)

    def update(
        self,
        *,
        resource_type: str,
        resource_id: str,
        resource: Any,
        if_match: str | None = None,
        source: str | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Update an existing resource (R4 http.html#update); return it and whether it changed."""
        validate(resource_type, resource)
        if resource.get("id") != resource_id:
            raise BadRequest(f"The resource id must be {resource_id!r}, as in the URL")
        with self.store.transaction() as data:
            entry = self._entry(data, resource_type, resource_id)
            current = entry["current"]
            if not _version_matches(if_match, current["meta"]["versionId"]):
                raise PreconditionFailed(
                    f"{resource_type}/{resource_id} is at version {current['meta']['versionId']}"
                )
            if _content(current) == _content(resource):
                return copy.deepcopy(current), False
            version = str(int(current["meta"]["versionId"]) + 1)
            stored = self._stamp(resource, resource_id, version, source)
            entry["current"] = stored
            entry["history"].append(stored)
            return copy.deepcopy(stored), True

    def search(self, *, resource_type: str, query: Query) -> Page:
        """Search (R4 search.html); the hits are frozen so later pages stay consistent."""
        with self.store.read() as data:
            hits = [r for r in data["resources"][resource_type].values() if query(r["current"])]
            found = [copy.deepcopy(h["current"]) for h in hits]
        if query.sort == "_id":
            found.sort(key=lambda r: int(r["id"].removeprefix("hs-")))
        else:
            found.sort(
                key=lambda r: datetime.fromisoformat(r["meta"]["lastUpdated"]),
                reverse=query.sort.startswith("-"),
            )
        keys = [(r["resourceType"], r["id"], r["meta"]["versionId"]) for r in found]
        search_id = str(uuid.uuid4())
        with self._lock:
            self._searches[search_id] = keys
            while len(self._searches) > _KEPT_SEARCHES:
                self._searches.popitem(last=False)
        return self.page(search_id=search_id, offset=0, count=query.count)

    def page(self, *, search_id: str, offset: int, count: int) -> Page:
        """Return a page of an earlier search, each hit in the version it had then."""
        with self._lock:
            keys = self._searches.get(search_id)
        if keys is None:
            raise Gone(f"The search {search_id} has expired; search again")
        chosen = keys[offset : offset + count]
        resources = [self.vread(resource_type=t, resource_id=i, version=v) for t, i, v in chosen]
        more = offset + count < len(keys) and count > 0
        return Page(resources, len(keys), search_id, offset + count if more else None)

    def _entry(self, data: dict[str, Any], resource_type: str, resource_id: str) -> Any:
        entry = data["resources"][resource_type].get(resource_id)
        if entry is None:
            raise NotFound(f"{resource_type}/{resource_id} is not known")
        return entry

    def _stamp(
        self, resource: dict[str, Any], resource_id: str, version: str, source: str | None
    ) -> dict[str, Any]:
        stored = copy.deepcopy(resource)
        meta = dict(stored.get("meta") or {})
        meta["versionId"] = version
        meta["lastUpdated"] = self.clock.tick().isoformat(timespec="milliseconds")
        if source is not None:
            meta["source"] = source
        # id and meta first, as servers usually answer
        return {
            "resourceType": stored.pop("resourceType"),
            "id": resource_id,
            "meta": meta,
            **{k: v for k, v in stored.items() if k not in ("id", "meta")},
        }
