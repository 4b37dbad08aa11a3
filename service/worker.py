"""`stafett worker`: the outbox relay, consent router, ingest, scheduler and audit sealer.

Run as many workers as you like: the relay publishes from one of them at a time (the others
wait as standbys), and the router and ingest share their topics' partitions as Kafka consumer
groups; the audit sealer, like the relay, works in one worker at a time. Every loop commits
its input only after its effect is durable and retries after failures, so a crash or a broker
or database outage loses nothing (see docs/BUS.md).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

from bus import (
    Bus,
    BusError,
    Consumer,
    Envelope,
    EnvelopeError,
    Message,
    Record,
    open_bus,
    topics,
)
from bus.memory import InMemoryBus
from service.api.app import build_services
from service.api.deps import Services
from service.audit.chain import AuditSealer, sealer_from_settings
from service.config import Settings
from service.crypto import verify_keys
from service.delivery import ConsentRouter
from service.errors import ServiceUnavailable
from service.ingest import Ingestor, IngestOutcome, IngestResult
from service.metrics import CONSUMER_LAG, WORKER_EVENTS, WORKER_SECONDS
from service.metrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from service.metrics import render as render_metrics
from service.outbox import OutboxRelay, backlog
from service.storage.migrations import upgrade_database
from service.tracing import configure as configure_tracing

__all__ = [
    "INGEST_GROUP",
    "ROUTER_GROUP",
    "Worker",
    "WorkerCounters",
    "dead_letter",
    "open_configured_bus",
]

_log = logging.getLogger("stafett.worker")
ROUTER_GROUP = "stafett-router"
INGEST_GROUP = "stafett-ingest"
DLQ_REASON = "stafett-dlq-reason"
DLQ_SOURCE = "stafett-dlq-source"


@dataclass
class WorkerCounters:
    """What the worker's loops have done since start (for tests, metrics and the CLI)."""

    routed: int = 0
    delivered: int = 0
    refused: int = 0
    revoked: int = 0
    granted: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    failures: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        """Add to several counters at once."""
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)
        for name, value in counts.items():
            if value:
                WORKER_EVENTS.labels(name).inc(value)


def open_configured_bus(settings: Settings) -> Bus:
    """Return the Kafka bus when STAFETT_KAFKA_BOOTSTRAP is set, else the in-process bus."""
    if not settings.kafka_bootstrap:
        return InMemoryBus()
    return open_bus(
        "kafka://" + settings.kafka_bootstrap,
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
        session_timeout_ms=settings.consumer_session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.consumer_session_timeout_ms // 3),
        max_poll_interval_ms=settings.consumer_max_poll_interval_ms,
        client_config=settings.kafka_client_config,
    )


def dead_letter(message: Message, outcome: dict[str, object] | None, reason: str) -> Record:
    """Return the dead-letter record of a message: its bytes unchanged, the reason in headers."""
    why = orjson.dumps(outcome) if outcome is not None else reason.encode()
    source = f"{message.topic}/{message.partition}/{message.offset}".encode()
    return Record(
        topics.DEAD_LETTER,
        message.key or "",
        message.value,
        (*message.headers, (DLQ_REASON, why), (DLQ_SOURCE, source)),
    )


