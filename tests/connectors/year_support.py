"""One municipality's year in one process: Stafett, the worker, five vendor systems, ten connectors.

`year_stack` runs Stafett on PostgreSQL, one Worker (relay, router, ingest) on a real Kafka
broker, the five simulators (kindergarten, school, health station, child welfare with its
Fiks message service, NAV on its own topic) and a source and a sink connector for each, all
at once. `Year` gives the test the vendor systems' own surfaces (staff actions, advisor and
caseworker endpoints), read-only views of their stores, Stafett clients for checking, and the
family's citizen login. Used by test_year_e2e.py.

Isolation on a shared broker: the sinks' consumer groups are new per run and would read a
`stafett.out.<orgnr>` topic from its start, including deliveries earlier test modules left
there for the same organisations; `_skip_history` commits those groups at the end of each
topic before the connectors start. NAV's topic has a name of its own per run, and every
connector keeps its links in files of this run (in-memory link state is shared per process).
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from bus import topics
from bus.kafka import KafkaBus
from connectors import ConnectorConfig, ConnectorRuntime, FileCheckpointStore
from connectors.registry import factories
from service.worker import Worker
from simulators.child_welfare import Settings as AgencySettings
from simulators.child_welfare import create_app as agency_app
from simulators.common.server import running
from simulators.health_station.app import HealthStationConfig
from simulators.health_station.app import create_app as station_app
from simulators.kindergarten.app import KindergartenConfig
from simulators.kindergarten.app import create_app as kindergarten_app
from simulators.nav import Settings as NavSettings
from simulators.nav import create_app as nav_app
from simulators.school.app import SchoolConfig
from simulators.school.app import create_app as school_app
from tests.conftest import new_postgres_database
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, LiveServer, fhir_headers, live_server

__all__ = [
    "CHILD_WELFARE",
    "HEALTH",
    "KINDERGARTEN",
    "MOTHER",
    "NAV",
    "NAV_OPERATOR",
    "NORA",
    "OPERATOR",
    "SCHOOL",
    "Year",
    "child_reference",
    "pdf",
    "sid",
    "wait_for",
    "year_stack",
]

NORA = "15832151200"  # born 2021-03-15 (synthetic)
MOTHER = "04868941214"  # Mona, born 1989-06-04 (synthetic)
KINDERGARTEN = "912837467"
SCHOOL = "927364514"
HEALTH = "945182733"
CHILD_WELFARE = "974760673"
NAV = "961728398"
OPERATOR = "936451284"  # the municipality, which runs the kindergarten, school, station, agency
NAV_OPERATOR = "889640782"

STATION_TOKEN = "stasjon-token"
KINDERGARTEN_KEY = "nokkel"
SCHOOL_CLIENT = ("stafett", "skole-dev-secret")
NAV_FORM_URL = "https://arkiv.nav.example/samtykke/{id}"
AGENCY_FORM_URL = "https://fagsystem.barnevern.example/samtykker/{id}/skjema.pdf"
_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "fetch_max_wait_ms": 20}
_RETRY = {"max_attempts": 4, "backoff_s": 0.1, "max_backoff_s": 1.0}
_DIRECTORY = (
    (KINDERGARTEN, "Solsikken barnehage"),
    (SCHOOL, "Fjellvik skole"),
    (HEALTH, "Fjellvik helsestasjon"),
    (CHILD_WELFARE, "Barneverntjenesten i Fjellvik"),
    (NAV, "NAV Fjellvik"),
    (OPERATOR, "Fjellvik kommune"),
    (NAV_OPERATOR, "Arbeids- og velferdsdirektoratet"),
)


def sid(system: str, kind: str, operator: str = OPERATOR) -> str:
    """Return the §2 identifier system of a vendor's records of one kind."""
    return f"https://stafett.no/fhir/sid/{operator}/{system}/{kind}"


def pdf(text: str) -> str:
    """Return a tiny 'signed form' as base64."""
    return base64.b64encode(f"%PDF-1.4 {text}".encode()).decode()


