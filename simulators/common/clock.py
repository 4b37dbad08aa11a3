"""Strictly increasing timestamps, so that "changed after <time>" works as a cursor."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = ["OSLO", "Clock"]

OSLO = ZoneInfo("Europe/Oslo")
_STEP = timedelta(milliseconds=1)


def _now() -> datetime:
    return datetime.now(OSLO)


class Clock:
    """Hands out timestamps in Europe/Oslo, each at least 1 ms after the previous one.

    Two writes in the same millisecond would otherwise share a timestamp, and a client
    that asks for changes strictly after the first would miss the second.
    """

    def __init__(self, now: Callable[[], datetime] = _now) -> None:
        self._now = now
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """Return the current wall-clock time (not necessarily unique)."""
        return self._now().astimezone(OSLO)

    def tick(self) -> datetime:
        """Return a new timestamp, truncated to milliseconds, later than every earlier one."""
        with self._lock:
            current = self.now()
            current = current.replace(microsecond=current.microsecond // 1000 * 1000)
            if self._last is not None and current <= self._last:
                current = self._last + _STEP
            self._last = current
            return current

    def resume_after(self, last: datetime) -> None:
        """Make later ticks follow `last` (a timestamp loaded from a saved store)."""
        with self._lock:
            if self._last is None or last > self._last:
                self._last = last
