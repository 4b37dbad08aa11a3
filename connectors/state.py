"""Small durable maps a connector keeps besides its checkpoint (links between record ids).

A sink that creates a record in a vendor system learns its new id; the source of the same
system needs that link to send the record's later changes to the right Stafett resource, and
the sink needs it to update (not create again) on the next delivery. A revoked child's
Stafett id must still name a fødselsnummer after Stafett stops showing the Patient. The maps
live in one JSON file (`settings.state_file`, replaced atomically) shared by the system's
connectors, or in process memory when no file is configured.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import orjson

__all__ = ["LinkState", "link_state"]

_SHARED: dict[str, LinkState] = {}
_SHARED_LOCK = threading.Lock()


class LinkState:
    """Tables of string → string, e.g. `tiltak` (vendor id → Stafett id) and `patient`."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._tables: dict[str, dict[str, str]] = {}
        self._stamp: int | None = None
        self._reload()

    def get(self, table: str, key: str) -> str | None:
        """Return the value stored under key (re-reading the file if another process wrote)."""
        with self._lock:
            found = self._tables.get(table, {}).get(key)
            if found is None and self._changed():
                self._reload()
                found = self._tables.get(table, {}).get(key)
            return found

    def key_of(self, table: str, value: str) -> str | None:
        """Return the key whose value is `value` (the reverse link)."""
        with self._lock:
            if self._changed():
                self._reload()
            return next((k for k, v in self._tables.get(table, {}).items() if v == value), None)

    def put(self, table: str, key: str, value: str) -> None:
        """Store a value durably before returning."""
        with self._lock:
            if self._changed():
                self._reload()
            if self._tables.get(table, {}).get(key) == value:
                return
            self._tables.setdefault(table, {})[key] = value
            self._write()

    def _changed(self) -> bool:
        return self._path is not None and self._mtime() != self._stamp

    def _mtime(self) -> int | None:
        try:
            return self._path.stat().st_mtime_ns if self._path else None
        except FileNotFoundError:
            return None

    def _reload(self) -> None:
        if self._path is None or not self._path.exists():
            return
        data = orjson.loads(self._path.read_bytes())
        if isinstance(data, dict):
            self._tables = {
                str(t): {str(k): str(v) for k, v in rows.items()}
                for t, rows in data.items()
                if isinstance(rows, dict)
            }
        self._stamp = self._mtime()

    def _write(self) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(orjson.dumps(self._tables))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._stamp = self._mtime()


def link_state(path: str | Path | None, *, shared_key: str) -> LinkState:
    """Return the state of one vendor system instance, one object per file or key."""
    key = str(Path(path).resolve()) if path else f"memory:{shared_key}"
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = LinkState(Path(path) if path else None)
        return _SHARED[key]
