"""Durable source checkpoints: where each source connector has read up to."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import orjson

__all__ = ["CheckpointStore", "FileCheckpointStore"]


class CheckpointStore(Protocol):
    """Stores one JSON checkpoint per connector."""

    def load(self, connector: str) -> dict[str, Any] | None:
        """Return the stored checkpoint, or None."""
        ...

    def save(self, connector: str, checkpoint: Mapping[str, Any]) -> None:
        """Store the checkpoint durably before returning."""
        ...

    def delete(self, connector: str) -> None:
        """Forget the checkpoint (the connector starts from the beginning)."""
        ...


class FileCheckpointStore:
    """One JSON file per connector, replaced atomically (write, fsync, rename)."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        self._dir = directory
        if create:
            # at start: a state folder that cannot be made fails the command, not a later save
            self._dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def _path(self, connector: str) -> Path:
        return self._dir / f"{connector}.checkpoint.json"

    def load(self, connector: str) -> dict[str, Any] | None:
        """Return the stored checkpoint, or None."""
        path = self._path(connector)
        if not path.exists():
            return None
        data = orjson.loads(path.read_bytes())
        return data if isinstance(data, dict) else None

    def save(self, connector: str, checkpoint: Mapping[str, Any]) -> None:
        """Write to a temporary file, fsync, then rename over the old one."""
        path = self._path(connector)
        with self._lock:
            self._dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._dir, prefix=f".{connector}.")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(orjson.dumps(dict(checkpoint)))
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    def delete(self, connector: str) -> None:
        """Forget the checkpoint."""
        self._path(connector).unlink(missing_ok=True)
