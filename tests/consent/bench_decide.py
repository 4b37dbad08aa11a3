"""Measure the cost of one consent decision: `python -m tests.consent.bench_decide`.

A log with five Consents shaped like consent-permit.json (two actors, five classes, two
nested denies each); the caller is named in the last one. "warm" is a decision on a log
already used in this request (the common case: every search hit after the first); "cold"
includes parsing the five Consents and judging their validity.
"""

from __future__ import annotations

import copy
import statistics
import timeit
from collections.abc import Callable

from consent import AccessRequest, Action, ChildLog, ConsentPolicy, Decision, decide
from tests.consent.builders import FATHER, HEALTH_SYSTEM, MOTHER, NAV_SYSTEM, NOW, load, patient

POLICY = ConsentPolicy()


def five_consent_log() -> ChildLog:
    """Return a log with five consents; only the last names the health station."""
    example = load("consent-permit.json")
    consents = []
    for n in range(5):
        item = copy.deepcopy(example)
        item["id"] = f"consent-{n}"
        if n < 4:
            for actor, name in zip(item["provision"]["actor"], ("a", "b"), strict=True):
                actor["reference"]["reference"] = f"Organization/other-{name}-{n}"
        consents.append(item)
    return ChildLog(
        patient_id="demo-child",
        patient=patient(),
        related_persons=(MOTHER, FATHER),
        consents=tuple(consents),
    )


NOTE = {
    "resourceType": "Communication",
    "id": "note-1",
    "subject": {"reference": "Patient/demo-child"},
    "meta": {"security": [{"system": "urn:example", "code": "x"}]},
}
REQUEST = AccessRequest(action=Action.READ, resource_type="Communication", resource=NOTE)


def per_call_us(fn: Callable[[], Decision], number: int, repeat: int = 5) -> tuple[float, float]:
    """Return (best, median) microseconds per call."""
    runs = [t / number * 1e6 for t in timeit.repeat(fn, number=number, repeat=repeat)]
    return min(runs), statistics.median(runs)


def measure() -> dict[str, tuple[float, float]]:
    """Return timings of warm permit, warm deny and cold decisions."""
    child_log = five_consent_log()

    def warm_permit() -> Decision:
        return decide(
            actor=HEALTH_SYSTEM,
            log=child_log,
            request=REQUEST,
            policy=POLICY,
            now=NOW,
            decision_id="b",
        )

    def warm_deny() -> Decision:
        return decide(
            actor=NAV_SYSTEM,
            log=child_log,
            request=REQUEST,
            policy=POLICY,
            now=NOW,
            decision_id="b",
        )

    def cold() -> Decision:
        return decide(
            actor=HEALTH_SYSTEM,
            log=five_consent_log(),
            request=REQUEST,
            policy=POLICY,
            now=NOW,
            decision_id="b",
        )

    assert warm_permit().permitted
    assert not warm_deny().permitted
    return {
        "warm permit": per_call_us(warm_permit, 2000),
        "warm deny": per_call_us(warm_deny, 2000),
        "cold (parse + validity)": per_call_us(cold, 200),
    }


if __name__ == "__main__":
    for name, (best, median) in measure().items():
        print(f"{name:26} best {best:7.1f} µs   median {median:7.1f} µs")
