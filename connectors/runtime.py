"""The connector runtime: one thread per connector, with retries, dead letters and control.

Source connectors: poll → publish to stafett.inbound (acknowledged) → store the checkpoint.
A crash between publishing and checkpointing re-reads the same records; their event ids are
derived from the vendor record and version, so Stafett applies them once.

Sink connectors: consume `stafett.out.<orgnr>` → push each message to the vendor system with
exponential backoff, up to `retry.max_attempts`; then (or at once for a PermanentError) the
message goes to the dead-letter topic with the reason, and the partition moves on. Offsets
are committed only after every message of a batch was applied or dead-lettered.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, cast

import orjson

from bus import Bus, BusError, Envelope, EnvelopeError, Message, Record, topics
from connectors.base import PermanentError, SinkTask, SourceTask
from connectors.checkpoints import CheckpointStore
from connectors.config import ConnectorConfig

__all__ = ["ConnectorRuntime", "ConnectorState", "ConnectorStatus", "TaskFactory"]

_log = logging.getLogger("stafett.connectors")
DLQ_REASON = "stafett-dlq-reason"
DLQ_SOURCE = "stafett-dlq-source"

TaskFactory = Callable[[ConnectorConfig], SourceTask | SinkTask]


class ConnectorState(StrEnum):
    """Where a connector is (Kafka Connect's words)."""

    UNASSIGNED = "UNASSIGNED"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    """A connector's state and counters (also its metrics)."""

    name: str
    kind: str
    system: str
    state: ConnectorState
    records_in: int = 0  # read from the vendor system (source) or the topic (sink)
    records_out: int = 0  # published to Stafett (source) or applied in the vendor system (sink)
    errors: int = 0  # failed attempts, each retried or dead-lettered
    dead_lettered: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    lag_s: float | None = None  # age of the newest record handled (sink), since last poll (source)


class _Worker:
    """The thread and mutable state of one connector."""

    def __init__(self, config: ConnectorConfig) -> None:
        self.config = config
        self.status = ConnectorStatus(
            config.name, config.kind, config.system, ConnectorState.UNASSIGNED
        )
        self.stop = threading.Event()
        self.paused = threading.Event()
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def update(self, **changes: Any) -> None:
        with self.lock:
            self.status = replace(self.status, **changes)

    def count(self, **deltas: int) -> None:
        with self.lock:
            self.status = replace(
                self.status, **{k: getattr(self.status, k) + v for k, v in deltas.items()}
            )

    def failed(self, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        with self.lock:
            self.status = replace(
                self.status,
                errors=self.status.errors + 1,
                last_error=text[:2000],
                last_error_at=time.time(),
            )


class ConnectorRuntime:
    """Runs the configured connectors; the admin API and the CLI drive it."""

    def __init__(
        self,
        *,
        bus: Bus,
        connectors: list[ConnectorConfig],
        checkpoints: CheckpointStore,
        factories: Mapping[tuple[str, str], TaskFactory],
        poll_timeout_s: float = 0.5,
    ) -> None:
        self._bus = bus
        self._checkpoints = checkpoints
        self._factories = factories
        self._poll_s = poll_timeout_s
        self._workers = {c.name: _Worker(c) for c in connectors}
        for config in connectors:
            if (config.system, config.kind) not in factories:
                raise ValueError(
                    f"connector {config.name}: no {config.kind} connector for {config.system}"
                )

    # -- control ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every connector."""
        self._bus.ensure_topics([topics.INBOUND, topics.DEAD_LETTER])
        for worker in self._workers.values():
            self._start(worker)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop every connector (each finishes the record in hand)."""
        for worker in self._workers.values():
            worker.stop.set()
        deadline = time.monotonic() + timeout_s
        for worker in self._workers.values():
            if worker.thread is not None:
                worker.thread.join(max(0.0, deadline - time.monotonic()))
            worker.update(state=ConnectorState.STOPPED)

    def names(self) -> list[str]:
        """Return the connectors' names."""
        return sorted(self._workers)

    def config(self, name: str) -> ConnectorConfig:
        """Return a connector's configuration."""
        return self._worker(name).config

    def status(self, name: str) -> ConnectorStatus:
        """Return a connector's status and counters."""
        worker = self._worker(name)
        with worker.lock:
            return worker.status

    def pause(self, name: str) -> None:
        """Stop taking new records until resumed (the record in hand is finished)."""
        worker = self._worker(name)
        worker.paused.set()
        worker.update(state=ConnectorState.PAUSED)

    def resume(self, name: str) -> None:
        """Continue after pause."""
        worker = self._worker(name)
        worker.paused.clear()
        if worker.status.state is ConnectorState.PAUSED:
            worker.update(state=ConnectorState.RUNNING)

    def restart(self, name: str, timeout_s: float = 30.0) -> None:
        """Stop the connector and start it again with a fresh task (e.g. after FAILED)."""
        worker = self._worker(name)
        worker.stop.set()
        if worker.thread is not None:
            worker.thread.join(timeout_s)
        fresh = _Worker(worker.config)
        fresh.status = replace(worker.status, state=ConnectorState.UNASSIGNED)
        self._workers[name] = fresh
        self._start(fresh)

    def offsets(self, name: str) -> dict[str, Any]:
        """Return where the connector stands: the source checkpoint or the sink's group."""
        worker = self._worker(name)
        if worker.config.kind == "source":
            return {"checkpoint": self._checkpoints.load(name)}
        return {
            "group": _group(worker.config),
            "topic": topics.outbound(worker.config.organization),
        }

    def reset_offsets(self, name: str) -> None:
        """Forget a stopped or paused source connector's checkpoint (re-read from the start)."""
        worker = self._worker(name)
        if worker.config.kind != "source":
            raise ValueError(f"{name} is a sink: reset its consumer group with Kafka's tools")
        if worker.status.state not in (ConnectorState.PAUSED, ConnectorState.STOPPED):
            raise ValueError(f"{name} must be paused or stopped before its offsets are reset")
        self._checkpoints.delete(name)

    def _worker(self, name: str) -> _Worker:
        try:
            return self._workers[name]
        except KeyError:
            raise KeyError(f"no connector named {name!r}") from None

    def _start(self, worker: _Worker) -> None:
        target = self._run_source if worker.config.kind == "source" else self._run_sink
        worker.thread = threading.Thread(
            target=self._guard, args=(worker, target), name=f"connector-{worker.config.name}"
        )
        worker.thread.daemon = True
        worker.update(
            state=ConnectorState.PAUSED if worker.paused.is_set() else ConnectorState.RUNNING
        )
        worker.thread.start()

    def _guard(self, worker: _Worker, target: Callable[[_Worker], None]) -> None:
        try:
            target(worker)
        except Exception as exc:
            # a task that cannot even be built (bad settings): FAILED until restarted
            _log.exception("connector %s failed", worker.config.name)
            worker.failed(exc)
            worker.update(
                state=ConnectorState.FAILED,
                last_error="".join(traceback.format_exception_only(exc)).strip(),
            )

    # -- sources ------------------------------------------------------------------------------
    def _run_source(self, worker: _Worker) -> None:
        config = worker.config
        task = cast("SourceTask", self._factories[(config.system, config.kind)](config))
        backoff = config.retry.backoff_s
        try:
            while not worker.stop.is_set():
                if worker.paused.is_set():
                    worker.stop.wait(0.2)
                    continue
                try:
                    more = self._source_once(worker, task)
                    backoff = config.retry.backoff_s
                except Exception as exc:
                    # the vendor system or the broker is down: wait and try again, for ever;
                    # the checkpoint has not moved, so nothing is skipped
                    worker.failed(exc)
                    _log.warning("connector %s: %s; retry in %.1f s", config.name, exc, backoff)
                    worker.stop.wait(backoff)
                    backoff = min(config.retry.max_backoff_s, backoff * 2)
                    continue
                if not more:
                    worker.stop.wait(config.poll_interval_s)
        finally:
            task.close()

    def _source_once(self, worker: _Worker, task: SourceTask) -> bool:
        config = worker.config
        batch = task.poll(self._checkpoints.load(config.name))
        worker.count(records_in=len(batch.records) + len(batch.dead))
        if batch.dead:
            # unmappable vendor records: dead-lettered with the reason, then passed over
            self._bus.publish_many(
                [
                    Record(
                        topics.DEAD_LETTER,
                        dead.subject,
                        orjson.dumps({"record_id": dead.record_id, "record": dict(dead.raw)}),
                        (
                            (DLQ_REASON, dead.reason.encode()),
                            (DLQ_SOURCE, f"{config.name}/{dead.record_id}".encode()),
                        ),
                    )
                    for dead in batch.dead
                ]
            )
            worker.count(dead_lettered=len(batch.dead))
            worker.failed(
                f"{len(batch.dead)} record(s) could not be mapped: {batch.dead[0].reason}"
            )
        if batch.records:
            records = [
                Record.of(
                    topics.INBOUND,
                    Envelope.new(
                        event_id=record.event_id,
                        event_type="resource.submitted",
                        subject_key=record.subject,
                        sender=config.organization,
                        correlation_id=record.correlation_id,
                        payload=dict(record.payload),
                    ),
                    headers=[("stafett-connector", config.name.encode())],
                )
                for record in batch.records
            ]
            self._bus.publish_many(records)
            worker.count(records_out=len(records))
        if batch.checkpoint is not None:
            self._checkpoints.save(config.name, batch.checkpoint)
        worker.update(last_success_at=time.time(), lag_s=0.0)
        return batch.more

    # -- sinks --------------------------------------------------------------------------------
    def _run_sink(self, worker: _Worker) -> None:
        config = worker.config
        task = cast("SinkTask", self._factories[(config.system, config.kind)](config))
        topic = topics.outbound(config.organization)
        self._bus.ensure_topics([topic])
        backoff = config.retry.backoff_s
        try:
            while not worker.stop.is_set():
                if worker.paused.is_set():
                    worker.stop.wait(0.2)
                    continue
                try:
                    with self._bus.consumer([topic], _group(config)) as consumer:
                        while not worker.stop.is_set() and not worker.paused.is_set():
                            messages = consumer.poll(self._poll_s)
                            if messages:
                                self._sink_batch(worker, task, messages)
                                consumer.commit(messages)
                    backoff = config.retry.backoff_s
                except BusError as exc:
                    worker.failed(exc)
                    worker.stop.wait(backoff)
                    backoff = min(config.retry.max_backoff_s, backoff * 2)
        finally:
            task.close()

    def _sink_batch(self, worker: _Worker, task: SinkTask, messages: list[Message]) -> None:
        dead: list[Record] = []
        for message in messages:
            if worker.stop.is_set():
                raise BusError("stopping: the rest of the batch comes again")
            worker.count(records_in=1)
            try:
                envelope = message.envelope()
            except EnvelopeError as exc:
                dead.append(_dead_letter(message, f"not a Stafett envelope: {exc}"))
                continue
            reason = self._put_with_retries(worker, task, envelope)
            if reason is not None:
                dead.append(_dead_letter(message, reason))
            else:
                worker.count(records_out=1)
                worker.update(
                    last_success_at=time.time(),
                    lag_s=max(0.0, time.time() - envelope.occurred_at.timestamp()),
                )
        if dead:
            self._bus.publish_many(dead)
            worker.count(dead_lettered=len(dead))

    def _put_with_retries(self, worker: _Worker, task: SinkTask, envelope: Envelope) -> str | None:
        policy = worker.config.retry
        backoff = policy.backoff_s
        for attempt in range(1, policy.max_attempts + 1):
            try:
                task.put(envelope)
                return None
            except PermanentError as exc:
                worker.failed(exc)
                return f"refused by {worker.config.system}: {exc}"
            except Exception as exc:
                worker.failed(exc)
                if attempt == policy.max_attempts:
                    return f"gave up after {attempt} attempts: {type(exc).__name__}: {exc}"
                if worker.stop.wait(backoff):
                    raise BusError("stopping during a retry: the message comes again") from exc
                backoff = min(policy.max_backoff_s, backoff * 2)
        return None  # pragma: no cover - the loop always returns


def _group(config: ConnectorConfig) -> str:
    return f"stafett-connect-{config.name}"


def _dead_letter(message: Message, reason: str) -> Record:
    source = f"{message.topic}/{message.partition}/{message.offset}".encode()
    return Record(
        topics.DEAD_LETTER,
        message.key or "",
        message.value,
        (*message.headers, (DLQ_REASON, reason.encode()), (DLQ_SOURCE, source)),
    )
