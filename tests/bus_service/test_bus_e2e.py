"""End to end: REST writes and inbound messages through the outbox, router and ingest.

PostgreSQL runs with the Kafka transport on a real broker (Tansu, or STAFETT_TEST_KAFKA_BOOTSTRAP);
SQLite with the in-process bus of the embedded default. The same assertions hold for both.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from bus import Bus, Envelope, EventType, InMemoryBus, Message, Record, topics
from service.bus_cli import replay_dead_letters
from service.cli import main
from service.worker import DLQ_REASON, Worker
from tests.consent_api.world import (
    ORGS,
    Child,
    consent_resource,
    open_log,
    permit,
)
from tests.support import (
    ORGNR_SYSTEM,
    LiveServer,
    fhir_headers,
    free_port,
    live_server,
    synthetic_fnr,
)

pytestmark = pytest.mark.kafka


@dataclass
class Inbox:
    """A consumer that keeps reading some topics in the background; tests wait on it."""

    bus: Bus
    subscribe: list[str]
    messages: list[Message] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with self.bus.consumer(self.subscribe, f"test-inbox-{uuid.uuid4().hex[:8]}") as consumer:
            while not self._stop.is_set():
                got = consumer.poll(0.2)
                with self._lock:
                    self.messages.extend(got)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def on(self, topic: str, child: str | None = None) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic and child in (None, m.key)]

    def envelopes(self, topic: str, child: str | None = None) -> list[Envelope]:
        """Return the envelopes of a topic once each, as a consumer must (by event id)."""
        seen: set[str] = set()
        unique = []
        for message in self.on(topic, child):
            envelope = message.envelope()
            if envelope.event_id not in seen:
                seen.add(envelope.event_id)
                unique.append(envelope)
        return unique

    def wait_for(self, check: Callable[[], bool], timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for messages")


@dataclass
class Stack:
    server: LiveServer
    worker: Worker
    bus: Bus
    inbox: Inbox
    org_ids: dict[str, str]
    child: Child

    def client(self, org: str) -> Any:
        return self.server.client(self.server.system_token(org=ORGS[org]))

    def mother(self) -> Any:
        return self.server.client(
            self.server.issuer.issue_citizen(
                pid=self.child.guardians["mother"], audience=self.server.settings.audience
            )
        )

    def wait_routed(self, at_least: int, timeout: float = 30.0) -> None:
        self.inbox.wait_for(lambda: self.worker.counters.routed >= at_least, timeout)


def _bus(database_url: str, request: pytest.FixtureRequest) -> Bus:
    if database_url.startswith("sqlite"):
        return InMemoryBus()
    from bus.kafka import KafkaBus  # noqa: PLC0415 - kafka-python only where used

    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    return KafkaBus(
        bootstrap,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        max_poll_interval_ms=20000,
        fetch_max_wait_ms=20,
    )


@pytest.fixture(scope="module")
def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with live_server(database_url=database_url, data_dir=tmp_path_factory.mktemp("data")) as server:
        bus = _bus(database_url, request)
        # every topic exists before anyone subscribes, so no consumer waits for metadata
        bus.ensure_topics(
            [*topics.ALL_FIXED, *(topics.outbound(number) for number in ORGS.values())]
        )
        settings = server.settings.model_copy(update={"subscribers": [ORGS["school"], ORGS["nav"]]})
        worker = Worker(settings, bus=bus, components=("relay", "router", "ingest"))
        inbox = Inbox(bus, [*(topics.outbound(n) for n in ORGS.values()), topics.DEAD_LETTER])
        inbox.start()
        worker.start()
        try:
            yield _world(server, worker, bus, inbox)
        finally:
            inbox.stop()
            worker.stop()


def _world(server: LiveServer, worker: Worker, bus: Bus, inbox: Inbox) -> Stack:
    kindergarten = server.client(server.system_token(org=ORGS["kindergarten"]))
    org_ids: dict[str, str] = {}
    for name, number in ORGS.items():
        response = kindergarten.post(
            "/Organization",
            json={
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": number}],
                "name": name,
            },
            headers=fhir_headers(),
        )
        assert response.status_code == 201, response.text
        org_ids[name] = response.json()["id"]
    child = Child("Ola", synthetic_fnr())
    # the kindergarten opens the log with the family's consent naming itself only; the
    # health station owns the first Task (a participant the family did not permit)
    opened = open_log(
        kindergarten,
        child,
        birth_date="2021-03-01",
        consent_provision=permit(org_ids, "kindergarten"),
        owner=org_ids["health"],
    )
    assert opened.status_code == 200, opened.text
    stack = Stack(server, worker, bus, inbox, org_ids, child)
    # the family lets the school read the log (signed by logging in)
    granted = stack.mother().post(
        "/Consent",
        json=consent_resource(
            patient=f"Patient/{child.patient}",
            performer=child.ids["mother"],
            provision=permit(org_ids, "school", actions=("access",)),
            signed=False,
        ),
        headers=fhir_headers(),
    )
    assert granted.status_code == 201, granted.text
    child.ids["school-consent"] = f"Consent/{granted.json()['id']}"
    return stack


def _task(stack: Stack, text: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "plan",
        "for": {"reference": f"Patient/{stack.child.patient}"},
        "owner": {"reference": f"Organization/{stack.org_ids['health']}"},
        "description": text,
    }


def _delivered(stack: Stack, org: str) -> list[tuple[str | None, str | None, str | None]]:
    return [
        (e.resource_type, e.resource_id, e.version_id)
        for e in stack.inbox.envelopes(topics.outbound(ORGS[org]), stack.child.patient)
        if e.event_type in (EventType.DELIVERY, EventType.RESOURCE_DELETED)
    ]


def test_writes_reach_exactly_the_permitted_organisations_in_order(stack: Stack) -> None:
    kindergarten = stack.client("kindergarten")
    expected: list[tuple[str | None, str | None, str | None]] = []
    for n in range(5):
        response = kindergarten.post(
            "/Task", json=_task(stack, f"Tiltak {n}"), headers=fhir_headers()
        )
        assert response.status_code == 201, response.text
        expected.append(("Task", response.json()["id"], "1"))
    first = kindergarten.get(f"/Task/{expected[0][1]}").json()
    for version in (2, 3):
        first["description"] = f"Tiltak 0, versjon {version}"
        response = kindergarten.put(f"/Task/{first['id']}", json=first, headers=fhir_headers())
        assert response.status_code == 200, response.text
        first = response.json()
        expected.append(("Task", first["id"], str(version)))
    deleted = kindergarten.delete(f"/Task/{expected[4][1]}")
    assert deleted.status_code in (200, 204), deleted.text
    expected.append(("Task", expected[4][1], "2"))

    mine = {resource_id for _, resource_id, _ in expected}
    stack.inbox.wait_for(
        lambda: [d for d in _delivered(stack, "school") if d[1] in mine] == expected
    )
    # in order, each once; the deletion carries no content
    school = [
        e
        for e in stack.inbox.envelopes(topics.outbound(ORGS["school"]), stack.child.patient)
        if e.resource_id in mine
    ]
    assert [e.event_type for e in school][-1] == EventType.RESOURCE_DELETED
    assert school[-1].payload is None
    assert school[0].payload is not None
    assert school[0].payload["description"] == "Tiltak 0"
    # the health station owns the Tasks but the family did not permit it; NAV subscribes but
    # is not permitted either; the kindergarten does not get its own writes back
    for org in ("health", "nav", "kindergarten"):
        assert not [d for d in _delivered(stack, org) if d[1] in mine], org
    # every refused delivery is audited for the data protection officer
    dpo = stack.server.client(
        stack.server.issuer.issue_practitioner(
            hpr=None,
            pid="01817010055",
            organization="936451284",
            scopes="user/*.rs",
            roles=("dpo",),
            audience=stack.server.settings.audience,
        )
    )
    audit = dpo.get(
        "/AuditEvent",
        params={"entity": f"Task/{expected[1][1]}", "outcome": "8", "_count": "50"},
    ).json()
    refused_to = {
        ident["identifier"]["value"]
        for entry in audit.get("entry", [])
        for ident in (a.get("who", {}) for a in entry["resource"]["agent"])
        if ident.get("identifier", {}).get("system") == ORGNR_SYSTEM
    }
    assert {ORGS["health"], ORGS["nav"]} <= refused_to


def test_withdrawal_sends_a_revocation_and_stops_deliveries(stack: Stack) -> None:
    kindergarten = stack.client("kindergarten")
    before = kindergarten.post("/Task", json=_task(stack, "Før"), headers=fhir_headers())
    assert before.status_code == 201
    stack.inbox.wait_for(
        lambda: any(d[1] == before.json()["id"] for d in _delivered(stack, "school"))
    )
    mother = stack.mother()
    consent = mother.get(f"/{stack.child.ids['school-consent']}").json()
    withdrawn = mother.put(
        f"/{stack.child.ids['school-consent']}",
        json={**consent, "status": "inactive"},
        headers=fhir_headers(),
    )
    assert withdrawn.status_code == 200, withdrawn.text
    school_topic = topics.outbound(ORGS["school"])
    stack.inbox.wait_for(
        lambda: any(
            e.event_type == EventType.CONSENT_REVOKED
            for e in stack.inbox.envelopes(school_topic, stack.child.patient)
        )
    )
    routed = stack.worker.counters.routed
    after = kindergarten.post("/Task", json=_task(stack, "Etter"), headers=fhir_headers())
    assert after.status_code == 201
    stack.wait_routed(routed + 1)
    time.sleep(0.3)  # the router publishes before it counts; give the broker a moment
    assert not any(d[1] == after.json()["id"] for d in _delivered(stack, "school"))
    revocations = [
        e
        for e in stack.inbox.envelopes(school_topic, stack.child.patient)
        if e.event_type == EventType.CONSENT_REVOKED
    ]
    assert len(revocations) == 1
    assert revocations[0].payload is not None
    assert revocations[0].payload["reason"]  # the decision point's words, for the vendor's log
    # the school was told once, when the family let it in, that it may fetch the log
    grants = [
        e
        for e in stack.inbox.envelopes(school_topic, stack.child.patient)
        if e.event_type == EventType.CONSENT_GRANTED
    ]
    assert len(grants) == 1
    assert grants[0].payload is not None
    assert grants[0].payload["consent"] == stack.child.ids["school-consent"].split("/")[1]
    # and the school's REST view agrees: the log is closed to it
    school = stack.client("school")
    assert school.get(f"/Task/{after.json()['id']}").status_code == 404


def _inbound(stack: Stack, sender: str, payload: Any, event_id: str | None = None) -> Envelope:
    envelope = Envelope.new(
        event_type="resource.submitted",
        subject_key=stack.child.patient,
        sender=ORGS[sender],
        payload=payload,
        event_id=event_id,
    )
    stack.bus.publish_many([Record.of(topics.INBOUND, envelope)])
    return envelope


def _count_tasks(stack: Stack, text: str) -> int:
    client = stack.client("kindergarten")
    bundle = client.get("/Task", params={"patient": stack.child.patient, "_count": "200"}).json()
    return sum(1 for e in bundle.get("entry", []) if e["resource"].get("description") == text)


def test_an_inbound_message_is_applied_once_through_the_rest_write_path(stack: Stack) -> None:
    text = f"Fra fagsystemet {uuid.uuid4().hex[:6]}"
    envelope = _inbound(stack, "kindergarten", _task(stack, text))
    applied = stack.worker.counters.applied
    stack.inbox.wait_for(lambda: stack.worker.counters.applied > applied)
    # the same message again (a connector retry, a redelivery) is recognised
    duplicates = stack.worker.counters.duplicates
    _inbound(stack, "kindergarten", _task(stack, text), event_id=envelope.event_id)
    stack.inbox.wait_for(lambda: stack.worker.counters.duplicates > duplicates)
    assert _count_tasks(stack, text) == 1


def test_invalid_and_poison_messages_go_to_the_dead_letter_topic_without_blocking(
    stack: Stack,
) -> None:
    dlq_before = len(stack.inbox.on(topics.DEAD_LETTER))
    stack.bus.publish_many([Record(topics.INBOUND, stack.child.patient, b"\x00not json")])
    bad = _inbound(stack, "kindergarten", {**_task(stack, "ugyldig"), "status": "dragon"})
    refused = _inbound(stack, "nav", _task(stack, "NAV har ikke samtykke"))
    text = f"Gyldig etter giftpille {uuid.uuid4().hex[:6]}"
    _inbound(stack, "kindergarten", _task(stack, text))
    stack.inbox.wait_for(lambda: len(stack.inbox.on(topics.DEAD_LETTER)) >= dlq_before + 3)
    stack.inbox.wait_for(lambda: _count_tasks(stack, text) == 1)
    letters = stack.inbox.on(topics.DEAD_LETTER)[dlq_before:]
    reasons = {m.value[:40]: m.header(DLQ_REASON) or b"" for m in letters}
    by_event = {}
    for message in letters:
        try:
            by_event[message.envelope().event_id] = orjson.loads(message.header(DLQ_REASON) or b"")
        except Exception:
            by_event["poison"] = (message.header(DLQ_REASON) or b"").decode()
    assert "poison" in by_event, reasons
    invalid = by_event[bad.event_id]
    assert invalid["resourceType"] == "OperationOutcome"
    assert any("status" in str(issue) for issue in invalid["issue"])
    forbidden = by_event[refused.event_id]
    assert forbidden["issue"][0]["code"] == "forbidden"
    assert _count_tasks(stack, "ugyldig") == 0


def test_a_refused_message_is_replayed_from_the_dead_letter_topic_after_a_fix(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    text = f"Fra helsestasjonen {uuid.uuid4().hex[:6]}"
    refused = _inbound(stack, "health", _task(stack, text))
    stack.inbox.wait_for(
        lambda: any(
            m.value.find(refused.event_id.encode()) >= 0 for m in stack.inbox.on(topics.DEAD_LETTER)
        )
    )
    assert _count_tasks(stack, text) == 0
    # the fix: the family lets the health station write in the log
    granted = stack.mother().post(
        "/Consent",
        json=consent_resource(
            patient=f"Patient/{stack.child.patient}",
            performer=stack.child.ids["mother"],
            provision=permit(stack.org_ids, "health", actions=("access", "collect")),
            signed=False,
        ),
        headers=fhir_headers(),
    )
    assert granted.status_code == 201, granted.text
    if isinstance(stack.bus, InMemoryBus):
        replayed = replay_dead_letters(stack.bus, event_ids=frozenset({refused.event_id}))
        assert replayed == 1
    else:
        # the operator's command, against the same broker
        from bus.kafka import KafkaBus  # noqa: PLC0415

        assert isinstance(stack.bus, KafkaBus)
        monkeypatch.setenv("STAFETT_KAFKA_BOOTSTRAP", stack.bus.bootstrap)
        monkeypatch.setenv("STAFETT_CONSUMER_SESSION_TIMEOUT_MS", "6000")
        code = main(["bus", "replay", "--from-dlq", "--event-id", refused.event_id])
        assert code == 0
        out = capsys.readouterr().out
        assert f"replay {refused.event_id} -> {topics.INBOUND}" in out
        assert "replayed 1 message(s)" in out
    stack.inbox.wait_for(lambda: _count_tasks(stack, text) == 1)


def test_the_worker_exposes_its_metrics(stack: Stack) -> None:
    port = free_port()
    stack.worker.serve_metrics("127.0.0.1", port)
    deadline = time.monotonic() + 10
    while True:
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert 'stafett_worker_events_total{event="delivered"}' in text
    assert 'stafett_worker_events_total{event="published"}' in text
    assert "stafett_outbox_backlog " in text
    assert 'stafett_consumer_lag_seconds{loop="router"}' in text
