"""A small thread-safe store: one JSON document on disk, rewritten atomically on change."""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["JsonStore"]


def _dump(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False, indent=1)


class JsonStore:
    """A dict kept in memory and persisted to `path` after every changing transaction.

    Transactions hold one re-entrant lock, so a read-modify-write is atomic across threads.
    An exception inside a transaction rolls the data back to the last saved state. With
    `path=None` nothing is written (handy for throwaway instances).
    """

    def __init__(self, path: Path | None, *, initial: Callable[[], dict[str, Any]]) -> None:
        self._lock = threading.RLock()
        self._path = path
        if path is not None and path.exists():
            loaded = json.loads(path.read_text(encoding="utf-8"))
            # keys added to `initial` after the file was written get their defaults
            self._data: dict[str, Any] = {**initial(), **loaded}
        else:
            self._data = initial()
        self._saved = _dump(self._data)
        if path is not None and not path.exists():
            self._write(self._saved)

    @property
    def path(self) -> Path | None:
        """Return the file the store is saved to."""
        return self._path

    @contextmanager
    def transaction(self) -> Iterator[dict[str, Any]]:
        """Yield the data under the lock; save it afterwards, or roll back on an exception."""
        with self._lock:
            try:
                yield self._data
            except BaseException:
                self._data = json.loads(self._saved)
                raise
            text = _dump(self._data)
            if text != self._saved:
                self._write(text)
                self._saved = text

    @contextmanager
    def read(self) -> Iterator[dict[str, Any]]:
        """Yield the data under the lock for reading only (nothing is saved; do not modify)."""
        with self._lock:
            yield self._data

    def snapshot(self) -> dict[str, Any]:
        """Return a deep copy of the data as last committed."""
        with self._lock:
            copy: dict[str, Any] = json.loads(self._saved)
            return copy

    def _write(self, text: str) -> None:
        if self._path is None:
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=self._path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
