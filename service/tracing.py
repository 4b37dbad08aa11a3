"""Optional OpenTelemetry tracing of FHIR requests and bus messages (the `otel` extra).

Off unless `STAFETT_OTEL_ENDPOINT` is set and the extra (opentelemetry-sdk and the OTLP/HTTP
exporter) is installed. While off, nothing here imports opentelemetry: `instrument` returns
the app it is given, `trace_headers` returns no headers and `message_scope` only puts the
message's event and correlation ids on the log lines. When on:

- every `/fhir` request gets a SERVER span named after its FHIR interaction (`read Task`,
  `search-type CarePlan`, `transaction`), a child of the caller's W3C `traceparent` header if
  it sent one, with the request id as `stafett.request_id`;
- every bus message the worker handles gets a CONSUMER span (`ingest stafett.inbound`,
  `route stafett.changes`), a child of the message's `traceparent` Kafka header if any;
- the router's deliveries and notices on `stafett.out.<orgnr>` carry the route span's
  `traceparent` header, so a vendor's consumer can continue the trace.

The outbox stores no headers, so a change relayed to `stafett.changes` starts a new trace:
the route span carries the REST call's request id as `stafett.correlation_id`, which joins it
to the request's span (`stafett.request_id`) in the tracing backend.
"""

from __future__ import annotations

import logging
import os
from types import TracebackType
from typing import TYPE_CHECKING, Any

from bus import Envelope, EnvelopeError, Headers, Message
from service import __version__
from service.logs import log_context, trace_id_var
from service.metrics import interaction_of

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from starlette.types import ASGIApp, Receive, Scope, Send
    from starlette.types import Message as AsgiMessage

    from service.config import Settings

__all__ = [
    "configure",
    "enabled",
    "instrument",
    "message_scope",
    "shutdown",
    "trace_headers",
    "traces_url",
]

_log = logging.getLogger("stafett.tracing")
_PROPAGATED = (b"traceparent", b"tracestate")


class _Tracing:
    """The tracer, the W3C trace-context propagator and the provider of this process."""

    def __init__(self, provider: Any, *, owned: bool) -> None:
        from opentelemetry import trace  # noqa: PLC0415 - only when tracing is on
        from opentelemetry.trace.propagation.tracecontext import (  # noqa: PLC0415
            TraceContextTextMapPropagator,
        )

        self.api = trace
        self.provider = provider
        self.owned = owned
        self.tracer = provider.get_tracer("stafett", __version__)
        self.propagator = TraceContextTextMapPropagator()


_state: _Tracing | None = None


def configure(settings: Settings, *, service_name: str, tracer_provider: Any = None) -> bool:
    """Turn tracing on for this process if configured and installed; return whether it is on.

    The first call that turns it on wins; later calls keep that configuration. Tests pass
    their own `tracer_provider` (e.g. with an in-memory exporter) instead of an endpoint.
    """
    global _state  # noqa: PLW0603 - one tracer per process
    if _state is not None:
        return True
    if tracer_provider is None and not settings.otel_endpoint:
        return False
    try:
        owned = tracer_provider is None
        provider = tracer_provider or _otlp_provider(settings, service_name)
        _state = _Tracing(provider, owned=owned)
    except ImportError as exc:
        _log.warning(
            "STAFETT_OTEL_ENDPOINT is set but the otel extra is not installed "
            "(pip install 'stafett[otel]'); tracing is off: %s",
            exc,
        )
        return False
    _log.info("tracing on", extra={"otel_endpoint": settings.otel_endpoint})
    return True


def enabled() -> bool:
    """Return whether tracing is on in this process."""
    return _state is not None


def shutdown() -> None:
    """Turn tracing off; flush and close the exporter if `configure` created it."""
    global _state
    state, _state = _state, None
    if state is not None and state.owned:
        state.provider.shutdown()


