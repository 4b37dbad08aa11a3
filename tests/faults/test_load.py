"""A bounded load with consent on: mixed reads, searches and writes, no errors, nothing torn.

The workload of bench/bench_load.py (six organisations' systems and four guardians; reads,
searches by patient, chain and date, Task creates and updates, transaction Bundles; open loop,
Poisson arrivals) for 60 s at 12 requests/s against ``stafett serve --workers 2`` on
PostgreSQL with ``stafett worker`` relaying to a real broker. Latency is reported, not
asserted (a shared 2-core CI machine): performance figures belong to bench_load.py.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import new_postgres_database
from tests.faults.support import Service, bench_load, service

pytestmark = [pytest.mark.postgres, pytest.mark.kafka, pytest.mark.slow, pytest.mark.e2e]

SECONDS = 60.0
RATE = 12.0
WINDOW = 15.0
# generous: a real leak shows in far less time, while a loaded CI machine's allocator and
# late-warming caches (search plans, the verifier's cache, consent decisions) stay well below
MAX_RSS_GROWTH = 0.35


@pytest.fixture(scope="module")
def running(
    postgres_admin_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The service on a fresh PostgreSQL database with 60 children's logs."""
    url = new_postgres_database(postgres_admin_url)
    tmp: Path = tmp_path_factory.mktemp("load")
    with service(url, kafka_bootstrap, tmp, children=60) as live:
        yield live


def test_mixed_load_with_consent_has_no_errors_and_no_half_written_resource(
    running: Service,
) -> None:
    """60 s of mixed load: every answer is the expected one, the store stays consistent."""
    system, citizen = bench_load.dev_tokens(running.server.data_dir, 3600)
    systems, guardians = bench_load.actors(running.data, system_token=system, citizen_token=citizen)
    before = bench_load.counts(running.url)
    result = bench_load.run_load(
        running.server.fhir,
        bench_load.Mix(systems, guardians, random.Random(7)),
        rate=RATE,
        seconds=SECONDS,
        window_s=WINDOW,
        meters={"api": running.server.worker_rss},
        seed=7,
    )
    windows = result.windows()
    for w in windows:  # shown with -s or on failure: the figures of this run
        print(w)

    unexpected = result.unexpected()
    assert not unexpected, [f"{s.op} {s.status} {s.error[:200]}" for s in unexpected[:5]]
    assert len(result.samples) > 0.7 * RATE * SECONDS
    assert {s.op for s in result.samples} == set(bench_load.MIX)
    assert all(s.status < 500 for s in result.samples)

    # every write is there: single creates one by one, all writes by the history's growth
    assert bench_load.wait_for_backlog(running.url, 60) >= 0, "the outbox did not drain"
    after = bench_load.counts(running.url)
    created = result.created_ids()
    bundles = sum(1 for s in result.samples if s.op == "bundle")
    updates = sum(1 for s in result.samples if s.op == "update")
    assert after["tasks"] - before["tasks"] == len(created) + 2 * bundles
    task_history = after["history"] - before["history"]
    # each write adds one history row per resource, plus its AuditEvent(s) (also resources)
    assert task_history >= len(created) + updates + 3 * bundles
    checks = bench_load.consistency(running.url, running.server.data_dir)
    assert not any(checks.values()), checks

    # memory: from the end of the first window to the end of the run
    rss = [w["api_rss_mb"] for w in windows if "api_rss_mb" in w]
    assert len(rss) >= 3
    assert rss[-1] < rss[0] * (1 + MAX_RSS_GROWTH), f"API RSS per window: {rss} MB"
    assert running.worker_alive()
