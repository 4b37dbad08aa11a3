"""The health station's own FHIR R4 server (bearer token, its own ids and coding)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from connectors.base import PermanentError

__all__ = ["StationClient"]

_FHIR_JSON = "application/fhir+json"


class StationClient:
    """Search with paging, read, create, update and conditional update."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        root = base_url.rstrip("/")
        self._http = httpx.Client(
            # the server's root or its FHIR base: both are found in configurations
            base_url=root if root.endswith("/fhir") else root + "/fhir",
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": _FHIR_JSON,
                "Content-Type": _FHIR_JSON,
            },
            timeout=timeout_s,
        )

    def changed(
        self, resource_type: str, after: str | None, *, page_size: int = 50, max_pages: int = 10
    ) -> tuple[list[dict[str, Any]], bool]:
        """Return resources updated after `after`, oldest first, and whether more wait.

        Follows `next` links (the server's paging is a snapshot, so nothing shifts between
        pages) for up to `max_pages` pages.
        """
        params: list[tuple[str, str | int | float | bool | None]] = [
            ("_sort", "_lastUpdated"),
            ("_count", page_size),
        ]
        if after:
            params.append(("_lastUpdated", f"gt{after}"))
        bundle = _json(self._http.get(f"/{resource_type}", params=params))
        found = _resources(bundle)
        for _ in range(max_pages - 1):
            link = _next(bundle)
            if link is None:
                return found, False
            bundle = _json(self._http.get(link))
            found += _resources(bundle)
        return found, _next(bundle) is not None

    def search(self, resource_type: str, params: Iterable[tuple[str, str]]) -> list[dict[str, Any]]:
        """Return every match of a search (all pages)."""
        bundle = _json(self._http.get(f"/{resource_type}", params=[*params, ("_count", "200")]))
        found = _resources(bundle)
        while (link := _next(bundle)) is not None:
            bundle = _json(self._http.get(link))
            found += _resources(bundle)
        return found

    def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        """Return the current version, None if there is none."""
        response = self._http.get(f"/{resource_type}/{resource_id}")
        return None if response.status_code == 404 else _json(response)

    def update(self, resource: Mapping[str, Any], *, version: str | None = None) -> dict[str, Any]:
        """Update by id; with `version`, only if nobody changed it since (412 otherwise)."""
        headers = {"If-Match": f'W/"{version}"'} if version else {}
        path = f"/{resource['resourceType']}/{resource['id']}"
        return _json(self._http.put(path, json=dict(resource), headers=headers))

    def upsert(self, resource: Mapping[str, Any], criteria: str) -> dict[str, Any]:
        """Conditional update: update the one match of the criteria, or create."""
        body = {k: v for k, v in resource.items() if k != "id"}
        return _json(self._http.put(f"/{resource['resourceType']}?{criteria}", json=body))

    def create(self, resource: Mapping[str, Any], *, if_none_exist: str) -> dict[str, Any]:
        """Conditional create: the existing match, or a new resource."""
        return _json(
            self._http.post(
                f"/{resource['resourceType']}",
                json=dict(resource),
                headers={"If-None-Exist": if_none_exist},
            )
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code in (400, 422):
        # the server will never take this resource as it is (an OperationOutcome says why)
        raise PermanentError(f"{response.status_code} {response.text[:500]}")
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def _resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry") or ()
        if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]


def _next(bundle: Mapping[str, Any]) -> str | None:
    for link in bundle.get("link") or ():
        if isinstance(link, dict) and link.get("relation") == "next" and link.get("url"):
            return str(link["url"])
    return None