def _otlp_provider(settings: Settings, service_name: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
    from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415

    resource = Resource.create(
        {
            "service.name": os.environ.get("OTEL_SERVICE_NAME") or service_name,
            "service.version": __version__,
            "deployment.environment.name": settings.environment,
        }
    )
    # the sampler comes from OTEL_TRACES_SAMPLER(_ARG); headers, certificates, timeout and
    # compression of the exporter from OTEL_EXPORTER_OTLP_*
    provider = TracerProvider(resource=resource)
    exporter = OTLPSpanExporter(endpoint=traces_url(str(settings.otel_endpoint)))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def traces_url(endpoint: str) -> str:
    """Return the OTLP/HTTP traces URL of a collector's base URL (`.../v1/traces`)."""
    url = endpoint.rstrip("/")
    return url if url.endswith("/v1/traces") else url + "/v1/traces"


def _trace_id(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


def _carrier(headers: Any) -> dict[str, str]:
    """Return the trace-context headers of ASGI or Kafka headers as a str -> str mapping."""
    carrier: dict[str, str] = {}
    for key, value in headers:
        name = (key.encode("latin-1") if isinstance(key, str) else bytes(key)).lower()
        if name in _PROPAGATED:
            carrier[name.decode()] = bytes(value).decode("latin-1")
    return carrier


# -- the API ---------------------------------------------------------------------------------
def instrument(app: ASGIApp) -> ASGIApp:
    """Wrap the ASGI app in the request-span middleware when tracing is on; else return it."""
    return app if _state is None else _TracingMiddleware(app)


class _TracingMiddleware:
    """One SERVER span per /fhir request, named after the FHIR interaction."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        state = _state
        path = scope.get("path", "")
        if (
            state is None
            or scope["type"] != "http"
            or not (path == "/fhir" or path.startswith("/fhir/"))
        ):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "")
        interaction, resource_type = interaction_of(method, path)
        status = [500]

        async def send_with_status(message: AsgiMessage) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        attributes = {
            "http.request.method": method,
            "url.path": path,  # ids only: query strings (identifiers) are never recorded
            "fhir.interaction": interaction,
        }
        if resource_type:
            attributes["fhir.resource_type"] = resource_type
        with state.tracer.start_as_current_span(
            f"{interaction} {resource_type}".rstrip(),
            context=state.propagator.extract(_carrier(scope.get("headers") or ())),
            kind=state.api.SpanKind.SERVER,
            attributes=attributes,
        ) as span:
            token = trace_id_var.set(_trace_id(span))
            try:
                await self.app(scope, receive, send_with_status)
            finally:
                trace_id_var.reset(token)
                span.set_attribute("http.response.status_code", status[0])
                request_id = (scope.get("state") or {}).get("request_id")
                if request_id:
                    span.set_attribute("stafett.request_id", request_id)
                if status[0] >= 500:
                    span.set_status(state.api.StatusCode.ERROR)


# -- the bus ---------------------------------------------------------------------------------
def trace_headers() -> Headers:
    """Return the current span's W3C trace context as Kafka record headers (none when off)."""
    state = _state
    if state is None:
        return ()
    carrier: dict[str, str] = {}
    state.propagator.inject(carrier)
    return tuple((key, value.encode()) for key, value in carrier.items())


class message_scope:  # noqa: N801 - used like a function: `with message_scope(...):`
    """The log context and, with tracing on, a CONSUMER span of one bus message being handled.

    Give a consumed `Message` (its envelope is parsed for the ids, its headers for the trace
    context) or an `Envelope` with the topic it came from.
    """

    __slots__ = ("_envelope", "_headers", "_log", "_operation", "_span", "_span_cm", "_token")

    def __init__(
        self, operation: str, message: Message | Envelope, topic: str | None = None
    ) -> None:
        self._operation = f"{operation} {topic}" if topic else operation
        self._headers: Headers = ()
        if isinstance(message, Message):
            self._operation = f"{operation} {message.topic}"
            self._headers = message.headers
            try:
                self._envelope: Envelope | None = message.envelope()
            except EnvelopeError:
                self._envelope = None
        else:
            self._envelope = message
        envelope = self._envelope
        self._log = log_context(
            event_id=envelope.event_id if envelope else None,
            correlation_id=envelope.correlation_id if envelope else None,
        )
        self._span: Any = None
        self._span_cm: AbstractContextManager[Any] | None = None
        self._token: Any = None

    def __enter__(self) -> message_scope:
        self._log.__enter__()
        state = _state
        if state is not None:
            self._span_cm = state.tracer.start_as_current_span(
                self._operation,
                context=state.propagator.extract(_carrier(self._headers)),
                kind=state.api.SpanKind.CONSUMER,
                attributes=self._attributes(),
            )
            self._span = self._span_cm.__enter__()
            self._token = trace_id_var.set(_trace_id(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._span_cm is not None:
                trace_id_var.reset(self._token)
                self._span_cm.__exit__(exc_type, exc, tb)
        finally:
            self._log.__exit__(exc_type, exc, tb)

    def outcome(self, value: str) -> None:
        """Record what became of the message on its span (`stafett.outcome`)."""
        if self._span is not None:
            self._span.set_attribute("stafett.outcome", value)

    def _attributes(self) -> dict[str, str]:
        envelope = self._envelope
        attributes = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": self._operation.partition(" ")[2],
        }
        if envelope is not None:
            optional = {
                "messaging.message.id": envelope.event_id,
                "stafett.event_type": envelope.event_type,
                "stafett.correlation_id": envelope.correlation_id,
                "stafett.sender": envelope.sender,
                "fhir.resource_type": envelope.resource_type,
            }
            attributes.update({k: v for k, v in optional.items() if v})
        return {k: v for k, v in attributes.items() if v}
