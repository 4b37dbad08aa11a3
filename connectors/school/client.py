"""The school system's REST API behind OAuth2 client credentials (RFC 6749 §4.4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from connectors.base import PermanentError

__all__ = ["COLLECTIONS", "ID_FIELDS", "SchoolClient"]

COLLECTIONS = {"elev": "elever", "tiltak": "tiltak", "samtykke": "samtykker"}
ID_FIELDS = {"elev": "elevId", "tiltak": "tiltakId", "samtykke": "id"}
_READ_ONLY = ("endret", "endretAv")


class SchoolClient:
    """Pupils, measures and consents; the token is cached and renewed before it expires."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)
        self._id = client_id
        self._secret = client_secret
        self._clock = clock
        self._token: str | None = None
        self._valid_until = 0.0
        self._lock = threading.Lock()

    @property
    def client_id(self) -> str:
        """Return the OAuth client id: `endretAv` of this connector's own writes."""
        return self._id

    def _bearer(self, *, renew: bool = False) -> str:
        with self._lock:
            if renew or self._token is None or self._clock() >= self._valid_until:
                response = self._http.post(
                    "/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self._id,
                        "client_secret": self._secret,
                    },
                )
                if response.status_code in (400, 401):
                    # a configuration problem, not the record's: retried, never dead-lettered
                    raise RuntimeError(f"the school system refused the client: {response.text}")
                response.raise_for_status()
                body = response.json()
                lifetime = float(body.get("expires_in", 300))
                # renew shortly before expiry, so a token never runs out mid-request
                self._valid_until = self._clock() + lifetime - min(30.0, lifetime / 5)
                self._token = str(body["access_token"])
            return self._token

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(
            method, path, headers={"Authorization": f"Bearer {self._bearer()}"}, **kwargs
        )
        if response.status_code == 401:
            # expired early or the server restarted (tokens live in its memory): once more
            token = self._bearer(renew=True)
            response = self._http.request(
                method, path, headers={"Authorization": f"Bearer {token}"}, **kwargs
            )
        return response

    def changed(self, kind: str, after: str | None) -> list[dict[str, Any]]:
        """Return records changed strictly after `after` (oldest first, at most a page)."""
        params = {"endretEtter": after} if after else {}
        data = _json(self._call("GET", f"/api/{COLLECTIONS[kind]}", params=params))
        return [r for r in data.get(COLLECTIONS[kind]) or () if isinstance(r, dict)]

    def get(self, kind: str, record_id: object) -> dict[str, Any] | None:
        """Return a record, None if there is none with that id."""
        response = self._call("GET", f"/api/{COLLECTIONS[kind]}/{record_id}")
        return None if response.status_code == 404 else _json(response)

    def put(self, kind: str, record_id: object, record: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a record (an unchanged body changes nothing)."""
        body = {k: v for k, v in record.items() if k not in _READ_ONLY}
        return _json(self._call("PUT", f"/api/{COLLECTIONS[kind]}/{record_id}", json=body))

    def create_measure(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create a measure; return it with its new `tiltakId`."""
        body = {k: v for k, v in record.items() if k not in (*_READ_ONLY, "tiltakId")}
        return _json(self._call("POST", "/api/tiltak", json=body))

    def pupils(self, fnr: str) -> list[dict[str, Any]]:
        """Return the pupils with this fødselsnummer (personnummer)."""
        data = _json(self._call("GET", "/api/elever", params={"personnummer": fnr}))
        return [r for r in data.get("elever") or () if isinstance(r, dict)]

    def of_pupil(self, kind: str, elev_id: object) -> list[dict[str, Any]]:
        """Return a pupil's measures or consents."""
        data = _json(self._call("GET", f"/api/{COLLECTIONS[kind]}", params={"elevId": elev_id}))
        return [r for r in data.get(COLLECTIONS[kind]) or () if isinstance(r, dict)]

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code in (400, 409, 422):
        # the system will never take this record as it is
        raise PermanentError(f"{response.status_code} {response.text[:500]}")
    response.raise_for_status()
    data = response.json()
    return data if isinstance(data, dict) else {"items": data}
