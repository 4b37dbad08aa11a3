"""Fixtures of the page tests: the consent tests' small municipality plus the demo log."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.consent_api.world import ORGS, Child, World, open_log, permit
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, LiveServer, fhir_headers, synthetic_fnr

MUNICIPALITY = "936451284"
DEMO = Path(__file__).resolve().parents[2] / "examples" / "stafettlogg" / "demo-transaction.json"
NORA_FNR = "15832151200"
KARI_FNR = "04868941214"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_path() -> str | None:
    """Return the Chromium to drive: $STAFETT_CHROMIUM, Debian's /usr/bin/chromium, or PATH."""
    configured = os.environ.get("STAFETT_CHROMIUM")
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_skip_reason() -> str | None:
    """Return why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if chromium_path() is None:
        return (
            "no Chromium found (/usr/bin/chromium or $STAFETT_CHROMIUM); install Debian's "
            "package with `apt-get install -y chromium` (make test does this when run as root "
            "with apt-get); Playwright's own browser download does not work here"
        )
    return None


def pytest_report_header() -> str:
    """Say at the start of the run whether the browser tests will run, and why not."""
    reason = browser_skip_reason()
    if reason is None:
        return f"stafett browser tests: headless Chromium at {chromium_path()}"
    return f"stafett browser tests: SKIPPED, {reason}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print, at the end of the run, why the browser tests were skipped (if they were)."""
    reason = browser_skip_reason()
    if reason is not None:
        terminalreporter.write_line(f"stafett browser tests (tests/web) skipped: {reason}")


def _directory(world: World) -> None:
    admin = world.client("teacher:kindergarten")
    for name, number in {**ORGS, "municipality": MUNICIPALITY}.items():
        response = admin.post(
            "/Organization",
            json={
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": number}],
                "name": {
                    "kindergarten": "Solsikken barnehage",
                    "school": "Fjellvik skole",
                    "health": "Fjellvik helsestasjon og skolehelsetjeneste",
                    "nav": "NAV Fjellvik",
                    "municipality": "Fjellvik kommune",
                }[name],
                "type": [
                    {
                        "coding": [
                            {
                                "system": "https://stafett.no/fhir/CodeSystem/service-type",
                                "code": "kommune" if name == "municipality" else "annen",
                            }
                        ]
                    }
                ],
            },
            headers=fhir_headers(),
        )
        assert response.status_code == 201, response.text
        world.org_ids[name] = response.json()["id"]
    for key, system in (
        ("teacher-kindergarten", FNR_SYSTEM),
        ("teacher-school", FNR_SYSTEM),
        ("nurse", "urn:oid:2.16.578.1.12.4.1.4.4"),
    ):
        response = admin.post(
            "/Practitioner",
            json={
                "resourceType": "Practitioner",
                "identifier": [{"system": system, "value": world.staff[key]}],
            },
            headers=fhir_headers(),
        )
        assert response.status_code == 201, response.text


def _open(world: World, name: str, opener: str, birth: str, orgs: tuple[str, ...]) -> Child:
    child = Child(name.capitalize(), synthetic_fnr())
    response = open_log(
        world.client(f"teacher:{opener}"),
        child,
        birth_date=birth,
        consent_provision=permit(world.org_ids, *orgs),
        owner=world.org_ids[opener],
    )
    assert response.status_code == 200, response.text
    world.children[name] = child
    return child


def _demo(world: World) -> Child:
    """Load the demo log (levels, stafettholder, measures, meetings) as the kindergarten."""
    bundle = orjson.loads(DEMO.read_bytes())
    response = world.client("teacher:kindergarten").post(
        "", content=orjson.dumps(bundle), headers=fhir_headers()
    )
    assert response.status_code == 200, response.text
    locations = [e["response"]["location"] for e in response.json()["entry"]]
    patient = next(loc for loc in locations if loc.startswith("Patient/"))
    nora = Child("Nora", NORA_FNR, patient=patient.split("/")[1])
    nora.guardians = {"mother": KARI_FNR}
    world.children["nora"] = nora
    return nora


@pytest.fixture(scope="module")
def world(consent_server: LiveServer) -> World:
    """Services, staff and five children: ada (5), ben (14), cai (8), dan (9) and Nora (demo)."""
    staff = {
        "teacher-kindergarten": synthetic_fnr(),
        "teacher-school": synthetic_fnr(),
        "nurse": "9144896",
    }
    w = World(server=consent_server, org_ids={}, staff=staff, children={})
    _directory(w)
    _open(w, "ada", "kindergarten", "2021-03-15", ("kindergarten", "health"))
    _open(w, "ben", "school", "2012-05-01", ("school",))
    _open(w, "cai", "kindergarten", "2018-01-20", ("kindergarten",))
    _open(w, "dan", "school", "2017-02-02", ("school",))
    _demo(w)
    return w


def page_client(world: World, who: str | None) -> httpx.Client:
    """Return an HTTP client for the pages with `who`'s token in the session cookie."""
    cookies = {"stafett_okt": world.token(who)} if who else {}
    return httpx.Client(base_url=world.server.base_url, cookies=cookies, timeout=30)


def csrf_of(html: str) -> str:
    """Return the CSRF token of the first form on a page."""
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None, html[:2000]
    return found.group(1)


@pytest.fixture
def dpo(world: World) -> Iterator[httpx.Client]:
    """A data protection officer's page client."""
    with page_client(world, "dpo:") as client:
        yield client
