"""A live API and an in-process worker with one child's log, and JSON log capture, for tests/ops."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bus import Bus, InMemoryBus, topics
from service.logs import JsonFormatter
from service.worker import Worker
from tests.consent_api.world import ORGS, Child, open_log, permit
from tests.support import ORGNR_SYSTEM, LiveServer, fhir_headers, live_server, synthetic_fnr


class JsonCapture(logging.Handler):
    """Keeps every record as the JSON object the production formatter makes of it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []
        self._lines_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        # formatted in the emitting thread, where the context ids are set
        line = orjson.loads(self.format(record))
        with self._lines_lock:
            self.lines.append(line)

    def find(self, **fields: Any) -> list[dict[str, Any]]:
        with self._lines_lock:
            return [
                line
                for line in self.lines
                if all(line.get(key) == value for key, value in fields.items())
            ]

    def wait_for(self, timeout: float = 30.0, **fields: Any) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.find(**fields)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"no log line with {fields}")


@contextmanager
def captured_logs(name: str = "stafett") -> Iterator[JsonCapture]:
    """Capture the JSON log lines of a logger (and its children) at DEBUG."""
    logger = logging.getLogger(name)
    capture = JsonCapture()
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(capture)
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)


@dataclass
class OpsStack:
    """API, worker, bus and one child's log: the kindergarten writes, the school may read."""

    server: LiveServer
    worker: Worker
    bus: Bus
    org_ids: dict[str, str]
    child: Child
    logs: JsonCapture

    def client(self, org: str) -> Any:
        return self.server.client(self.server.system_token(org=ORGS[org]))

    def task(self, text: str) -> dict[str, Any]:
        return {
            "resourceType": "Task",
            "status": "in-progress",
            "intent": "plan",
            "for": {"reference": f"Patient/{self.child.patient}"},
            "owner": {"reference": f"Organization/{self.org_ids['health']}"},
            "description": text,
        }


@contextmanager
def ops_stack(data_dir: Path) -> Iterator[OpsStack]:
    """Run the API (SQLite) and a worker on the in-process bus around one child's log."""
    database_url = f"sqlite:///{data_dir / 'stafett.db'}"
    with (
        captured_logs() as logs,
        live_server(database_url=database_url, data_dir=data_dir) as server,
    ):
        bus = InMemoryBus()
        bus.ensure_topics([*topics.ALL_FIXED, *(topics.outbound(n) for n in ORGS.values())])
        # the school subscribes: it gets what the family permits; the health station owns
        # the Tasks but is not permitted, so its deliveries are refused
        settings = server.settings.model_copy(update={"subscribers": [ORGS["school"]]})
        worker = Worker(settings, bus=bus, components=("relay", "router", "ingest"))
        worker.start()
        try:
            yield _world(server, worker, bus, logs)
        finally:
            worker.stop()


def _world(server: LiveServer, worker: Worker, bus: Bus, logs: JsonCapture) -> OpsStack:
    kindergarten = server.client(server.system_token(org=ORGS["kindergarten"]))
    org_ids: dict[str, str] = {}
    for name in ("kindergarten", "school", "health"):
        response = kindergarten.post(
            "/Organization",
            json={
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": ORGS[name]}],
                "name": name,
            },
            headers=fhir_headers(),
        )
        assert response.status_code == 201, response.text
        org_ids[name] = response.json()["id"]
    child = Child("Ola", synthetic_fnr())
    opened = open_log(
        kindergarten,
        child,
        birth_date="2021-03-01",
        consent_provision=permit(org_ids, "kindergarten", "school"),
        owner=org_ids["health"],
    )
    assert opened.status_code == 200, opened.text
    return OpsStack(server, worker, bus, org_ids, child, logs)