class Worker:
    """Owns the bus and the loops; `start` runs them in threads, `stop` ends them cleanly."""

    def __init__(
        self,
        settings: Settings,
        *,
        bus: Bus | None = None,
        services: Services | None = None,
        components: Sequence[str] = (
            "relay",
            "router",
            "ingest",
            "scheduler",
            "sealer",
            "lifecycle",
        ),
        poll_timeout_s: float = 0.5,
    ) -> None:
        self.settings = settings
        configure_tracing(settings, service_name="stafett-worker")  # STAFETT_OTEL_ENDPOINT
        self.services = services or build_services(settings)
        self.bus = bus or open_configured_bus(settings)
        self.components = tuple(components)
        self.counters = WorkerCounters()
        self._poll_s = poll_timeout_s
        self._batch = 100
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        repo = self.services.repository
        self.relay = OutboxRelay(
            database=repo.database,
            bus=self.bus,
            batch_size=settings.relay_batch_size,
            poll_interval_s=settings.relay_poll_ms / 1000,
            envelope=repo.store.sealer.envelope,
        )
        self.router = ConsentRouter(
            database=repo.database,
            policy=settings.consent_policy(),
            base_url=settings.fhir_base,
            audit=repo.audit,
            subscribers=settings.subscribers,
        )
        self.ingestor = Ingestor(
            config=repo, scopes=settings.ingest_scopes, fhir_base=settings.fhir_base
        )
        self._outbound_ready: set[str] = set()
        self._metrics_server: uvicorn.Server | None = None
        self.sealer: AuditSealer | None = None  # built by start() when "sealer" runs

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Migrate like the API does, create the fixed topics, start one thread per component."""
        if self.services.database.is_sqlite or self.settings.auto_migrate:
            upgrade_database(self.services.database.engine)
        verify_keys(self.services.database, self.services.repository.store.sealer.envelope)
        self.bus.ensure_topics(list(topics.ALL_FIXED))
        if "sealer" in self.components:
            # built before any thread starts: a missing signing key stops the worker at once
            self.sealer = sealer_from_settings(self.settings, self.services.database)
        loops: dict[str, Callable[[], None]] = {
            "relay": lambda: self.relay.run(self._stop),
            "router": lambda: self._consume([topics.CHANGES], ROUTER_GROUP, self._route),
            "ingest": lambda: self._consume([topics.INBOUND], INGEST_GROUP, self._ingest),
            "scheduler": self._schedule,
            "sealer": self._seal,
            "lifecycle": self._lifecycle,
        }
        for name in self.components:
            thread = threading.Thread(target=loops[name], name=f"stafett-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the loops (each finishes its batch), then close the bus and the database."""
        self._stop.set()
        if self._metrics_server is not None:
            self._metrics_server.should_exit = True
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.bus.close()
        audit = self.services.repository.audit
        if audit is not None:
            audit.close()
        self.services.database.dispose()

    def serve_metrics(self, host: str, port: int) -> None:
        """Serve Prometheus metrics (worker counters, outbox backlog, lag) on host:port."""
        database = self.services.database

        def backlog_now() -> int:
            with database.read() as conn:
                return backlog(conn)

        app = Starlette(
            routes=[
                Route(
                    "/metrics",
                    lambda _request: Response(
                        render_metrics(backlog_now), media_type=METRICS_CONTENT_TYPE
                    ),
                )
            ]
        )
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        self._metrics_server = uvicorn.Server(config)
        thread = threading.Thread(target=self._metrics_server.run, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wait(self) -> None:
        """Block until stop() is called (the CLI calls stop from a signal handler)."""
        while not self._stop.wait(1.0):
            pass

    # -- the consumer loop ------------------------------------------------------------------
    def _consume(
        self, subscribe: list[str], group: str, handle: Callable[[list[Message]], None]
    ) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                with self.bus.consumer(subscribe, group) as consumer:
                    while not self._stop.is_set():
                        # small batches: a batch's deliveries are published when it is done
                        messages = consumer.poll(self._poll_s, max_records=self._batch)
                        if not messages:
                            continue
                        with WORKER_SECONDS.labels(group.removeprefix("stafett-")).time():
                            handle(messages)
                        self._commit(consumer, messages)
                        backoff = 0.0
            except (BusError, ServiceUnavailable) as exc:
                # Uncommitted messages come again to a new consumer of the group.
                backoff = min(5.0, max(0.1, backoff * 2))
                self.counters.add(failures=1)
                _log.warning("%s paused %.1f s: %s", group, backoff, exc)
                self._stop.wait(backoff)
            except Exception:
                backoff = min(5.0, max(0.1, backoff * 2))
                self.counters.add(failures=1)
                _log.exception("%s failed; restarting in %.1f s", group, backoff)
                self._stop.wait(backoff)

    def _commit(self, consumer: Consumer, messages: list[Message]) -> None:
        consumer.commit(messages)

    # -- router -----------------------------------------------------------------------------
    def _route(self, messages: list[Message]) -> None:
        envelopes = []
        poison: list[Record] = []
        for message in messages:
            try:
                envelopes.append(message.envelope())
            except EnvelopeError as exc:
                poison.append(dead_letter(message, None, f"not a Stafett envelope: {exc}"))
        result = self.router.route(envelopes)
        if envelopes:
            CONSUMER_LAG.labels("router").set(_age(envelopes[-1]))
        self._ensure_outbound(result.records)
        self.bus.publish_many([*result.records, *poison])
        self.router.commit_states()
        self.counters.add(
            routed=len(envelopes),
            delivered=result.delivered,
            refused=result.refused,
            revoked=result.revoked,
            granted=result.granted,
            dead_lettered=len(poison),
        )

    def _ensure_outbound(self, records: list[Record]) -> None:
        # brokers with auto-creation off (the usual production setting) need the topic first
        missing = {r.topic for r in records} - self._outbound_ready
        if missing:
            self.bus.ensure_topics(sorted(missing))
            self._outbound_ready |= missing

    # -- ingest -----------------------------------------------------------------------------
    def _ingest(self, messages: list[Message]) -> None:
        dead: list[Record] = []
        with contextlib.suppress(EnvelopeError):
            CONSUMER_LAG.labels("ingest").set(_age(messages[-1].envelope()))
        results = self._apply_until_done(messages)
        if results is None:
            raise ServiceUnavailable("stopping with messages not applied; they come again")
        for message, result in zip(messages, results, strict=True):
            if result.outcome is IngestOutcome.APPLIED:
                self.counters.add(applied=1)
            elif result.outcome is IngestOutcome.DUPLICATE:
                self.counters.add(duplicates=1)
            else:
                dead.append(dead_letter(message, result.operation_outcome, "rejected"))
        if dead:
            self.bus.publish_many(dead)
            self.counters.add(dead_lettered=len(dead))

    def _apply_until_done(self, messages: list[Message]) -> list[IngestResult] | None:
        backoff = 0.1
        while not self._stop.is_set():
            try:
                # one transaction for the batch when every message applies
                return self.ingestor.apply_many(messages)
            except ServiceUnavailable as exc:
                # the database is down: these messages wait (and their partitions with them)
                self.counters.add(failures=1)
                _log.warning("ingest waits %.1f s for the database: %s", backoff, exc)
                self._stop.wait(backoff)
                backoff = min(5.0, backoff * 2)
        return None

    # -- audit sealer -------------------------------------------------------------------------
    def _seal(self) -> None:
        if self.sealer is not None:
            self.sealer.run(self._stop, self.settings.audit_seal_interval_s)

    # -- scheduler --------------------------------------------------------------------------
    def _schedule(self) -> None:
        from service.scheduler import TimeEventScheduler  # noqa: PLC0415

        scheduler = TimeEventScheduler(
            database=self.services.database,
            base_url=self.settings.fhir_base,
            notice_days=self.settings.consent_expiry_notice_days,
            policy=self.settings.consent_policy(),
        )
        scheduler.run(self._stop, self.settings.scheduler_interval_s)

    # -- lifecycle --------------------------------------------------------------------------
    def _lifecycle(self) -> None:
        from service.lifecycle.worker import run_purges  # noqa: PLC0415

        run_purges(self.settings, self.services.repository, self._stop)


def _age(envelope: Envelope) -> float:
    return max(0.0, (datetime.now(UTC) - envelope.occurred_at).total_seconds())
