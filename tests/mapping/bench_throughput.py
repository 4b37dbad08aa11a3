"""Mapping throughput: `python -m tests.mapping.bench_throughput` (kindergarten tiltak → Task)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mapping import MappingEngine


def main(rounds: int = 3, count: int = 2000) -> None:
    """Print records/s for inbound tiltak → Task including R4B validation, and the reverse."""
    engine = MappingEngine.from_directory()
    case = json.loads(
        (Path(__file__).parent / "golden/barnehagesystem/inbound-tiltak.input.json").read_text()
    )
    record, context = case["record"], case["context"]
    task = engine.map("barnehagesystem", "inbound", "tiltak", record, context).resources[0]
    for label, args in (
        ("inbound tiltak → Task", ("inbound", "tiltak", record)),
        ("outbound Task → tiltak", ("outbound", "Task", task)),
    ):
        best = 0.0
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(count):
                engine.map("barnehagesystem", args[0], args[1], args[2], context)  # type: ignore[arg-type]
            best = max(best, count / (time.perf_counter() - start))
        print(f"{label}: {best:,.0f} records/s (best of {rounds} x {count}, one core)")


if __name__ == "__main__":
    main()
