"""What a sink needs from Stafett's FHIR API: the identifiers of referenced resources.

A delivery refers to the child and the services by Stafett ids (`Patient/123`); vendor systems
know them by fødselsnummer and org.nr. The sink reads the referenced resources over REST with
its organisation's token, like any other client (consent decides), and caches the answers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import httpx

__all__ = ["StafettClient", "references_in"]


def references_in(value: Any) -> set[str]:
    """Return every literal `Type/id` reference in a resource."""
    found: set[str] = set()
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and reference.count("/") == 1 and "?" not in reference:
            found.add(reference)
        for child in value.values():
            found |= references_in(child)
    elif isinstance(value, list):
        for child in value:
            found |= references_in(child)
    return found


class StafettClient:
    """A small FHIR client for Stafett with a cache of resources' identifiers."""

    def __init__(
        self, base_url: str, token: str, *, timeout_s: float = 10.0, max_cached: int = 10_000
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}", "Accept": "application/fhir+json"},
            timeout=timeout_s,
        )
        self._cache: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()
        self._max = max_cached
        self._lock = threading.Lock()

    def read(self, reference: str) -> dict[str, Any] | None:
        """Return the resource, None if it is not there (or not visible); raise on errors."""
        response = self._http.get(f"/{reference}")
        if response.status_code in (404, 410):
            return None
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def identifiers(self, references: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
        """Return the identifiers of each referenced resource (those that can be read)."""
        found: dict[str, list[dict[str, Any]]] = {}
        for reference in sorted(set(references)):
            with self._lock:
                cached = self._cache.get(reference)
            if cached is None:
                resource = self.read(reference)
                if resource is None:
                    continue
                cached = [i for i in resource.get("identifier") or () if isinstance(i, dict)]
                with self._lock:
                    self._cache[reference] = cached
                    while len(self._cache) > self._max:
                        self._cache.popitem(last=False)
            found[reference] = cached
        return found

    def remember(self, reference: str, identifiers: list[dict[str, Any]]) -> None:
        """Cache identifiers learnt from a delivery (e.g. a delivered Patient)."""
        with self._lock:
            self._cache[reference] = identifiers

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()
