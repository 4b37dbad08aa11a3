"""The school simulator over real HTTP: OAuth2, records, endretEtter, CSV export, faults."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.common.clock import OSLO
from simulators.common.server import running
from simulators.school import SchoolConfig, create_app

NORA = "15832151200"
MOTHER = "04868941214"
SCHOOL = "927364514"
CLIENT = {"grant_type": "client_credentials", "client_id": "stafett", "client_secret": "s3cret"}
HEADER = "tiltak_id;personnummer;tittel;status;fra_dato;evaluer_dato;ansvarlig_enhet;endret"


class FakeNow:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.value = datetime(2026, 9, 7, 9, 12, tzinfo=OSLO)

    def __call__(self) -> datetime:
        return self.value


def config(data_dir: Path, **overrides: Any) -> SchoolConfig:
    settings: dict[str, Any] = {
        "data_dir": data_dir,
        "clients": {"stafett": "s3cret"},
        "expires_in": 60,
        "seed": True,
        "fault_seed": 3,
    }
    return SchoolConfig(**(settings | overrides))


@pytest.fixture(scope="module")
def clock() -> FakeNow:
    return FakeNow()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("school")


@pytest.fixture(scope="module")
def base_url(data_dir: Path, clock: FakeNow) -> Iterator[str]:
    with running(create_app(config(data_dir, now=clock))) as url:
        yield url


def token(base_url: str) -> str:
    response = httpx.post(base_url + "/oauth/token", data=CLIENT)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token(base_url)}"}
    with httpx.Client(base_url=base_url + "/api", headers=headers, timeout=10) as client:
        yield client


@pytest.fixture
def sim(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url + "/_sim", timeout=10) as client:
        yield client


def pupil(fnr: str, **changes: Any) -> dict[str, Any]:
    body = {
        "personnummer": fnr,
        "navn": {"fornavn": "Ola", "etternavn": "Nordmann"},
        "trinn": 3,
        "skole": SCHOOL,
        "stafettlogg": None,
    }
    return body | changes


def measure(elev_id: int = 5501, **changes: Any) -> dict[str, Any]:
    body = {
        "elevId": elev_id,
        "tittel": "Fast voksen i overganger",
        "beskrivelse": "Tar imot om morgenen",
        "ansvarligEnhet": SCHOOL,
        "status": "PLANLAGT",
        "fra": "2026-08-17",
        "evaluerDato": "2026-11-30",
        "evaluering": None,
    }
    return body | changes


def test_school_token_endpoint_follows_client_credentials(base_url: str) -> None:
    issued = httpx.post(base_url + "/oauth/token", data=CLIENT)
    assert issued.json()["token_type"] == "Bearer"
    assert issued.json()["expires_in"] == 60
    assert issued.headers["Cache-Control"] == "no-store"
    basic = httpx.post(
        base_url + "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("stafett", "s3cret"),
    )
    assert basic.status_code == 200
    cases = [
        (CLIENT | {"client_secret": "wrong"}, 401, "invalid_client"),
        (CLIENT | {"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"client_id": "stafett", "client_secret": "s3cret"}, 400, "invalid_request"),
    ]
    for form, status, error in cases:
        response = httpx.post(base_url + "/oauth/token", data=form)
        assert (response.status_code, response.json()["error"]) == (status, error)
    as_json = httpx.post(base_url + "/oauth/token", json=CLIENT)
    assert as_json.status_code == 400


def test_school_api_rejects_missing_invalid_and_expired_tokens(
    base_url: str, clock: FakeNow, sim: httpx.Client
) -> None:
    assert httpx.get(base_url + "/api/elever").status_code == 401
    bad = httpx.get(base_url + "/api/elever", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert bad.headers["WWW-Authenticate"].startswith("Bearer")
    assert bad.json()["tittel"] == "Ikke autentisert"

    headers = {"Authorization": f"Bearer {token(base_url)}"}
    assert httpx.get(base_url + "/api/elever/5501", headers=headers).status_code == 200
    clock.value += timedelta(seconds=61)
    assert httpx.get(base_url + "/api/elever/5501", headers=headers).status_code == 401

    headers = {"Authorization": f"Bearer {token(base_url)}"}
    assert sim.post("/tokens/expire").json()["utlopt"] >= 1
    assert httpx.get(base_url + "/api/elever/5501", headers=headers).status_code == 401


def test_school_seed_matches_the_documented_example(api: httpx.Client) -> None:
    elev = api.get("/elever/5501").json()
    assert elev["personnummer"] == NORA
    assert elev["stafettlogg"]["nivaa"] == 2
    assert elev["endretAv"] == "bruker"
    assert api.get("/tiltak/9001").json()["status"] == "AKTIV"
    assert api.get("/samtykker/301").json()["foresatt"] == [MOTHER]


def test_school_changed_after_is_a_safe_cursor(api: httpx.Client, sim: httpx.Client) -> None:
    everything = api.get("/tiltak").json()["tiltak"]
    cursor = everything[-1]["endret"]
    made = [sim.post("/tiltak", json=measure(tittel=f"Tiltak {i}")).json() for i in range(3)]
    assert [m["tiltakId"] for m in made] == list(
        range(made[0]["tiltakId"], made[0]["tiltakId"] + 3)
    )
    changed = api.get("/tiltak", params={"endretEtter": cursor}).json()["tiltak"]
    assert [m["tiltakId"] for m in changed] == [m["tiltakId"] for m in made]
    stamps = [datetime.fromisoformat(m["endret"]) for m in changed]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == 3  # strictly increasing, even within one millisecond

    updated = api.put(f"/tiltak/{made[0]['tiltakId']}", json=made[0] | {"status": "AKTIV"}).json()
    assert updated["endretAv"] == "stafett"
    after = api.get("/tiltak", params={"endretEtter": changed[-1]["endret"]}).json()["tiltak"]
    assert [m["tiltakId"] for m in after] == [made[0]["tiltakId"]]
    # "+" left unencoded arrives as a space and is still understood
    raw = api.get("/tiltak?endretEtter=" + changed[-1]["endret"]).json()["tiltak"]
    assert [m["tiltakId"] for m in raw] == [made[0]["tiltakId"]]
    assert api.get("/tiltak", params={"endretEtter": "i går"}).status_code == 422
    assert api.get("/tiltak", params={"elevId": 5501}).json()["tiltak"]
    assert api.get("/elever", params={"personnummer": NORA}).json()["elever"][0]["elevId"] == 5501


def test_school_put_is_idempotent_and_checks_if_match(api: httpx.Client) -> None:
    current = api.get("/tiltak/9001")
    body = current.json()
    same = api.put("/tiltak/9001", json=body)
    assert same.json()["endret"] == body["endret"]
    assert same.headers["ETag"] == current.headers["ETag"]
    changed = api.put(
        "/tiltak/9001", json=body | {"evaluering": {"dato": "2026-11-30", "tekst": "Bra"}}
    )
    assert changed.headers["ETag"] != current.headers["ETag"]
    stale = api.put("/tiltak/9001", json=body, headers={"If-Match": current.headers["ETag"]})
    assert stale.status_code == 412
    created = api.post("/tiltak", json=measure())
    assert created.status_code == 201
    assert created.headers["Location"] == f"/api/tiltak/{created.json()['tiltakId']}"
    assert api.get("/tiltak/999999").status_code == 404
    assert api.get("/tiltak/abc").json()["status"] == 404
    assert api.put("/elever/5502", json=pupil(NORA) | {"elevId": 5501}).status_code == 422


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/tiltak", measure(status="Aktiv"), "status"),
        ("/tiltak", measure(ansvarligEnhet="927364515"), "ansvarligEnhet"),
        ("/tiltak", measure(elevId=1), "elevId"),
        ("/tiltak", measure(evaluering={"tekst": "x"}), "evaluering.dato"),
        ("/tiltak", measure(elevId="5501"), "elevId"),
        ("/tiltak", {"elevId": 5501}, "tittel"),
    ],
)
def test_school_rejects_invalid_measures(
    api: httpx.Client, path: str, body: dict[str, Any], field: str
) -> None:
    response = api.post(path, json=body)
    assert response.status_code == 422
    assert response.json()["tittel"] == "Valideringsfeil"
    assert field in {p["felt"] for p in response.json()["feil"]}


def test_school_pupils_and_consents(api: httpx.Client, sim: httpx.Client) -> None:
    bad = sim.post("/elever", json=pupil("15832151201", trinn=11))
    assert {p["felt"] for p in bad.json()["feil"]} == {"personnummer", "trinn"}
    assert sim.post("/elever", json=pupil(NORA)).status_code == 409
    elev = sim.post("/elever", json=pupil("22918731958")).json()
    assert elev["elevId"] > 5501
    consent = api.get("/samtykker/301").json()
    withdrawn = api.put("/samtykker/301", json=consent | {"trukket": True})
    assert withdrawn.json()["trukket"] is True
    assert withdrawn.json()["endretAv"] == "stafett"
    assert (
        api.put("/samtykker/301", json=consent | {"vedlegg": {"pdf": "ikke base64!"}}).status_code
        == 422
    )


def test_school_csv_export_has_the_documented_shape(
    api: httpx.Client, sim: httpx.Client, data_dir: Path
) -> None:
    sim.post("/tiltak", json=measure(tittel="Lesekurs; æøå", status="AKTIV"))
    result = sim.post("/export", json={"dato": "2026-09-07"}).json()
    path = data_dir / "eksport" / "tiltak-20260907.csv"
    assert result["fil"] == path.name
    raw = path.read_bytes()
    assert raw.startswith(HEADER.encode() + b"\r\n")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter=";"))
    measures = {m["tiltakId"]: m for m in api.get("/tiltak").json()["tiltak"]}
    assert len(rows) == result["rader"] == len(measures)
    by_id = {int(r["tiltak_id"]): r for r in rows}
    assert by_id[9001]["personnummer"] == NORA
    assert by_id[9001]["ansvarlig_enhet"] == SCHOOL
    assert by_id[9001]["endret"] == measures[9001]["endret"]
    quoted = next(r for r in rows if r["tittel"].startswith("Lesekurs"))
    assert quoted["tittel"] == "Lesekurs; æøå"
    assert quoted["status"] == "AKTIV"
    today = sim.post("/export").json()
    assert today["fil"].startswith("tiltak-2026")  # the simulated clock's date


def test_school_export_timer_and_restart(tmp_path: Path) -> None:
    settings = config(tmp_path, export_interval_s=0.2, export_dir=tmp_path / "ut")
    with running(create_app(settings)) as url:
        deadline = time.monotonic() + 5
        while not list((tmp_path / "ut").glob("tiltak-*.csv")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list((tmp_path / "ut").glob("tiltak-*.csv"))
        headers = {"Authorization": f"Bearer {token(url)}"}
        before = httpx.get(url + "/api/tiltak/9001", headers=headers).json()
    with running(create_app(settings)) as url:
        # tokens live in memory: a restart forgets them
        assert httpx.get(url + "/api/tiltak/9001", headers=headers).status_code == 401
        headers = {"Authorization": f"Bearer {token(url)}"}
        assert httpx.get(url + "/api/tiltak/9001", headers=headers).json() == before
        created = httpx.post(url + "/api/tiltak", json=measure(), headers=headers).json()
        assert created["tiltakId"] == 9002
        assert datetime.fromisoformat(created["endret"]) > datetime.fromisoformat(before["endret"])
        assert len(httpx.get(url + "/api/elever", headers=headers).json()["elever"]) == 1


def test_school_faults_hit_api_and_token_endpoint(base_url: str, sim: httpx.Client) -> None:
    sim.post("/faults", json={"error_rate": 0.25})
    try:
        with httpx.Client(base_url=base_url) as client:
            statuses = [client.post("/oauth/token", data=CLIENT).status_code for _ in range(120)]
            failures = [client.get("/api/elever") for _ in range(40)]
    finally:
        sim.delete("/faults")
    assert set(statuses) == {200, 500}
    assert 15 <= statuses.count(500) <= 45
    failed = next(r for r in failures if r.status_code == 500)
    assert failed.json()["tittel"] == "Intern feil"
