"""`stafett demo` (`make run`): Stafett, its worker, the connectors and four vendor systems.

With the embedded default there is no Kafka: the bus is `bus.memory.InMemoryBus`, which only
connects what runs in the same process. So the demo runs everything in one process on one
in-process bus: the API (the app of `stafett serve`), the worker (relay, consent router,
ingest, scheduler, audit sealer, lifecycle), the connector runtime of
`examples/demo/connectors.yaml` with its admin API, and the simulators of the kindergarten,
school, health station and child-welfare systems. NAV is left out: its system and its
connector speak Kafka (kafka-python) themselves and cannot use the in-process bus.

The demo child is Nora of `examples/stafettlogg/demo-transaction.json`, loaded into Stafett
once. Her family's Consent names the kindergarten and the health station, not the school or
child welfare. The kindergarten's system knows Nora (registered when its store is empty, with
no log of its own: her log is Stafett's), so its staff can register measures for her; the
other systems start empty and get what the family lets them see. Everything is kept under
STAFETT_DATA_DIR (`.stafett/`), so a second start goes on where the first stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from service.config import Settings

if TYPE_CHECKING:
    from bus import Bus
    from connectors.runtime import ConnectorRuntime
    from service.worker import Worker

__all__ = ["DemoPorts", "add_demo_parser", "run_demo"]

_log = logging.getLogger("stafett.demo")
_PROG = "stafett demo"
CONNECTORS_FILE = Path("examples/demo/connectors.yaml")

NORA = "15832151200"
MOTHER = "04868941214"
INGRID = "12898522405"  # Ingrid Lærum, stafettholder at the kindergarten
OPERATOR = "936451284"  # Fjellvik kommune runs all four systems
KINDERGARTEN = "912837467"
SCHOOL = "927364514"
HEALTH_STATION = "945182733"
CHILD_WELFARE = "974760673"
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
KINDERGARTEN_KEY = "barnehage-dev-key"
STATION_TOKEN = "helsestasjon-dev-token"  # noqa: S105 - the simulator's development default
# the sinks' and the kindergarten source's Stafett tokens are minted at every start
_TOKEN_LIFETIME_S = 30 * 24 * 3600


@dataclass(frozen=True, slots=True)
class DemoPorts:
    """Where each part listens: the API, the connectors' admin API and the four simulators."""

    api: int
    admin: int
    kindergarten: int
    school: int
    health_station: int
    child_welfare: int

    @classmethod
    def from_base(cls, base: int, api: int | None = None) -> DemoPorts:
        """Return the ports of `--port-base` (8000: API 8080, admin 8083, systems 8101-8104)."""
        return cls(
            api=api if api is not None else base + 80,
            admin=base + 83,
            kindergarten=base + 101,
            school=base + 102,
            health_station=base + 103,
            child_welfare=base + 104,
        )

    def named(self, *, simulators: bool = True) -> list[tuple[int, str]]:
        """Return (port, what listens there), the simulators and connectors only if they run."""
        named = [(self.api, "the Stafett API")]
        if simulators:
            named += [
                (self.admin, "the connectors' admin API"),
                (self.kindergarten, "the kindergarten system"),
                (self.school, "the school system"),
                (self.health_station, "the health station system"),
                (self.child_welfare, "the child-welfare system"),
            ]
        return named


def add_demo_parser(sub: Any) -> None:
    """Add the `demo` command."""
    demo = sub.add_parser(
        "demo",
        help="run Stafett, its worker, connectors and four vendor-system simulators in one "
        "process (what `make run` starts)",
    )
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument(
        "--port-base",
        type=int,
        default=8000,
        help="move every port: API on BASE+80, connectors' admin API on BASE+83, the "
        "kindergarten, school, health station and child-welfare systems on BASE+101..104 "
        "(default 8000)",
    )
    demo.add_argument("--port", type=int, help="the API's port (default: BASE+80, i.e. 8080)")
    demo.add_argument(
        "--no-simulators",
        action="store_true",
        help="run only the API and the worker: no vendor systems, no connectors",
    )