@dataclass
class Year:
    """The running stack, seen from the test: vendor surfaces, vendor stores, Stafett."""

    server: LiveServer
    worker: Worker
    bus: KafkaBus
    runtime: ConnectorRuntime
    kindergarten: httpx.Client
    school: httpx.Client
    station: httpx.Client
    agency: httpx.Client
    nav: httpx.Client
    orgs: dict[str, str]
    state: dict[str, Any] = field(default_factory=dict)

    # -- Stafett (checks, and the family) --------------------------------------------------
    def stafett(self, org: str) -> httpx.Client:
        return self.server.client(self.server.system_token(org=org, scopes="system/*.rs"))

    def citizen(self, pid: str) -> httpx.Client:
        audience = self.server.settings.audience
        return self.server.client(self.server.issuer.issue_citizen(pid=pid, audience=audience))

    def family(self) -> httpx.Client:
        """Nora's mother in Stafett: she reads all of Nora's log, and her own pregnancy log."""
        return self.citizen(MOTHER)

    # -- the vendor systems' own stores ----------------------------------------------------
    def kindergarten_store(self) -> dict[str, list[dict[str, Any]]]:
        store = self.kindergarten.get("/_sim/store").json()
        return {
            kind: [e.get("data", e) for e in store[kind].values()]
            for kind in ("barn", "tiltak", "samtykker")
        }

    def school_store(self) -> dict[str, list[dict[str, Any]]]:
        store = self.school.get("/_sim/store").json()
        return {
            kind: [e.get("data", e) for e in store[kind].values()]
            for kind in ("elever", "tiltak", "samtykker")
        }

    def station_store(self, resource_type: str) -> list[dict[str, Any]]:
        store = self.station.get("/_sim/store").json()
        return [e["current"] for e in store["resources"].get(resource_type, {}).values()]

    def agency_store(self) -> dict[str, list[dict[str, Any]]]:
        store = self.agency.get("/_sim/sak").json()
        return {kind: list(store[kind].values()) for kind in ("logger", "tiltak", "samtykker")}

    def nav_store(self) -> dict[str, list[dict[str, Any]]]:
        store = self.nav.get("/_sim/store").json()
        return {kind: list(store[kind].values()) for kind in ("oppfolging", "tiltak", "samtykker")}

    # -- diagnosis -------------------------------------------------------------------------
    def dead_letters(
        self,
        wanted: Callable[[bytes], bool],
        enough: Callable[[list[tuple[str, str, bytes]]], bool],
        timeout: float = 30.0,
    ) -> list[tuple[str, str, bytes]]:
        """Return (source, reason, value) of the dead letters `wanted` picks, once `enough`.

        The topic holds every module's dead letters on a shared broker: `wanted` chooses ours.
        """
        found: list[tuple[str, str, bytes]] = []
        with self.bus.consumer([topics.DEAD_LETTER], f"year-dlq-{uuid.uuid4().hex}") as consumer:
            deadline = time.monotonic() + timeout
            while not enough(found) and time.monotonic() < deadline:
                for message in consumer.poll(0.5):
                    value = bytes(message.value or b"")
                    if wanted(value):
                        found.append(
                            (
                                (message.header("stafett-dlq-source") or b"").decode(),
                                (message.header("stafett-dlq-reason") or b"").decode(),
                                value,
                            )
                        )
        return found

    def diagnosis(self) -> str:
        statuses = [
            (s.name, s.state, s.records_out, s.dead_lettered, s.last_error)
            for s in (self.runtime.status(n) for n in self.runtime.names())
        ]
        return f"connectors: {statuses}; worker: {self.worker.counters}"


def wait_for(year: Year | None, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Poll `check` until it returns something truthy; fail with a diagnosis at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            found = check()
            if found:
                return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s; {year.diagnosis() if year else ''}")
        time.sleep(0.2)


def _skip_history(bootstrap: str, groups: dict[str, str]) -> None:
    """Commit each new consumer group at the end of its topic (group -> topic).

    Some brokers (Tansu) report a partition's end as the last batch's base offset + 1, so the
    group reads from there to the real end and commits the positions it reached.
    """
    for group, topic in groups.items():
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,
        )
        try:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                continue  # a new topic: nothing to skip
            assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
            ends = consumer.end_offsets(assigned)
            consumer.assign(assigned)
            for tp in assigned:
                consumer.seek(tp, max(ends[tp] - 1, 0))
            deadline = time.monotonic() + 10
            while consumer.poll(timeout_ms=300) or any(
                consumer.position(tp) < ends[tp] for tp in assigned
            ):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not read {topic} to its end for {group}")
            consumer.commit(
                {tp: OffsetAndMetadata(consumer.position(tp), "", -1) for tp in assigned}
            )
        finally:
            consumer.close()


