"""The connector runtime's own logic with scripted tasks on the in-process bus.

The vendor systems here are scripts, so each failure can be placed exactly; the connectors
against the simulators, Kafka and Stafett are tested end to end elsewhere.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from bus import Envelope, InMemoryBus, Message, Record, topics
from connectors import (
    ConnectorConfig,
    ConnectorRuntime,
    ConnectorState,
    FileCheckpointStore,
    SourceBatch,
    SourceRecord,
    load_config,
)
from connectors.admin import admin_app
from connectors.base import PermanentError

ORG = "912837467"
OPERATOR = "936451284"


def _config(name: str, kind: str, **extra: Any) -> ConnectorConfig:
    return ConnectorConfig.model_validate(
        {
            "name": name,
            "kind": kind,
            "system": "kindergarten",
            "organization": ORG,
            "operator": OPERATOR,
            "source_system": "barnehagesystem",
            "poll_interval_s": 0.02,
            "retry": {"max_attempts": 3, "backoff_s": 0.01, "max_backoff_s": 0.05},
            **extra,
        }
    )


class ScriptedSource:
    """A vendor change feed of `total` records, `page` at a time; can fail on demand."""

    def __init__(self, total: int, page: int = 7) -> None:
        self.total = total
        self.page = page
        self.failing = False
        self.polls = 0
        self.closed = False

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        self.polls += 1
        if self.failing:
            raise ConnectionError("vendor API answered 500")
        start = int((checkpoint or {}).get("after", 0))
        end = min(self.total, start + self.page)
        records = [
            SourceRecord(
                event_id=f"00000000-0000-4000-8000-{n:012d}",
                subject="15832151200",
                payload={"resourceType": "Task", "status": "requested", "intent": "plan"},
                record_id=f"T-{n}",
            )
            for n in range(start, end)
        ]
        return SourceBatch(records=records, checkpoint={"after": end}, more=end < self.total)

    def close(self) -> None:
        self.closed = True


class ScriptedSink:
    """A vendor API that fails the first `flaky` attempts of each message, or refuses some."""

    def __init__(self, flaky: int = 0, refuse: Callable[[Envelope], bool] = lambda e: False):
        self.flaky = flaky
        self.refuse = refuse
        self.attempts: dict[str, int] = {}
        self.applied: list[str] = []
        self.lock = threading.Lock()

    def put(self, envelope: Envelope) -> None:
        with self.lock:
            self.attempts[envelope.event_id] = self.attempts.get(envelope.event_id, 0) + 1
            attempt = self.attempts[envelope.event_id]
        if self.refuse(envelope):
            raise PermanentError("the vendor system has no such unit")
        if attempt <= self.flaky:
            raise TimeoutError("vendor API timed out")
        with self.lock:
            if envelope.event_id not in self.applied:
                self.applied.append(envelope.event_id)

    def close(self) -> None:
        pass


def _wait(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _inbound(bus: InMemoryBus) -> list[Message]:
    got: list[Message] = []
    with bus.consumer([topics.INBOUND], f"t-{time.time_ns()}") as consumer:
        while batch := consumer.poll(0.2):
            got.extend(batch)
    return got


@pytest.fixture
def bus() -> Iterator[InMemoryBus]:
    with InMemoryBus() as b:
        yield b


def _runtime(
    bus: InMemoryBus, tmp_path: Path, configs: list[ConnectorConfig], tasks: dict[str, Any]
) -> ConnectorRuntime:
    return ConnectorRuntime(
        bus=bus,
        connectors=configs,
        checkpoints=FileCheckpointStore(tmp_path),
        factories={
            ("kindergarten", "source"): lambda c: tasks[c.name],
            ("kindergarten", "sink"): lambda c: tasks[c.name],
        },
        poll_timeout_s=0.05,
    )


def test_a_source_publishes_everything_once_and_resumes_from_its_checkpoint(
    bus: InMemoryBus, tmp_path: Path
) -> None:
    source = ScriptedSource(total=30)
    runtime = _runtime(bus, tmp_path, [_config("inn", "source")], {"inn": source})
    runtime.start()
    try:
        _wait(lambda: runtime.status("inn").records_out == 30)
    finally:
        runtime.stop()
    messages = _inbound(bus)
    assert len(messages) == 30
    envelope = messages[0].envelope()
    assert envelope.sender == ORG
    assert envelope.subject_key == "15832151200"
    assert messages[0].header("stafett-connector") == b"inn"
    assert runtime.offsets("inn") == {"checkpoint": {"after": 30}}
    assert source.closed
    # a restarted runtime starts at the checkpoint: nothing is read twice
    source.total = 33
    again = _runtime(bus, tmp_path, [_config("inn", "source")], {"inn": source})
    again.start()
    try:
        _wait(lambda: again.status("inn").records_out == 3)
    finally:
        again.stop()
    assert len(_inbound(bus)) == 33


def test_a_failing_vendor_api_is_retried_and_caught_up(bus: InMemoryBus, tmp_path: Path) -> None:
    source = ScriptedSource(total=20)
    source.failing = True
    runtime = _runtime(bus, tmp_path, [_config("inn", "source")], {"inn": source})
    runtime.start()
    try:
        _wait(lambda: runtime.status("inn").errors >= 3)
        status = runtime.status("inn")
        assert status.state is ConnectorState.RUNNING
        assert status.last_error is not None
        assert "500" in status.last_error
        assert status.records_out == 0
        source.failing = False
        _wait(lambda: runtime.status("inn").records_out == 20)
    finally:
        runtime.stop()
    assert len({m.envelope().event_id for m in _inbound(bus)}) == 20


def _deliver(bus: InMemoryBus, count: int) -> list[str]:
    ids = []
    for n in range(count):
        envelope = Envelope.new(
            event_type="delivery", subject_key=f"child-{n % 3}", payload={"n": n}
        )
        bus.publish(topics.outbound(ORG), envelope.subject_key, envelope.to_json())
        ids.append(envelope.event_id)
    return ids


def _dead_letters(bus: InMemoryBus) -> list[Message]:
    with bus.consumer([topics.DEAD_LETTER], f"dlq-{time.time_ns()}") as consumer:
        got: list[Message] = []
        while batch := consumer.poll(0.2):
            got.extend(batch)
        return got


def test_a_sink_retries_then_dead_letters_without_blocking(
    bus: InMemoryBus, tmp_path: Path
) -> None:
    refused_marker = 4
    sink = ScriptedSink(flaky=2, refuse=lambda e: (e.payload or {}).get("n") == refused_marker)
    runtime = _runtime(bus, tmp_path, [_config("ut", "sink")], {"ut": sink})
    bus.ensure_topics([topics.outbound(ORG)])
    ids = _deliver(bus, 10)
    bus.publish(topics.outbound(ORG), "child-x", b"not json")
    runtime.start()
    try:
        _wait(lambda: runtime.status("ut").dead_lettered == 2)
        _wait(lambda: len(sink.applied) == 9)
    finally:
        runtime.stop()
    expected = [i for n, i in enumerate(ids) if n != refused_marker]
    assert sorted(sink.applied) == sorted(expected)
    # in order per child (the key); there is no order across children
    for child in range(3):
        mine = [i for n, i in enumerate(ids) if n % 3 == child and n != refused_marker]
        assert [i for i in sink.applied if i in mine] == mine
    # two failed attempts each before success; the refused one is not retried
    assert {sink.attempts[i] for n, i in enumerate(ids) if n != refused_marker} == {3}
    assert sink.attempts[ids[refused_marker]] == 1
    letters = _dead_letters(bus)
    reasons = sorted(m.header("stafett-dlq-reason") or b"" for m in letters)
    assert reasons[0].startswith(b"not a Stafett envelope")
    assert b"refused by kindergarten" in reasons[1]
    status = runtime.status("ut")
    assert status.records_out == 9
    assert status.errors == 9 * 2 + 1


def test_a_sink_that_never_recovers_gives_up_per_message(bus: InMemoryBus, tmp_path: Path) -> None:
    sink = ScriptedSink(flaky=99)
    runtime = _runtime(bus, tmp_path, [_config("ut", "sink")], {"ut": sink})
    bus.ensure_topics([topics.outbound(ORG)])
    _deliver(bus, 2)
    runtime.start()
    try:
        _wait(lambda: runtime.status("ut").dead_lettered == 2)
    finally:
        runtime.stop()
    letters = _dead_letters(bus)
    assert all(
        b"gave up after 3 attempts" in (m.header("stafett-dlq-reason") or b"") for m in letters
    )


def test_pause_resume_restart_and_failed_connectors(bus: InMemoryBus, tmp_path: Path) -> None:
    source = ScriptedSource(total=5, page=1)
    built: list[int] = []

    def broken(_config: ConnectorConfig) -> Any:
        built.append(1)
        if len(built) == 1:
            raise ValueError("settings.base_url is missing")
        return ScriptedSource(total=1)

    runtime = ConnectorRuntime(
        bus=bus,
        connectors=[_config("inn", "source"), _config("brutt", "source", system="school")],
        checkpoints=FileCheckpointStore(tmp_path),
        factories={("kindergarten", "source"): lambda c: source, ("school", "source"): broken},
    )
    runtime.pause("inn")
    runtime.start()
    try:
        time.sleep(0.2)
        assert runtime.status("inn").state is ConnectorState.PAUSED
        assert runtime.status("inn").records_out == 0
        _wait(lambda: runtime.status("brutt").state is ConnectorState.FAILED)
        assert "base_url" in (runtime.status("brutt").last_error or "")
        runtime.restart("brutt")
        _wait(lambda: runtime.status("brutt").records_out == 1)
        assert runtime.status("brutt").state is ConnectorState.RUNNING
        runtime.resume("inn")
        _wait(lambda: runtime.status("inn").records_out == 5)
        with pytest.raises(ValueError, match="paused or stopped"):
            runtime.reset_offsets("inn")
    finally:
        runtime.stop()
    runtime.reset_offsets("inn")
    assert runtime.offsets("inn") == {"checkpoint": None}


def test_the_admin_api(bus: InMemoryBus, tmp_path: Path) -> None:
    source = ScriptedSource(total=3)
    runtime = _runtime(bus, tmp_path, [_config("inn", "source")], {"inn": source})
    runtime.start()
    try:
        with TestClient(admin_app(runtime, token="hemmelig")) as client:
            assert client.get("/admin/connectors").status_code == 401
            client.headers["Authorization"] = "Bearer hemmelig"
            assert client.get("/admin/connectors").json() == ["inn"]
            _wait(lambda: runtime.status("inn").records_out == 3)
            status = client.get("/admin/connectors/inn/status").json()
            assert status["state"] == "RUNNING"
            assert status["type"] == "source"
            assert status["records_out"] == 3
            assert client.get("/admin/connectors/nope/status").status_code == 404
            assert client.delete("/admin/connectors/inn/offsets").status_code == 409
            assert client.put("/admin/connectors/inn/pause").status_code == 202
            assert client.get("/admin/connectors/inn/status").json()["state"] == "PAUSED"
            assert client.get("/admin/connectors/inn/offsets").json() == {
                "checkpoint": {"after": 3}
            }
            assert client.delete("/admin/connectors/inn/offsets").status_code == 200
            assert client.put("/admin/connectors/inn/resume").status_code == 202
            assert client.post("/admin/connectors/inn/restart").status_code == 202
            metrics = client.get("/admin/metrics").text
            assert 'stafett_connector_records_out_total{connector="inn"' in metrics
    finally:
        runtime.stop()


def test_connectors_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "connectors.yaml"
    monkeypatch.setenv("BARNEHAGE_NOKKEL", "k-123")
    path.write_text(
        "connectors:\n"
        "  - name: barnehage-inn\n    kind: source\n    system: kindergarten\n"
        f"    organization: '{ORG}'\n    operator: '{OPERATOR}'\n"
        "    source_system: barnehagesystem\n"
        "    settings: {base_url: 'http://127.0.0.1:8101', api_key: '${BARNEHAGE_NOKKEL}'}\n"
    )
    loaded = load_config(path)
    assert loaded.connectors[0].settings["api_key"] == "k-123"
    path.write_text(path.read_text().replace(ORG, "912837468"))
    with pytest.raises(ValueError, match=r"connectors\.0\.organization"):
        load_config(path)
    monkeypatch.delenv("BARNEHAGE_NOKKEL")
    path.write_text(path.read_text().replace("912837468", ORG))
    with pytest.raises(ValueError, match="BARNEHAGE_NOKKEL is not set"):
        load_config(path)
    with pytest.raises(ValueError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_an_unknown_system_is_refused_at_start(bus: InMemoryBus, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no source connector for kindergarten"):
        ConnectorRuntime(
            bus=bus,
            connectors=[_config("inn", "source")],
            checkpoints=FileCheckpointStore(tmp_path),
            factories={},
        )


def test_records_are_published_before_the_checkpoint_moves(
    bus: InMemoryBus, tmp_path: Path
) -> None:
    class DownBus(InMemoryBus):
        def publish_many(self, records: Any) -> None:
            raise ConnectionError("broker down")

    down = DownBus()
    source = ScriptedSource(total=5)
    runtime = _runtime(down, tmp_path, [_config("inn", "source")], {"inn": source})
    runtime.start()
    try:
        _wait(lambda: runtime.status("inn").errors >= 2)
    finally:
        runtime.stop()
    assert runtime.offsets("inn") == {"checkpoint": None}
    assert runtime.status("inn").records_out == 0
    _ = Record  # (re-exported type used by the runtime)
