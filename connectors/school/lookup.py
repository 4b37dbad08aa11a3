"""Read what Stafett holds, so a vendor's change is merged into it instead of replacing it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any
from urllib.parse import parse_qsl

from connectors.school.merge import (
    first_seen_team,
    merge_careteam,
    merge_identifiers,
    merge_resource,
    merge_task,
)
from connectors.stafett import StafettClient
from mapping import MappedResource

__all__ = ["StafettLookup", "reconcile"]

_MERGED = frozenset({"Task", "CarePlan", "CareTeam", "Consent"})
_ENDED = frozenset({"inactive", "rejected", "entered-in-error"})


class StafettLookup(StafettClient):
    """StafettClient with searches (a token with `system/*.rs` and the family's consent)."""

    def search(self, resource_type: str, params: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Return the resources of the first page of a search."""
        response = self._http.get(f"/{resource_type}", params=[*params, ("_count", "100")])
        response.raise_for_status()
        bundle: dict[str, Any] = response.json()
        return [
            e["resource"]
            for e in bundle.get("entry") or ()
            if isinstance(e, dict)
            and isinstance(e.get("resource"), dict)
            and e.get("search", {}).get("mode", "match") == "match"
        ]

    def matching(self, entry: MappedResource) -> dict[str, Any] | None:
        """Return the resource a conditional entry would update, if Stafett shows it."""
        if entry.match is None:
            return None
        found = self.search(entry.resource_type, parse_qsl(entry.match))
        return found[0] if len(found) == 1 else None


def reconcile(
    entries: Iterable[MappedResource],
    lookup: StafettLookup | None,
    *,
    linked: Mapping[str, str] | None = None,
    ours: Callable[[Any], str | None] | None = None,
) -> list[MappedResource]:
    """Return the entries merged with Stafett's current versions (updates by id).

    `linked` gives Stafett ids by resource type for records that Stafett does not know by
    the vendor identifier yet (a record the sink created in the vendor system). A Consent
    that Stafett holds as withdrawn is left out when the vendor still calls it active: a
    withdrawal is never undone by a stale vendor record (the sink writes it back).
    """
    if lookup is None:
        return list(entries)
    out: list[MappedResource] = []
    for entry in entries:
        if entry.create_only or entry.resource_type not in _MERGED:
            out.append(entry)
            continue
        current = lookup.matching(entry)
        if current is None and linked and entry.resource_type in linked:
            current = lookup.read(f"{entry.resource_type}/{linked[entry.resource_type]}")
        if current is None:
            if entry.resource_type == "CareTeam" and ours is not None:
                team = first_seen_team(entry.resource, today=date.today().isoformat())
                out.append(MappedResource(team, entry.spec, entry.match, entry.create_only))
            else:
                out.append(entry)
            continue
        merged = _merged(entry, current, ours)
        if merged is not None:
            out.append(MappedResource(merged, entry.spec, entry.match, entry.create_only))
    return out


def _merged(
    entry: MappedResource, current: dict[str, Any], ours: Callable[[Any], str | None] | None
) -> dict[str, Any] | None:
    incoming = entry.resource
    if entry.resource_type == "Task":
        return merge_task(current, incoming)
    if entry.resource_type == "CareTeam" and ours is not None:
        return merge_careteam(current, incoming, ours=ours, today=date.today().isoformat())
    if entry.resource_type == "Consent":
        if current.get("status") in _ENDED and incoming.get("status") == "active":
            return None
        identifiers = merge_identifiers(current.get("identifier"), incoming.get("identifier"))
        return {**incoming, "id": current["id"], "identifier": identifiers}
    return merge_resource(current, incoming)
