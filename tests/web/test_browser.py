"""Click through the pages in headless Chromium (Debian's package, driven by Playwright).

A guardian withdraws the school's access with the keyboard alone, the school's next API read
is refused and audited, and the data protection officer finds the refusal among the refused
attempts and exports the family's report. The pages are checked for the basics of
accessibility on the way: a `lang` attribute, one h1 and headings in order, a label on every
field, and text contrast of at least 4.5:1. The browser tests run on SQLite only; the HTTP
tests (test_pages_http.py) cover PostgreSQL and SQLite.
"""

from __future__ import annotations

import contextlib
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.consent_api.world import ORGS, World
from tests.web.conftest import CHROMIUM_ARGS, browser_skip_reason, chromium_path

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

_SKIP = browser_skip_reason()
pytestmark = [pytest.mark.e2e, pytest.mark.slow]
if _SKIP is not None:
    pytestmark.append(pytest.mark.skip(reason=_SKIP))

# the function only: Playwright calls a string that starts like a function, so no comment lines
A11Y_CHECK = "\n".join(
    line
    for line in (Path(__file__).parent / "a11y_check.js").read_text().splitlines()
    if not line.startswith("//")
)


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run the browser tests on SQLite only (the HTTP tests cover both databases)."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'stafett.db'}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Launch Debian's Chromium headless through Playwright."""
    from playwright.sync_api import sync_playwright  # noqa: PLC0415

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


def _context(browser: Browser, world: World) -> BrowserContext:
    context = browser.new_context(
        base_url=world.server.base_url, locale="nb-NO", accept_downloads=True
    )
    context.set_default_timeout(15_000)
    return context


def check_page(page: Page) -> None:
    """Fail on the accessibility basics the pages promise."""
    problems: list[str] = page.evaluate(A11Y_CHECK)
    assert problems == [], f"{page.url}: {problems}"


def login(page: Page, token: str, next_path: str) -> None:
    """Log in through the login form, pasting a development token."""
    page.goto(f"/logg-inn?neste={next_path}")
    check_page(page)
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Logg inn").click()
    page.wait_for_url(re.compile(re.escape(next_path) + r"$"))


def tab_to(page: Page, name: str, *, limit: int = 120) -> None:
    """Press Tab until the focused element's text is `name` (keyboard only)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused: str = page.evaluate("() => document.activeElement.textContent.trim()")
        if focused == name:
            return
    raise AssertionError(f"could not reach {name!r} with the Tab key")


def pdf_text(data: bytes) -> str:
    """Return the PDF's content streams, inflated where compressed."""
    parts: list[str] = []
    for match in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, re.DOTALL):
        raw = match.group(1)
        with contextlib.suppress(zlib.error):
            raw = zlib.decompress(raw)
        parts.append(raw.decode("latin-1"))
    return "\n".join(parts)


def _read(download: Any) -> bytes:
    path = download.path()
    assert path is not None
    return Path(path).read_bytes()