def _register_directory(server: LiveServer) -> dict[str, str]:
    """The municipality's directory: the one direct write into Stafett the scenario allows."""
    directory = server.client(server.system_token(org=OPERATOR))
    orgs: dict[str, str] = {}
    for number, name in _DIRECTORY:
        created = directory.post(
            "/Organization",
            json={
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": number}],
                "name": name,
            },
            headers=fhir_headers(),
        )
        assert created.status_code == 201, created.text
        orgs[number] = created.json()["id"]
    return orgs


def _connectors(
    server: LiveServer,
    urls: dict[str, str],
    bootstrap: str,
    nav_topic: str,
    run: str,
    state: Path,
) -> list[dict[str, Any]]:
    def reader(org: str) -> str:
        return server.system_token(org=org, scopes="system/*.rs")

    def common(system: str, org: str, slug: str, operator: str = OPERATOR) -> dict[str, Any]:
        return {
            "system": system,
            "organization": org,
            "operator": operator,
            "source_system": slug,
            "poll_interval_s": 0.2,
            "retry": _RETRY,
        }

    def pair(
        base: dict[str, Any], name: str, source: dict[str, Any], sink: dict[str, Any]
    ) -> list[dict[str, Any]]:
        return [
            {**base, "name": f"{name}-inn-{run}", "kind": "source", "settings": source},
            {**base, "name": f"{name}-ut-{run}", "kind": "sink", "settings": sink},
        ]

    kindergarten = {
        "base_url": urls["kindergarten"],
        "api_key": KINDERGARTEN_KEY,
        "stafett_url": server.fhir,
        "stafett_token": reader(KINDERGARTEN),
        "state_file": str(state / "barnehage-lenker.json"),
    }
    school = {
        "base_url": urls["school"],
        "client_id": SCHOOL_CLIENT[0],
        "client_secret": SCHOOL_CLIENT[1],
        "stafett_url": server.fhir,
        "stafett_token": reader(SCHOOL),
        "state_file": str(state / "skole-lenker.json"),
    }
    station = {
        "base_url": urls["station"],
        "token": STATION_TOKEN,
        "source_uri": "https://stafett.no/connectors/helsestasjon",
        "stafett_url": server.fhir,
        "stafett_token": reader(HEALTH),
        # a file of our own: without one the links are shared by every run in the process
        "state_file": str(state / "helsestasjon-lenker.json"),
    }
    fiks = {"service_url": urls["agency"], "register_account": True}
    agency_source = {
        **fiks,
        "account": "stafett",
        "token": "stafett-inn-token-0123456789",
        "private_key_path": str(state / "stafett.pem"),
        "consent_form_url": AGENCY_FORM_URL,
    }
    agency_sink = {
        **fiks,
        "account": "stafett-ut",
        "token": "stafett-ut-token-0123456789",
        "private_key_path": str(state / "stafett-ut.pem"),
        "agency_account": "barnevern",
        "resend_interval_s": 1.0,
        "receipt_timeout_s": 20,
        "state_dir": str(state / "barnevern"),
        "stafett_url": server.fhir,
        "stafett_token": reader(CHILD_WELFARE),
    }
    kafka = {"bootstrap": bootstrap, "topic": nav_topic, "max_poll_interval_ms": 20000, **_GROUP}
    nav_source = {**kafka, "consent_form_url": NAV_FORM_URL, "consent_signed_by": "youth"}
    nav_sink = {
        **kafka,
        "state_dir": str(state / "nav"),
        "stafett_url": server.fhir,
        "stafett_token": reader(NAV),
    }
    return [
        *pair(
            common("kindergarten", KINDERGARTEN, "barnehagesystem"),
            "barnehage",
            kindergarten,
            kindergarten,
        ),
        *pair(common("school", SCHOOL, "skolesystem"), "skole", school, school),
        *pair(
            common("health_station", HEALTH, "helsestasjon-fhir"), "helsestasjon", station, station
        ),
        *pair(
            common("child_welfare", CHILD_WELFARE, "barnevern"),
            "barnevern",
            agency_source,
            agency_sink,
        ),
        *pair(common("nav", NAV, "nav", NAV_OPERATOR), "nav", nav_source, nav_sink),
    ]


