"""Prometheus metrics of the API and the worker (docs/OPERATIONS.md, "Metrics").

With several uvicorn worker processes, prometheus_client's multiprocess mode aggregates the
processes' values (PROMETHEUS_MULTIPROC_DIR, set by `stafett serve`); the outbox backlog is
read from the database at each scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = [
    "AUDIT_SEALED_SEQ",
    "AUDIT_UNSEALED",
    "CONSENT_DECISIONS",
    "CONTENT_TYPE_LATEST",
    "REQUESTS",
    "REQUEST_SECONDS",
    "WORKER_EVENTS",
    "WORKER_SECONDS",
    "interaction_of",
    "render",
]

REQUESTS = Counter(
    "stafett_http_requests_total",
    "FHIR API requests by interaction, resource type and status class.",
    ["interaction", "resource_type", "status"],
)
REQUEST_SECONDS = Histogram(
    "stafett_http_request_duration_seconds",
    "FHIR API request latency by interaction.",
    ["interaction"],
    buckets=(0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONSENT_DECISIONS = Counter(
    "stafett_consent_decisions_total",
    "Audited consent decisions by outcome (permit/deny) and basis.",
    ["outcome", "basis"],
)
WORKER_EVENTS = Counter(
    "stafett_worker_events_total",
    "What the worker's loops did: routed, delivered, refused, revoked, granted, applied, "
    "duplicates, dead_lettered, failures, published.",
    ["event"],
)
CONSUMER_LAG = Gauge(
    "stafett_consumer_lag_seconds",
    "Age of the newest message a worker loop handled (router, ingest).",
    ["loop"],
    multiprocess_mode="max",
)

WORKER_SECONDS = Histogram(
    "stafett_worker_batch_duration_seconds",
    "Time a worker loop (router, ingest) took to handle one polled batch, effects included.",
    ["loop"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

AUDIT_SEALED_SEQ = Gauge(
    "stafett_audit_sealed_seq",
    "Last sequence number the audit sealer appended to the audit chain.",
    multiprocess_mode="max",
)
AUDIT_UNSEALED = Gauge(
    "stafett_audit_unsealed",
    "AuditEvents the sealer's last pass left waiting (0 once it has caught up).",
    multiprocess_mode="max",
)

_TYPES_WITHOUT_ID = {"metadata", "_search", "_history"}


def interaction_of(method: str, path: str) -> tuple[str, str]:
    """Return (FHIR interaction, resource type) for a request path under /fhir."""
    parts = [p for p in path.split("/") if p][1:]  # drop "fhir"
    if not parts:
        return ("transaction" if method == "POST" else "other"), ""
    resource_type = parts[0] if parts[0] not in _TYPES_WITHOUT_ID else ""
    if parts[0] == "metadata":
        return "capabilities", ""
    if len(parts) == 1:
        return {"GET": "search-type", "POST": "create", "PUT": "update"}.get(
            method, "other"
        ), resource_type
    if parts[1] == "_search":
        return "search-type", resource_type
    if parts[1] == "_history":
        return "history-type", resource_type
    if parts[1].startswith("$") or (len(parts) > 2 and parts[2].startswith("$")):
        return "operation", resource_type
    if len(parts) >= 3 and parts[2] == "_history":
        return ("vread" if len(parts) == 4 else "history-instance"), resource_type
    return {"GET": "read", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, "other"
    ), resource_type


class _BacklogCollector(Collector):
    """Reads the outbox backlog from the database when scraped."""

    def __init__(self, read_backlog: Callable[[], int]) -> None:
        self._read = read_backlog

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "stafett_outbox_backlog", "Outbox events waiting to be published."
        )
        up = GaugeMetricFamily(
            "stafett_database_up", "1 when the database answered this scrape, else 0."
        )
        try:
            family.add_metric([], float(self._read()))
        except Exception:
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield family
        yield up


def render(read_backlog: Callable[[], int] | None = None) -> bytes:
    """Return the exposition text of all metrics of this process (or of all processes)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        from prometheus_client import REGISTRY  # noqa: PLC0415

        registry = REGISTRY
    if read_backlog is not None:
        scrape = CollectorRegistry()
        scrape.register(_BacklogCollector(read_backlog))
        return generate_latest(registry) + generate_latest(scrape)
    return generate_latest(registry)