def run_demo(args: argparse.Namespace, settings: Settings, *, seed: Callable[[], int]) -> int:
    """Run the demo until SIGINT/SIGTERM; `seed` loads the demo child's log into Stafett."""
    ports = DemoPorts.from_base(args.port_base, args.port)
    simulators = not args.no_simulators
    problem = _precheck(args, settings, ports, simulators=simulators)
    if problem:
        print(f"{_PROG}: error: {problem}", file=sys.stderr)
        return 2
    if "base_url" not in settings.model_fields_set:
        # links and Location headers name the port the demo really listens on
        settings = settings.model_copy(update={"base_url": f"http://{args.host}:{ports.api}"})
    # the connectors poll every system every second: their requests are not news
    logging.getLogger("httpx").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            # a second Ctrl-C: whoever presses it does not want to wait for a clean stop
            os._exit(128 + signum)
        stop.set()

    # installed first: a signal during the start-up stops the demo as soon as it has started
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    code = seed()
    if code:
        return code
    try:
        with _running(args.host, ports, settings, simulators=simulators) as running:
            print(_welcome(args.host, ports, settings, running), flush=True)
            print(f"{_PROG}: running; Ctrl-C stops it (twice: at once)", flush=True)
            stop.wait()
            print(f"{_PROG}: stopping", flush=True)
    except _StartError as exc:
        print(f"{_PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(f"{_PROG}: stopped", flush=True)
    return 0


class _StartError(Exception):
    """A part of the demo did not start."""


@dataclass
class _Running:
    """What the start-up text needs to know of the running demo."""

    simulators: bool
    consent_id: str | None = None


def _precheck(
    args: argparse.Namespace, settings: Settings, ports: DemoPorts, *, simulators: bool
) -> str | None:
    """Return why the demo cannot start, before anything is started or written."""
    if not settings.dev_auth:
        return (
            "the demo needs STAFETT_DEV_AUTH=1: its connectors and the printed commands use "
            "tokens of the development issuer (make run sets it)"
        )
    if simulators and not CONNECTORS_FILE.is_file():
        return f"no such file: {CONNECTORS_FILE} (run the demo from the Stafett checkout)"
    seen: dict[int, str] = {}
    for port, what in ports.named(simulators=simulators):
        if port in seen:
            return f"port {port} is given to both {seen[port]} and {what}; choose another --port"
        seen[port] = what
        if not 0 < port < 65536:
            option = "--port" if port == ports.api else "--port-base"
            return f"port {port} ({what}) is not a TCP port; choose another {option}"
        if not _taken(args.host, port):
            continue
        if port == ports.api:
            move = "choose another with --port (e.g. make run ARGS='--port 9080')"
        else:
            move = "move all with --port-base (e.g. make run ARGS='--port-base 9000': API on 9080)"
        return f"port {port} ({what}) on {args.host} is in use; stop what uses it, or {move}"
    return None


def _taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # as uvicorn binds: a port only in TIME_WAIT after the previous run counts as free
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def _running(
    host: str, ports: DemoPorts, settings: Settings, *, simulators: bool
) -> Iterator[_Running]:
    """Start every part; on leaving, stop them in reverse order.

    The connectors stop first (they use the bus, the API and the simulators), then the worker
    (which closes the bus), the API and the simulators.
    """
    from bus.memory import InMemoryBus  # noqa: PLC0415
    from service.api.app import create_app  # noqa: PLC0415
    from service.worker import Worker  # noqa: PLC0415

    running = _Running(simulators=simulators)
    with contextlib.ExitStack() as stack:
        if simulators:
            for name, app, port in _simulator_apps(settings.data_dir / "simulators", ports):
                stack.enter_context(_serving(app, name, host, port))
        stack.enter_context(_serving(create_app(settings), "the Stafett API", host, ports.api))
        bus = InMemoryBus()  # the worker owns it: Worker.stop closes it, after the connectors
        worker = Worker(_worker_settings(settings, simulators=simulators), bus=bus)
        worker.start()
        stack.callback(worker.stop)
        if simulators:
            runtime = stack.enter_context(_connectors(host, ports, settings, bus))
            _settle(worker, runtime)
            running.consent_id = _active_consent(settings, host, ports.api)
        yield running


@contextlib.contextmanager
def _serving(app: Any, name: str, host: str, port: int) -> Iterator[None]:
    """Serve an ASGI app from a thread for the block (uvicorn, one worker)."""
    import uvicorn  # noqa: PLC0415

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        log_level="warning",  # six "Uvicorn running on" lines would bury the start-up text
        access_log=False,
        lifespan="on",
        proxy_headers=True,
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    # signals stay with the main thread: uvicorn installs no handlers in other threads
    thread = threading.Thread(target=server.run, name=f"demo:{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise _StartError(f"{name} did not start on {host}:{port} (see the log above)")
        time.sleep(0.02)
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _simulator_apps(root: Path, ports: DemoPorts) -> list[tuple[str, Any, int]]:
    """Return (name, ASGI app, port) of each simulated system, with its store under `root`."""
    from simulators.child_welfare import Settings as AgencySettings  # noqa: PLC0415
    from simulators.child_welfare import create_app as agency_app  # noqa: PLC0415
    from simulators.health_station.app import HealthStationConfig  # noqa: PLC0415
    from simulators.health_station.app import create_app as station_app  # noqa: PLC0415
    from simulators.kindergarten.app import KindergartenConfig  # noqa: PLC0415
    from simulators.kindergarten.app import create_app as kindergarten_app  # noqa: PLC0415
    from simulators.school.app import SchoolConfig  # noqa: PLC0415
    from simulators.school.app import create_app as school_app  # noqa: PLC0415

    def folder(name: str) -> Path:
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # No simulator's own seed (`seed=True`) fits Nora's log in Stafett: each opens a log of
    # its own (a second active log in Stafett, so measures could not find "the" log), and the
    # school's and child welfare's name themselves in a consent the family never gave in
    # Stafett. The kindergarten registers Nora below (_seed_kindergarten); the others start
    # empty and get what the family's Consent lets them see.
    return [
        (
            "the kindergarten system",
            kindergarten_app(KindergartenConfig(data_dir=folder("barnehage"))),
            ports.kindergarten,
        ),
        ("the school system", school_app(SchoolConfig(data_dir=folder("skole"))), ports.school),
        (
            "the health station system",
            station_app(HealthStationConfig(data_dir=folder("helsestasjon"))),
            ports.health_station,
        ),
        (
            "the child-welfare system",
            agency_app(AgencySettings(data_dir=folder("barnevern"), resend_interval_s=2.0)),
            ports.child_welfare,
        ),
    ]


def _worker_settings(settings: Settings, *, simulators: bool) -> Settings:
    """Return the worker's settings: every connected organisation subscribes to Nora's log."""
    if not simulators:
        return settings
    # so the router decides for the school and child welfare too, and records their refusals
    # (they are neither CareTeam members nor Task owners of the demo log)
    connected = [KINDERGARTEN, SCHOOL, HEALTH_STATION, CHILD_WELFARE]
    subscribers = [*settings.subscribers, *(o for o in connected if o not in settings.subscribers)]
    return settings.model_copy(update={"subscribers": subscribers})


@contextlib.contextmanager
def _connectors(
    host: str, ports: DemoPorts, settings: Settings, bus: Bus
) -> Iterator[ConnectorRuntime]:
    """Run the connectors of the demo's connectors.yaml on `bus`, with their admin API."""
    from connectors.admin import admin_app  # noqa: PLC0415
    from connectors.checkpoints import FileCheckpointStore  # noqa: PLC0415
    from connectors.config import load_config  # noqa: PLC0415
    from connectors.registry import factories  # noqa: PLC0415
    from connectors.runtime import ConnectorRuntime  # noqa: PLC0415
    from service.auth.dev_issuer import DevIssuer  # noqa: PLC0415

    state = settings.data_dir / "connectors"
    issuer = DevIssuer.load_or_create(settings.data_dir)
    # connectors.yaml reads ${NAME} from the environment: this process's, nobody else's
    os.environ.update(
        {
            "DEMO_STAFETT_URL": f"http://{host}:{ports.api}/fhir",
            "DEMO_KINDERGARTEN_URL": f"http://{host}:{ports.kindergarten}",
            "DEMO_SCHOOL_URL": f"http://{host}:{ports.school}",
            "DEMO_HEALTH_STATION_URL": f"http://{host}:{ports.health_station}",
            "DEMO_CHILD_WELFARE_URL": f"http://{host}:{ports.child_welfare}",
            "DEMO_STATE_DIR": str(state),
            **{
                f"DEMO_TOKEN_{org}": issuer.issue_system(
                    organization=org,
                    scopes="system/*.rs",
                    lifetime_seconds=_TOKEN_LIFETIME_S,
                    audience=settings.audience,
                )
                for org in (KINDERGARTEN, SCHOOL, HEALTH_STATION, CHILD_WELFARE)
            },
        }
    )
    try:
        config = load_config(CONNECTORS_FILE)
    except ValueError as exc:
        raise _StartError(str(exc)) from exc
    try:
        _seed_kindergarten(f"http://{host}:{ports.kindergarten}")
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise _StartError(f"the kindergarten system did not answer as expected: {exc}") from exc
    runtime = ConnectorRuntime(
        bus=bus,
        connectors=config.connectors,
        checkpoints=FileCheckpointStore(state),
        factories=factories(),
    )
    runtime.start()
    try:
        token = settings.connectors_admin_token
        admin = admin_app(runtime, token=token.get_secret_value() if token is not None else None)
        with _serving(admin, "the connectors' admin API", host, ports.admin):
            yield runtime
    finally:
        runtime.stop()


def _settle(worker: Worker, runtime: ConnectorRuntime, timeout_s: float = 15.0) -> None:
    """Wait until the worker and connectors have had nothing to do for a second.

    The first start copies Nora's log into the health station and the kindergarten; printed
    before that, the start-up text would scroll away under their log lines.
    """
    from service.outbox import backlog  # noqa: PLC0415

    deadline = time.monotonic() + timeout_s
    seen: tuple[int, ...] = ()
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        with worker.services.database.read() as conn:
            waiting = backlog(conn)
        statuses = [runtime.status(name) for name in runtime.names()]
        now = (
            waiting,
            worker.counters.routed,
            *(s.records_in for s in statuses),
            *(s.records_out for s in statuses),
        )
        if now != seen:
            seen, quiet_since = now, time.monotonic()
        elif waiting == 0 and time.monotonic() - quiet_since >= 1.0:
            return
        time.sleep(0.2)


def _seed_kindergarten(base_url: str) -> None:
    """Register Nora in the kindergarten's system as staff would (empty store only)."""
    with httpx.Client(base_url=base_url, timeout=10) as kindergarten:
        if kindergarten.get("/_sim/store").json()["barn"]:
            return
        response = kindergarten.post("/_sim/barn", json=_NORA_IN_KINDERGARTEN)
        if response.status_code != 201:
            raise _StartError(f"the kindergarten refused Nora: {response.text[:300]}")


# Her log, guardians and consent are Stafett's (the demo Bundle): a record with a log of its
# own would open a second log of Nora's in Stafett (measures could then not find "the" log),
# and its guardians would replace the Bundle's RelatedPersons. This one maps to the Patient
# only, created only if missing; measures name the one log Stafett has.
_NORA_IN_KINDERGARTEN: dict[str, Any] = {
    "fodselsnummer": NORA,
    "fornavn": "Nora",
    "etternavn": "Eksempelsen",
    "fodselsdato": "2021-03-15",
    "logg": None,
}


def _active_consent(settings: Settings, host: str, port: int) -> str | None:
    """Return the id of Nora's active Consent as her mother sees it, for the printed commands."""
    from service.auth.dev_issuer import DevIssuer  # noqa: PLC0415

    token = DevIssuer.load_or_create(settings.data_dir).issue_citizen(
        pid=MOTHER, lifetime_seconds=60, audience=settings.audience
    )
    try:
        found = httpx.get(
            f"http://{host}:{port}/fhir/Consent",
            params={"patient.identifier": f"{FNR_SYSTEM}|{NORA}", "status": "active"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )
        entries = found.json().get("entry", []) if found.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        _log.warning("could not look up Nora's consent", exc_info=True)
        return None
    return str(entries[0]["resource"]["id"]) if entries else None


def _welcome(host: str, ports: DemoPorts, settings: Settings, running: _Running) -> str:
    """Return the start-up text: what runs, and what to try to see data flow."""
    api = f"http://{host}:{ports.api}"
    fhir = f"{api}/fhir"
    where = "STAFETT_DATABASE_URL" if settings.database_url else f"SQLite in {settings.data_dir}"
    text = f"""
Stafett demo: one process, one in-process bus (no Kafka), state in {settings.data_dir}/
  Stafett API       {fhir}  ({where}, dev auth on, Nora's log from examples/)
  worker            outbox relay, consent router, ingest, scheduler, audit sealer
"""
    # the token and audit commands read the data folder: name it unless it is the default
    cli = ".venv/bin/stafett"
    if settings.data_dir != Path(".stafett"):
        cli = f"STAFETT_DATA_DIR={settings.data_dir} {cli}"
    if not running.simulators:
        return text + _stafett_only(fhir, cli)
    kg = f"http://{host}:{ports.kindergarten}"
    school = f"http://{host}:{ports.school}"
    station = f"http://{host}:{ports.health_station}"
    agency = f"http://{host}:{ports.child_welfare}"
    admin = f"http://{host}:{ports.admin}"
    today = date.today()
    start, evaluate = today.isoformat(), (today + timedelta(weeks=6)).isoformat()
    kg_measure = _json(
        barn=NORA,
        beskrivelse="Bildekort i samlingsstunden",
        ansvarlig=KINDERGARTEN,
        status="pagar",
        startdato=start,
        evalueringsdato=evaluate,
    )
    nurse_measure = _json(
        fodselsnummer=NORA,
        beskrivelse="Hørselstest hos helsesykepleier",
        startdato=start,
        evalueringsdato=evaluate,
    )
    withdraw = json.dumps([{"op": "replace", "path": "/status", "value": "inactive"}])
    from_kindergarten = f"https://stafett.no/fhir/sid/{OPERATOR}/barnehagesystem/tiltak|"
    station_auth = f"Authorization: Bearer {STATION_TOKEN}"
    systems = "\n".join(
        f"    {label:<15} {url}  consent: {'yes' if permitted else 'no ':<4} {name}, {org}"
        for label, url, permitted, name, org in (
            ("kindergarten", kg, True, "Solsikken barnehage", KINDERGARTEN),
            ("school", school, False, "Fjellvik skole", SCHOOL),
            ("health station", station, True, "Fjellvik helsestasjon", HEALTH_STATION),
            ("child welfare", agency, False, "Barneverntjenesten i Fjellvik", CHILD_WELFARE),
        )
    )
    text += f"""  connectors        a source and a sink per system (examples/demo/connectors.yaml),
                    admin API {admin}/admin/connectors
  vendor systems    the family's Consent names the kindergarten and the health station:
{systems}
  NAV is not started: it needs a Kafka broker (docs/OPERATIONS.md, "The demo").

See data flow (Nora, {NORA}; simulators/README.md has every endpoint):

  1. Staff at the kindergarten register a measure in their own system:
    curl -s -X POST {kg}/_sim/tiltak -H 'Content-Type: application/json' \\
      -d '{kg_measure}'

  2. A few seconds later it is in Stafett (as Ingrid, the kindergarten's stafettholder) ...
    TOKEN=$({cli} token --practitioner --pid {INGRID} --org {KINDERGARTEN})
    curl -s -H "Authorization: Bearer $TOKEN" "{fhir}/Task?identifier={from_kindergarten}"

     ... and in the health station's system, which the family permits:
    curl -s -H '{station_auth}' "{station}/fhir/Task?_sort=-_lastUpdated&_count=1"

     ... but not in the school's (no consent: its store stays empty):
    curl -s {school}/_sim/store

  3. The other way: the nurse registers a measure at the health station ...
    curl -s -X POST {station}/_sim/tiltak -H 'Content-Type: application/json' \\
      -d '{nurse_measure}'
     ... and it reaches the kindergarten's system:
    curl -s -H 'X-Api-Key: {KINDERGARTEN_KEY}' "{kg}/api/v1/tiltak?barn={NORA}"

  4. The family decides (docs/CONSENT.md). Nora's mother withdraws her consent:
    MOTHER=$({cli} token --citizen {MOTHER})
"""
    browser = f"open {api}/logg-inn, paste the token (echo $MOTHER),"
    if running.consent_id is not None:
        text += f"""    curl -s -X PATCH {fhir}/Consent/{running.consent_id} \\
      -H "Authorization: Bearer $MOTHER" -H 'Content-Type: application/json-patch+json' \\
      -d '{withdraw}'
     (or in a browser: {browser}
     and give or withdraw access per service)
"""
    else:
        text += f"""     It was withdrawn in an earlier run. To give it again: {browser}
     and give access per service (or start afresh, see below).
"""
    text += f"""\
     Within seconds of a withdrawal the kindergarten's system hides Nora ("skjult": true):
    curl -s -H 'X-Api-Key: {KINDERGARTEN_KEY}' {kg}/api/v1/barn/B-1001
     the health station's copy of the consent turns inactive, and nothing flows any more:
     a measure the nurse registers now (step 3) is refused by Stafett:
    {cli} audit denied --since {start} | tail -3

  More: Stafett's pages for the family and the DPO ({api}/logg-inn), the connectors'
  state (curl -s {admin}/admin/connectors/barnehage-inn/status), each system's whole store
  (curl -s {kg}/_sim/store). Start afresh: stop, rm -rf {settings.data_dir}, start again.
"""
    return text


def _json(**fields: str) -> str:
    return json.dumps(fields, ensure_ascii=False)


def _stafett_only(fhir: str, cli: str) -> str:
    return f"""  (no vendor systems or connectors: --no-simulators)

  Get a token (Ingrid, kindergarten teacher and stafettholder at Solsikken barnehage):
    TOKEN=$({cli} token --practitioner --pid {INGRID} --org {KINDERGARTEN})
    curl -s -H "Authorization: Bearer $TOKEN" \\
      "{fhir}/Task?subject.identifier={FNR_SYSTEM}|{NORA}&_sort=period"
"""