@contextlib.contextmanager
def year_stack(
    postgres_admin_url: str, kafka_bootstrap: str, tmp: Callable[[str], Path]
) -> Iterator[Year]:
    """Run everything until the block ends; `tmp(name)` makes a fresh directory."""
    database = new_postgres_database(postgres_admin_url)
    run = uuid.uuid4().hex[:8]
    nav_topic = f"nav.bti.v1.aar-{run}"
    state = tmp("state")
    apps = {
        "kindergarten": kindergarten_app(
            KindergartenConfig(data_dir=None, api_key=KINDERGARTEN_KEY)
        ),
        "school": school_app(SchoolConfig(data_dir=tmp("skole"))),
        "station": station_app(HealthStationConfig(data_dir=None, token=STATION_TOKEN)),
        "agency": agency_app(
            AgencySettings(agency_interval_s=0.1, resend_interval_s=1.0, lease_s=3.0)
        ),
        "nav": nav_app(
            NavSettings(
                bootstrap=kafka_bootstrap,
                topic=nav_topic,
                group_id=f"nav-bti-{run}",
                max_poll_interval_ms=5000,
                session_timeout_ms=6000,
                heartbeat_interval_ms=1000,
                fetch_max_wait_ms=20,
            )
        ),
    }
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(running(app)) for name, app in apps.items()}
        server = stack.enter_context(live_server(database_url=database, data_dir=tmp("data")))
        orgs = _register_directory(server)
        bus = KafkaBus(
            kafka_bootstrap,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_interval_ms=20000,
            fetch_max_wait_ms=20,
        )
        configs = [
            ConnectorConfig.model_validate(c)
            for c in _connectors(server, urls, kafka_bootstrap, nav_topic, run, state)
        ]
        _skip_history(
            kafka_bootstrap,
            {
                f"stafett-connect-{c.name}": topics.outbound(c.organization)
                for c in configs
                if c.kind == "sink"
            },
        )
        worker = Worker(server.settings, bus=bus, components=("relay", "router", "ingest"))
        worker.start()
        stack.callback(worker.stop)
        runtime = ConnectorRuntime(
            bus=bus,
            connectors=configs,
            checkpoints=FileCheckpointStore(tmp("checkpoints")),
            factories=factories(),
        )
        runtime.start()
        stack.callback(runtime.stop)
        clients = {
            "kindergarten": httpx.Client(
                base_url=urls["kindergarten"], headers={"X-Api-Key": KINDERGARTEN_KEY}, timeout=10
            ),
            "school": httpx.Client(base_url=urls["school"], timeout=10),
            "station": httpx.Client(base_url=urls["station"], timeout=10),
            "agency": httpx.Client(base_url=urls["agency"], timeout=10),
            "nav": httpx.Client(base_url=urls["nav"], timeout=10),
        }
        for client in clients.values():
            stack.callback(client.close)
        year = Year(
            server=server,
            worker=worker,
            bus=bus,
            runtime=runtime,
            orgs=orgs,
            kindergarten=clients["kindergarten"],
            school=clients["school"],
            station=clients["station"],
            agency=clients["agency"],
            nav=clients["nav"],
        )
        year.state["run"] = run
        yield year


def child_reference(year: Year, fnr: str) -> str | None:
    """Return `Patient/<id>` of a person in Stafett, as the mother sees it."""
    found = year.family().get("/Patient", params={"identifier": f"{FNR_SYSTEM}|{fnr}"})
    entries = found.json().get("entry", []) if found.status_code == 200 else []
    return f"Patient/{entries[0]['resource']['id']}" if entries else None
