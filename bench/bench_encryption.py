"""In-process cost of encryption at rest: store write and read with and without sealing.

Times SqlStore.write and SqlStore.read on SQLite (or --database-url) for a Patient (nothing
sealed) and a CarePlan, a Communication and a Task with free text, with encryption on and off.
No HTTP, so the numbers isolate the store; see docs/security/encryption-at-rest.md.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from service.crypto import Envelope, FieldSealer, LocalKeyProvider
from service.crypto.keys import generate_key
from service.repository import finalise
from service.search.extract import ResourceIndexer
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.store import SqlStore

SAMPLES: dict[str, dict[str, Any]] = {
    "Patient": {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": "15832151200"}],
        "name": [{"family": "Nordmann", "given": ["Nora"]}],
        "birthDate": "2021-03-15",
    },
    "CarePlan": {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": "Patient/p1"},
        "description": "Oppmerksomhet: Nora sier lite i grupper, trekker seg ofte ut av leken " * 4,
        "note": [{"text": "Samtale med foreldrene om språk og lek. " * 5}],
    },
    "Communication": {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "payload": [{"contentString": "Nora fortalte en hel historie om hunden sin. " * 6}],
    },
    "Task": {
        "resourceType": "Task",
        "status": "in-progress",
        "intent": "plan",
        "for": {"reference": "Patient/p1"},
        "description": "Språkgruppe i barnehagen: 3 barn, 20 minutter fire dager i uken",
        "output": [
            {
                "type": {"coding": [{"system": "https://stafett.no/t", "code": "evaluation"}]},
                "valueAnnotation": {"time": "2026-01-10", "text": "Bedre deltakelse. " * 8},
            }
        ],
    },
}


def _run(database_url: str, sealer: FieldSealer, kind: str, n: int) -> tuple[float, float]:
    database = Database(database_url)
    upgrade_database(database.engine)
    store = SqlStore(indexer=ResourceIndexer(base_url="http://localhost/fhir"), sealer=sealer)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    writes = []
    for id in ids:
        data = copy.deepcopy(SAMPLES[kind])
        started = time.perf_counter()
        lu = now_micros()
        content = finalise(data, id=id, version_id=1, last_updated=lu)
        with database.write() as conn:
            store.write(
                conn,
                resource_type=kind,
                id=id,
                version_id=1,
                last_updated=lu,
                content=content,
                data=data,
                method="POST",
                previous_version=None,
            )
        writes.append(time.perf_counter() - started)
    reads = []
    with database.read() as conn:
        for id in ids:
            started = time.perf_counter()
            stored = store.read(conn, resource_type=kind, id=id)
            assert stored is not None
            assert stored.content is not None
            reads.append(time.perf_counter() - started)
    database.dispose()
    return statistics.median(writes) * 1e6, statistics.median(reads) * 1e6


def main() -> None:
    """Print the median microseconds per store write and read, sealing on and off."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("--database-url", help="default: a fresh SQLite file per run")
    args = parser.parse_args()
    on = FieldSealer(Envelope(LocalKeyProvider(env_keys={"k1": generate_key()})))
    off = FieldSealer(None)
    print(f"{'type':<14}{'write off':>11}{'write on':>10}{'read off':>10}{'read on':>9}  (µs)")
    with tempfile.TemporaryDirectory() as folder:
        for kind in SAMPLES:
            results = []
            for label, sealer in (("off", off), ("on", on)):
                url = args.database_url or f"sqlite:///{Path(folder) / f'{kind}-{label}.db'}"
                results.append(_run(url, sealer, kind, args.n))
            (w_off, r_off), (w_on, r_on) = results
            print(f"{kind:<14}{w_off:>11.0f}{w_on:>10.0f}{r_off:>10.0f}{r_on:>9.0f}")
    # the sealing work alone, without the database
    data = {**SAMPLES["CarePlan"], "id": "x", "meta": {"versionId": "1"}}
    content = orjson.dumps(data).decode()
    started = time.perf_counter()
    for _ in range(args.n):
        split = on.split("CarePlan", "x", content, data)
    split_us = (time.perf_counter() - started) / args.n * 1e6
    assert split is not None
    assert split.sealed is not None
    started = time.perf_counter()
    for _ in range(args.n):
        on.merge("CarePlan", "x", split.content, split.sealed)
    merge_us = (time.perf_counter() - started) / args.n * 1e6
    print(f"CarePlan split+seal {split_us:.1f} µs, open+merge {merge_us:.1f} µs")


if __name__ == "__main__":
    main()
