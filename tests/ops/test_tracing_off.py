"""Tracing off costs nothing: no opentelemetry import, the app and messages untouched."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from bus import Envelope, Message
from service import tracing
from service.config import Settings
from service.logs import correlation_id_var, event_id_var
from tests.ops.support import captured_logs

ROOT = Path(__file__).resolve().parents[2]


def test_nothing_imports_the_sdk_when_tracing_is_not_configured(tmp_path: Path) -> None:
    program = f"""
import sys
import service.tracing
assert not [m for m in sys.modules if m.startswith("opentelemetry")], "tracing imported it"
from service.api.app import create_app
from service.api.middleware import RequestContextMiddleware
from service.config import Settings
from service.worker import Worker
settings = Settings(data_dir={str(tmp_path)!r}, dev_auth=True)
app = create_app(settings)
# the middleware chain down to the request context: no tracing wrapper in it
chain = [type(app)]
while chain[-1] is not RequestContextMiddleware and hasattr(app, "app"):
    app = app.app
    chain.append(type(app))
assert chain[-1] is RequestContextMiddleware, chain
assert not [t for t in chain if "opentelemetry" in t.__module__], chain
Worker(settings).stop()
assert not service.tracing.enabled()
# FastAPI itself imports the opentelemetry API; the SDK and the exporter stay out
loaded = [m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter"))]
assert not loaded, loaded
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", program],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_off_the_hooks_are_no_ops_but_the_log_context() -> None:
    assert not tracing.configure(Settings(), service_name="stafett-test")
    app = object()
    assert tracing.instrument(app) is app  # type: ignore[arg-type]
    assert tracing.trace_headers() == ()
    envelope = Envelope.new(event_type="resource.changed", subject_key="p1", correlation_id="req-1")
    message = Message("stafett.changes", 0, 7, "p1", envelope.to_json())
    with tracing.message_scope("route", message) as scope:
        scope.outcome("applied")
        assert correlation_id_var.get() == "req-1"
        assert event_id_var.get() == envelope.event_id
    assert correlation_id_var.get() is None
    assert event_id_var.get() is None
    with tracing.message_scope("ingest", Message("stafett.inbound", 0, 8, None, b"not json")):
        assert event_id_var.get() is None


def test_an_endpoint_without_the_extra_warns_and_stays_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    settings = Settings(otel_endpoint="http://127.0.0.1:4318")
    with captured_logs("stafett.tracing") as logs:
        assert not tracing.configure(settings, service_name="stafett-test")
    assert not tracing.enabled()
    warning = logs.find(level="warning")[0]
    assert "pip install 'stafett[otel]'" in warning["message"]


def test_an_endpoint_with_the_extra_exports_over_otlp_http() -> None:
    pytest.importorskip(
        "opentelemetry.sdk.trace", reason="the otel extra is not installed: pip install '.[otel]'"
    )
    assert tracing.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("https://c/v1/traces") == "https://c/v1/traces"
    received: list[tuple[str, str, bytes]] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append((self.path, self.headers["Content-Type"], body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}/"
    assert not tracing.enabled()
    try:
        with captured_logs("stafett.tracing") as logs:
            assert tracing.configure(
                Settings(otel_endpoint=endpoint), service_name="stafett-worker"
            )
        assert logs.find(message="tracing on", otel_endpoint=endpoint)
        assert tracing.configure(Settings(), service_name="other")  # the first one wins
        envelope = Envelope.new(event_type="resource.submitted", subject_key="p1")
        with tracing.message_scope("ingest", envelope, "stafett.inbound") as scope:
            scope.outcome("applied")
            assert len(tracing.trace_headers()) == 1
    finally:
        tracing.shutdown()  # flushes the batch to the collector
        server.shutdown()
    assert not tracing.enabled()
    path, content_type, body = received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    assert b"stafett-worker" in body
    assert b"ingest stafett.inbound" in body
    assert envelope.event_id.encode() in body


def test_log_lines_outside_a_message_have_no_bus_ids() -> None:
    with captured_logs("stafett.test") as logs:
        logging.getLogger("stafett.test").info("plain")
        with tracing.message_scope(
            "route", Envelope.new(event_type="x", subject_key="p", correlation_id="c-9")
        ):
            logging.getLogger("stafett.test").info("inside")
    plain, inside = logs.lines
    assert "correlation_id" not in plain
    assert "event_id" not in plain
    assert inside["correlation_id"] == "c-9"
    uuid.UUID(inside["event_id"])
