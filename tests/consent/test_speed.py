"""A loose guard on the cost of a decision; the precise figure comes from bench_decide."""

from __future__ import annotations

from tests.consent.bench_decide import measure


def test_warm_decision_is_cheap() -> None:
    timings = measure()
    # The target is < 20 µs on an idle machine; allow a shared, loaded CI runner ten times that.
    assert timings["warm permit"][0] < 200, timings
    assert timings["warm deny"][0] < 200, timings