def test_guardian_withdraws_the_school_and_the_dpo_finds_the_refusal(
    browser: Browser, world: World
) -> None:
    ben = world.children["ben"]
    school = world.client("teacher:school")
    assert school.get(f"/{ben.ids['careplan']}").status_code == 200

    family = _context(browser, world)
    page = family.new_page()
    login(page, world.token("citizen:ben.mother"), "/familie/")
    check_page(page)
    page.get_by_role("link", name="Loggen til Ben Testesen").click()
    page.wait_for_url(f"**/familie/barn/{ben.patient}")
    check_page(page)
    assert page.get_by_role("heading", name="Tidslinje").is_visible()
    assert "Fast voksen i garderoben" in page.content()
    services = page.get_by_role("table", name="Tjenester med samtykke")
    assert "Fjellvik skole" in services.inner_text()

    # first "click": the withdraw link, reached and followed with the keyboard
    tab_to(page, "Trekk tilbake tilgangen for Fjellvik skole")
    page.keyboard.press("Enter")
    page.wait_for_url("**/trekk")
    check_page(page)
    # second "click": the confirmation button, again by keyboard
    tab_to(page, "Ja, trekk tilbake tilgangen for Fjellvik skole")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"melding=withdrawn"))
    check_page(page)
    assert "Tilgangen er trukket tilbake" in page.get_by_role("status").inner_text()
    assert "Ingen tjenester kan se loggen nå." in page.content()
    family.close()

    # the school's very next API read is refused (existence hidden) and audited
    assert school.get(f"/{ben.ids['careplan']}").status_code == 404
    assert school.get(f"/Task?patient={ben.patient}").json()["total"] == 0

    officer = _context(browser, world)
    page = officer.new_page()
    login(page, world.token("dpo:"), "/dpo/")
    check_page(page)
    page.get_by_role("link", name="Se avviste forsøk").click()
    page.wait_for_url("**/dpo/avviste")
    check_page(page)
    table = page.get_by_role("table")
    row = (
        table.get_by_role("row")
        .filter(has_text=ORGS["school"])
        .filter(has_text=ben.ids["careplan"])
    )
    assert row.count() >= 1, table.inner_text()
    assert "Avvist" in row.first.inner_text()
    row.first.get_by_role("link", name=f"Patient/{ben.patient}").click()
    page.wait_for_url(f"**/dpo/barn/{ben.patient}/tilgang")
    check_page(page)

    page.get_by_label("Utfall").select_option("denied")
    page.get_by_label("Organisasjon").select_option(ORGS["school"])
    page.get_by_role("button", name="Vis").click()
    page.wait_for_url(re.compile(r"utfall=denied"))
    check_page(page)
    assert ben.ids["careplan"] in page.get_by_role("table").inner_text()

    with page.expect_download() as csv_download:
        page.get_by_role("link", name="Last ned som CSV").click()
    csv_text = _read(csv_download.value).decode()
    lines = csv_text.splitlines()
    assert lines[0].startswith("recorded,action,outcome,who,organization")
    refused = [line for line in lines[1:] if ben.ids["careplan"] in line]
    assert refused
    assert all(",denied," in line and ORGS["school"] in line for line in refused)

    with page.expect_download() as pdf_download:
        page.get_by_role("link", name="Last ned som PDF").click()
    pdf = _read(pdf_download.value)
    assert pdf.startswith(b"%PDF")
    assert ben.fnr in pdf_text(pdf)

    # the consent timeline shows the withdrawal, by whom
    page.goto("/dpo/")
    page.get_by_label("Fødselsnummer eller D-nummer").fill(ben.fnr)
    page.get_by_role("button", name="Finn barnet").click()
    page.wait_for_url(f"**/dpo/barn/{ben.patient}")
    check_page(page)
    timeline = page.get_by_role("list").filter(has_text="Samtykke trukket tilbake")
    assert ben.guardians["mother"] in timeline.inner_text()
    officer.close()


def test_guardian_grants_and_narrows_a_service_in_two_clicks(
    browser: Browser, world: World
) -> None:
    nora = world.children["nora"]
    teacher = world.client("teacher:kindergarten")
    plan = teacher.get(f"/CarePlan?patient={nora.patient}").json()["entry"][0]["resource"]["id"]
    notes = teacher.get(f"/Communication?patient={nora.patient}").json()["entry"]
    note = notes[0]["resource"]["id"]
    school = world.client("teacher:school")
    assert school.get(f"/CarePlan/{plan}").status_code == 404

    context = _context(browser, world)
    page = context.new_page()
    login(page, world.token("citizen:nora.mother"), "/familie/")
    page.get_by_role("link", name="Loggen til Nora Eksempelsen").click()
    check_page(page)
    assert "Nivå 2" in page.content()
    assert "Språkgruppe i barnehagen" in page.content()

    page.get_by_role("link", name="Gi Fjellvik skole tilgang").click()  # click 1
    check_page(page)
    page.get_by_role("button", name="Gi samtykke").click()  # click 2
    page.wait_for_url(re.compile(r"melding=granted"))
    check_page(page)
    assert school.get(f"/CarePlan/{plan}").status_code == 200
    assert school.get(f"/Communication/{note}").status_code == 200

    page.get_by_role("link", name="Begrens eller endre tilgangen for Fjellvik skole").click()
    check_page(page)
    page.get_by_label("Møter, notater og lysglimt").uncheck()
    page.get_by_role("button", name="Lagre endringen").click()
    page.wait_for_url(re.compile(r"melding=changed"))
    assert school.get(f"/Communication/{note}").status_code == 404
    assert school.get(f"/CarePlan/{plan}").status_code == 200
    context.close()


def test_switching_language_in_the_browser(browser: Browser, world: World) -> None:
    context = _context(browser, world)
    page = context.new_page()
    login(page, world.token("dpo:"), "/dpo/")
    assert page.get_attribute("html", "lang") == "nb"
    page.get_by_role("link", name="English").click()
    page.wait_for_url(re.compile(r"lang=en"))
    assert page.get_attribute("html", "lang") == "en"
    assert page.get_by_role("heading", level=1).inner_text() == "Data protection officer"
    check_page(page)
    page.get_by_role("link", name="See refused attempts").click()
    assert page.get_attribute("html", "lang") == "en"
    page.get_by_role("link", name="Norsk (bokmål)").click()
    page.wait_for_url(re.compile(r"lang=nb"))
    assert page.get_by_role("heading", level=1).inner_text() == "Avviste forsøk"
    context.close()
