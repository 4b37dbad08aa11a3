"""The kindergarten simulator over real HTTP: API key, records, change feed, faults."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from simulators.common.ids import is_valid_fnr, is_valid_orgnr
from simulators.common.server import running
from simulators.common.store import JsonStore
from simulators.kindergarten import KindergartenConfig, create_app
from tests.support import synthetic_fnr

KEY = {"X-Api-Key": "test-key"}
NORA = "15832151200"
MOTHER = "04868941214"
UNIT = "912837467"
HEALTH = "945182733"


def child(fnr: str, **changes: Any) -> dict[str, Any]:
    body = {
        "fodselsnummer": fnr,
        "fornavn": "Nora",
        "etternavn": "Eksempelsen",
        "fodselsdato": "2021-03-15",
        "logg": {
            "opprettet": "2026-08-31",
            "niva": "1",
            "oppmerksomhet": "Sier lite i grupper",
            "stafettholder": {"ansattId": "A-17", "navn": "Kari Lærer", "enhet": UNIT},
            "status": "aktiv",
        },
        "foresatte": [{"fodselsnummer": MOTHER, "navn": "Mona", "foreldreansvar": "felles"}],
    }
    return body | changes


def measure(fnr: str = NORA, **changes: Any) -> dict[str, Any]:
    body = {
        "barn": fnr,
        "beskrivelse": "Språkgruppe",
        "ansvarlig": UNIT,
        "status": "avtalt",
        "startdato": "2026-09-07",
        "evalueringsdato": "2026-10-19",
    }
    return body | changes


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kindergarten")


@pytest.fixture(scope="module")
def base_url(data_dir: Path) -> Iterator[str]:
    config = KindergartenConfig(data_dir=data_dir, api_key="test-key", seed=True, fault_seed=7)
    with running(create_app(config)) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, headers=KEY, timeout=10) as client:
        yield client


@pytest.fixture
def sim(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url + "/_sim", timeout=10) as client:
        yield client


def all_changes(api: httpx.Client, after: int = 0) -> list[dict[str, Any]]:
    return list(
        api.get("/api/v1/endringer", params={"etter": after, "antall": 500}).json()["endringer"]
    )


def test_kindergarten_requires_the_api_key(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        for headers in ({}, {"X-Api-Key": "wrong"}):
            response = client.get("/api/v1/barn/B-1001", headers=headers)
            assert response.status_code == 401
            assert response.json() == {"melding": "Mangler eller ugyldig API-nøkkel"}
        assert client.get("/api/v1/endringer").status_code == 401


def test_kindergarten_seed_has_the_documented_ids(api: httpx.Client) -> None:
    barn = api.get("/api/v1/barn/B-1001")
    assert barn.status_code == 200
    assert barn.json()["fodselsnummer"] == NORA
    assert barn.json()["skjult"] is False
    tiltak = api.get("/api/v1/tiltak?barn=" + NORA).json()["tiltak"]
    assert [t["id"][-5:] for t in tiltak][:1] == ["-0412"]
    assert api.get("/api/v1/samtykker/S-88").json()["deleMed"] == [UNIT, HEALTH]


def test_kindergarten_feed_marks_user_and_api_writes_and_put_is_idempotent(
    api: httpx.Client, sim: httpx.Client
) -> None:
    created = sim.post("/barn", json=child(synthetic_fnr(random.Random(1))))
    assert created.status_code == 201
    barn = created.json()
    assert barn["id"].startswith("B-")
    assert created.headers["Location"] == f"/api/v1/barn/{barn['id']}"
    last = all_changes(api)[-1]
    assert (last["type"], last["id"], last["kilde"]) == ("barn", barn["id"], "bruker")

    barn["logg"]["niva"] = "2"
    first = api.put(f"/api/v1/barn/{barn['id']}", json=barn)
    assert first.status_code == 200
    assert first.json()["logg"]["niva"] == "2"
    changes = all_changes(api)
    assert (changes[-1]["id"], changes[-1]["kilde"]) == (barn["id"], "api")
    assert changes[-1]["sekvens"] == changes[-2]["sekvens"] + 1

    again = api.put(f"/api/v1/barn/{barn['id']}", json=barn)
    assert again.status_code == 200
    assert again.headers["ETag"] == first.headers["ETag"]
    assert all_changes(api) == changes  # nothing changed, nothing in the feed


def test_kindergarten_feed_pages_with_cursor(api: httpx.Client, sim: httpx.Client) -> None:
    start = int(api.get("/api/v1/endringer", params={"etter": 0, "antall": 500}).json()["neste"])
    for i in range(5):
        sim.post("/tiltak", json=measure(beskrivelse=f"Tiltak {i}"))
    seen: list[int] = []
    cursor, pages = str(start), 0
    while True:
        page = api.get("/api/v1/endringer", params={"etter": cursor, "antall": 2}).json()
        seen += [e["sekvens"] for e in page["endringer"]]
        cursor, pages = page["neste"], pages + 1
        if not page["flere"]:
            break
    assert seen == list(range(start + 1, start + 6))
    assert pages == 3
    assert cursor == str(start + 5)
    beyond = api.get("/api/v1/endringer", params={"etter": start + 99}).json()
    assert beyond == {"endringer": [], "neste": str(start + 99), "flere": False}
    assert api.get("/api/v1/endringer", params={"etter": "abc"}).status_code == 422
    assert api.get("/api/v1/endringer", params={"antall": 0}).status_code == 422


def test_kindergarten_measure_crud_etag_and_404(api: httpx.Client) -> None:
    created = api.post("/api/v1/tiltak", json=measure())
    assert created.status_code == 201
    tiltak = created.json()
    year = tiltak["id"].split("-")[1]
    assert tiltak["id"] == f"T-{year}-{int(tiltak['id'][-4:]):04d}"
    assert tiltak["evalueringer"] == []
    assert all_changes(api)[-1] == all_changes(api)[-1] | {"type": "tiltak", "kilde": "api"}

    url = f"/api/v1/tiltak/{tiltak['id']}"
    etag = api.get(url).headers["ETag"]
    tiltak["status"] = "pagar"
    assert api.put(url, json=tiltak, headers={"If-Match": etag}).status_code == 200
    stale = api.put(url, json=tiltak | {"status": "pause"}, headers={"If-Match": etag})
    assert stale.status_code == 412
    assert api.get(url).json()["status"] == "pagar"

    missing = api.get("/api/v1/tiltak/T-1999-0001")
    assert missing.status_code == 404
    assert "T-1999-0001" in missing.json()["melding"]
    assert api.put("/api/v1/barn/B-9999", json=child(NORA)).status_code == 404
    assert api.get("/api/v1/ukjent").status_code == 404


@pytest.mark.parametrize(
    ("body", "field", "text"),
    [
        (measure(fnr="15832151201"), "barn", "fødselsnummer"),
        (measure(ansvarlig="912837468"), "ansvarlig", "organisasjonsnummer"),
        (measure(status="ferdig"), "status", "tillatt er"),
        (measure(startdato="07.09.2026"), "startdato", "ÅÅÅÅ-MM-DD"),
        ({k: v for k, v in measure().items() if k != "beskrivelse"}, "beskrivelse", "fylles ut"),
        (measure(ekstra=1), "ekstra", "Ukjent felt"),
        (measure(evalueringer=[{"dato": "2026-10-19"}]), "evalueringer[0].tekst", "fylles ut"),
        (measure(fnr=MOTHER), "barn", "Ukjent barn"),
    ],
)
def test_kindergarten_rejects_invalid_measures(
    api: httpx.Client, body: dict[str, Any], field: str, text: str
) -> None:
    response = api.post("/api/v1/tiltak", json=body)
    assert response.status_code == 422
    problems = {p["felt"]: p["melding"] for p in response.json()["feil"]}
    assert text in problems[field]


def test_kindergarten_validates_children_and_consents(api: httpx.Client, sim: httpx.Client) -> None:
    bad = sim.post("/barn", json=child("12345678901", foresatte=[{"fodselsnummer": MOTHER}]))
    assert bad.status_code == 422
    fields = {p["felt"] for p in bad.json()["feil"]}
    assert fields == {"fodselsnummer", "foresatte[0].navn", "foresatte[0].foreldreansvar"}
    assert sim.post("/barn", json=child(NORA)).status_code == 409  # already registered
    not_json = api.put(
        "/api/v1/barn/B-1001", content=b"{nei", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 422
    assert not_json.json()["melding"] == "Ugyldig JSON"

    consent = api.get("/api/v1/samtykker/S-88").json()
    wrong = api.put("/api/v1/samtykker/S-88", json=consent | {"gyldigTil": "2020-01-01"})
    assert wrong.status_code == 422
    assert wrong.json()["feil"][0]["felt"] == "gyldigTil"
    synthetic = [synthetic_fnr(random.Random(i)) for i in range(20)]
    assert all(is_valid_fnr(f) for f in synthetic)
    assert is_valid_orgnr(UNIT)
    assert not is_valid_orgnr("912837468")


def test_kindergarten_hiding_a_child_stops_api_writes_but_not_withdrawal(
    api: httpx.Client, sim: httpx.Client
) -> None:
    fnr = synthetic_fnr(random.Random(2))
    barn = sim.post("/barn", json=child(fnr)).json()
    consent = sim.post(
        "/samtykker",
        json={
            "barn": fnr,
            "signertAv": [MOTHER],
            "signertDato": "2026-08-31",
            "gyldigFra": "2026-08-31",
            "gyldigTil": "2027-08-31",
            "status": "gyldig",
            "deleMed": [UNIT],
        },
    ).json()
    assert consent["id"].startswith("S-")

    hidden = api.delete(f"/api/v1/barn/{barn['id']}/deling")
    assert hidden.status_code == 204
    assert api.get(f"/api/v1/barn/{barn['id']}").json()["skjult"] is True
    assert all_changes(api)[-1] | {"endret": ""} == {
        "sekvens": all_changes(api)[-1]["sekvens"],
        "type": "barn",
        "id": barn["id"],
        "endret": "",
        "kilde": "api",
    }
    assert api.put(f"/api/v1/barn/{barn['id']}", json=barn).status_code == 409
    assert api.post("/api/v1/tiltak", json=measure(fnr)).status_code == 409
    withdrawn = api.put(f"/api/v1/samtykker/{consent['id']}", json=consent | {"status": "trukket"})
    assert withdrawn.status_code == 200
    assert withdrawn.json()["status"] == "trukket"
    assert (
        api.get("/api/v1/samtykker", params={"barn": fnr}).json()["samtykker"][0]["status"]
        == "trukket"
    )

    assert sim.post(f"/barn/{barn['id']}/deling").json()["skjult"] is False
    assert api.put(f"/api/v1/barn/{barn['id']}", json=barn).status_code == 200


def test_kindergarten_staff_evaluate_and_store_is_inspectable(
    api: httpx.Client, sim: httpx.Client
) -> None:
    tiltak = api.post("/api/v1/tiltak", json=measure()).json()
    evaluated = sim.post(
        f"/tiltak/{tiltak['id']}/evalueringer",
        json={"dato": "2026-10-19", "tekst": "Nora deltar mer", "ansattId": "A-17"},
    )
    assert evaluated.status_code == 200
    assert evaluated.json()["evalueringer"][-1]["tekst"] == "Nora deltar mer"
    assert all_changes(api)[-1]["kilde"] == "bruker"
    store = sim.get("/store").json()
    assert store["tiltak"][tiltak["id"]]["versjon"] == 2
    assert store["sekvens"] == len(store["endringer"])


def test_kindergarten_faults_fail_and_hang_at_the_configured_rate(
    base_url: str, api: httpx.Client, sim: httpx.Client
) -> None:
    assert sim.post("/faults", json={"error_rate": 0.3}).json()["error_rate"] == 0.3
    statuses = [api.get("/api/v1/barn/B-1001").status_code for _ in range(200)]
    failures = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 40 <= failures <= 80
    assert sim.get("/store").status_code == 200  # the admin surface is never faulted
    failed = next(
        r for r in (api.get("/api/v1/barn/B-1001") for _ in range(50)) if r.status_code == 500
    )
    assert failed.json() == {"melding": "Intern feil i barnehagesystemet"}

    sim.post("/faults", json={"timeout_rate": 0.5, "timeout_s": 0.6})
    timeouts = 0
    with httpx.Client(base_url=base_url, headers=KEY, timeout=0.25) as impatient:
        for _ in range(10):
            try:
                impatient.get("/api/v1/barn/B-1001")
            except httpx.TimeoutException:
                timeouts += 1
    assert 2 <= timeouts <= 8
    assert sim.delete("/faults").json() == {
        "error_rate": 0.0,
        "timeout_rate": 0.0,
        "timeout_s": 5.0,
    }
    assert {api.get("/api/v1/barn/B-1001").status_code for _ in range(20)} == {200}
    assert sim.post("/faults", json={"error_rate": 0.7, "timeout_rate": 0.5}).status_code == 422


def test_kindergarten_restart_keeps_records_and_sequence(tmp_path: Path) -> None:
    config = KindergartenConfig(data_dir=tmp_path, api_key="test-key", seed=True)
    with running(create_app(config)) as url, httpx.Client(base_url=url, headers=KEY) as api:
        api.put("/api/v1/tiltak/" + all_changes(api)[1]["id"], json=measure(status="pause"))
        before = all_changes(api)
    assert (tmp_path / "barnehage.json").exists()
    with running(create_app(config)) as url, httpx.Client(base_url=url, headers=KEY) as api:
        assert all_changes(api) == before  # --seed does not seed twice
        assert api.get("/api/v1/tiltak/" + before[1]["id"]).json()["status"] == "pause"
        created = api.post("/api/v1/tiltak", json=measure()).json()
        after = all_changes(api, before[-1]["sekvens"])
        assert [(c["sekvens"], c["id"]) for c in after] == [(len(before) + 1, created["id"])]
        assert int(created["id"][-4:]) == int(before[1]["id"][-4:]) + 1


def test_kindergarten_store_rolls_back_a_failed_transaction(tmp_path: Path) -> None:
    store = JsonStore(tmp_path / "s.json", initial=lambda: {"n": 0})
    with store.transaction() as data:
        data["n"] = 1

    def fail() -> None:
        with store.transaction() as data:
            data["n"] = 2
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail()
    assert store.snapshot() == {"n": 1}
    assert JsonStore(tmp_path / "s.json", initial=dict).snapshot() == {"n": 1}
