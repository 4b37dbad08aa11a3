"""Structured (JSON) logging with the request, correlation, event and trace ids on every line.

The API sets `request_id_var` per request (service/api/middleware.py); the worker sets
`correlation_id_var` and `event_id_var` per bus message with `log_context` (the correlation
id of a change is the request id of the REST call that made it, so one grep follows a write
from the API through the router to each delivery); service/tracing.py sets `trace_id_var`
while a span is open.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from types import TracebackType
from typing import Any

import orjson

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "correlation_id_var",
    "event_id_var",
    "log_context",
    "request_id_var",
    "trace_id_var",
]

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stafett_request_id", default=None
)
correlation_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stafett_correlation_id", default=None
)
event_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stafett_event_id", default=None
)
trace_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stafett_trace_id", default=None
)
_CONTEXT = (
    ("request_id", request_id_var),
    ("correlation_id", correlation_id_var),
    ("event_id", event_id_var),
    ("trace_id", trace_id_var),
)


class log_context:  # noqa: N801 - used like a function: `with log_context(...):`
    """Put a bus message's event id and correlation id on every log line inside the block."""

    __slots__ = ("_correlation_id", "_event_id", "_tokens")

    def __init__(self, *, event_id: str | None, correlation_id: str | None) -> None:
        self._event_id = event_id
        self._correlation_id = correlation_id
        self._tokens: tuple[contextvars.Token[str | None], ...] = ()

    def __enter__(self) -> None:
        self._tokens = (
            event_id_var.set(self._event_id),
            correlation_id_var.set(self._correlation_id),
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        event_token, correlation_token = self._tokens
        correlation_id_var.reset(correlation_token)
        event_id_var.reset(event_token)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context ids and extras."""

    _standard = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}

    def format(self, record: logging.LogRecord) -> str:
        """Format a record as JSON."""
        payload: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in _CONTEXT:
            value = var.get()
            if value:
                payload[key] = value
        for key, value in record.__dict__.items():
            if key not in self._standard and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(payload, default=str).decode()


class _StderrHandler(logging.StreamHandler[Any]):
    """Writes to whatever `sys.stderr` is when a record is emitted.

    A handler that kept the stream it was built with would write to a closed file once that
    stream is swapped and closed (pytest's capture does it after each test), and a thread
    still running then would lose its log lines with a "Logging error".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        """Return the current standard error."""
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass  # always the current sys.stderr


def configure_logging(*, level: str = "INFO", json_lines: bool = True) -> None:
    """Send all logs to stderr, as JSON lines unless told otherwise."""
    handler = _StderrHandler()
    if json_lines:
        formatter: logging.Formatter = JsonFormatter()
        formatter.converter = time.gmtime
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # uvicorn's own access log is replaced by ours, which carries the request id
    logging.getLogger("uvicorn.access").disabled = True
