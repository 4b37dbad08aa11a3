"""The pages over plain HTTP: who may open them, CSRF, language, audit of the DPO's looks,
what the family sees, and consent changes that take effect at once in the FHIR API."""

from __future__ import annotations

import base64
import re
import time
from typing import Any

import httpx
import pytest

from service.web.messages import MESSAGES
from tests.consent_api.world import ORGS, World
from tests.support import fhir_headers
from tests.web.conftest import csrf_of, page_client

pytestmark = pytest.mark.e2e


def _dpo_audit(world: World, patient_id: str) -> list[dict[str, Any]]:
    response = world.client("dpo:").get(
        "/AuditEvent", params={"patient": patient_id, "_count": "500", "_sort": "-date"}
    )
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json().get("entry", [])]


def _queries(event: dict[str, Any]) -> list[str]:
    return [
        base64.b64decode(entity["query"]).decode()
        for entity in event.get("entity", [])
        if entity.get("query")
    ]


@pytest.mark.parametrize("path", ["/dpo/", "/dpo/avviste", "/familie/"])
def test_no_token_is_401_with_a_login_hint(world: World, path: str) -> None:
    with page_client(world, None) as client:
        response = client.get(path)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "www-authenticate" in response.headers
    assert f'href="/logg-inn?neste={path}"' in response.text


@pytest.mark.parametrize(
    ("who", "path"),
    [
        ("citizen:ada.mother", "/dpo/"),
        ("teacher:kindergarten", "/dpo/"),
        ("nurse:", "/dpo/avviste"),
        ("system:nav", "/dpo/"),
        ("dpo:", "/familie/"),
        ("teacher:school", "/familie/"),
    ],
)
def test_wrong_role_is_403(world: World, who: str, path: str) -> None:
    with page_client(world, who) as client:
        response = client.get(path)
    assert response.status_code == 403, response.text
    assert "<h1>" in response.text


def test_dpo_pages_need_the_role_on_every_page(world: World) -> None:
    ada = world.children["ada"]
    with page_client(world, "teacher:kindergarten") as client:
        for path in (
            f"/dpo/barn/{ada.patient}",
            f"/dpo/barn/{ada.patient}/tilgang",
            f"/dpo/barn/{ada.patient}/rapport.csv",
            f"/dpo/barn/{ada.patient}/rapport.pdf",
        ):
            assert client.get(path).status_code == 403, path


def test_a_refused_token_is_401(world: World) -> None:
    with httpx.Client(base_url=world.server.base_url, cookies={"stafett_okt": "not.a.jwt"}) as c:
        response = c.get("/dpo/")
    assert response.status_code == 401
    assert "/logg-inn" in response.text


def test_login_keeps_the_token_in_a_strict_httponly_cookie(world: World) -> None:
    with page_client(world, None) as client:
        form = client.get("/logg-inn", params={"neste": "/dpo/avviste"})
        assert form.status_code == 200
        token = world.token("dpo:")
        response = client.post(
            "/logg-inn",
            data={"csrf": csrf_of(form.text), "token": token, "neste": "/dpo/avviste"},
        )
        assert response.status_code == 303
        assert response.headers["location"] == "/dpo/avviste"
        cookie = next(
            v for k, v in response.headers.multi_items() if k == "set-cookie" and "okt=" in v
        )
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie
        assert "Secure" not in cookie  # plain http in the tests; https sets Secure
        assert client.get("/dpo/avviste").status_code == 200


def test_login_refuses_a_foreign_next_and_a_missing_csrf(world: World) -> None:
    with page_client(world, None) as client:
        form = client.get("/logg-inn")
        response = client.post(
            "/logg-inn",
            data={"csrf": csrf_of(form.text), "token": world.token("dpo:"), "neste": "//evil.no"},
        )
        assert response.headers["location"] == "/dpo/"
    with page_client(world, None) as fresh:
        # no double-submit cookie: the form did not come from our login page
        response = fresh.post("/logg-inn", data={"csrf": "x", "token": world.token("dpo:")})
        assert response.status_code == 403


def test_login_with_a_bad_token_says_why(world: World) -> None:
    with page_client(world, None) as client:
        form = client.get("/logg-inn")
        response = client.post("/logg-inn", data={"csrf": csrf_of(form.text), "token": "abc"})
    assert response.status_code == 401
    assert "ble ikke godtatt" in response.text


def test_dpo_forms_refuse_a_missing_or_wrong_csrf_token(world: World, dpo: httpx.Client) -> None:
    fnr = world.children["ada"].fnr
    assert dpo.post("/dpo/finn", data={"fnr": fnr}).status_code == 403
    assert dpo.post("/dpo/finn", data={"fnr": fnr, "csrf": "forged"}).status_code == 403
    good = csrf_of(dpo.get("/dpo/").text)
    # another session's token does not fit this session
    with page_client(world, "dpo:") as other:
        assert other.post("/dpo/finn", data={"fnr": fnr, "csrf": good}).status_code == 403
    hostile = dpo.post(
        "/dpo/finn", data={"fnr": fnr, "csrf": good}, headers={"origin": "https://evil.no"}
    )
    assert hostile.status_code == 403
    response = dpo.post("/dpo/finn", data={"fnr": fnr, "csrf": good})
    assert response.status_code == 303
    assert response.headers["location"] == f"/dpo/barn/{world.children['ada'].patient}"


def test_family_forms_refuse_a_missing_csrf_token(world: World) -> None:
    dan = world.children["dan"]
    school = world.client("teacher:school")
    path = f"/familie/barn/{dan.patient}/tjeneste/{world.org_ids['school']}/trekk"
    with page_client(world, "citizen:dan.mother") as mother:
        assert mother.get(path).status_code == 200
        assert mother.post(path, data={}).status_code == 403
        assert mother.post(path, data={"csrf": "nope"}).status_code == 403
    # nothing was withdrawn
    assert school.get(f"/CarePlan?patient={dan.patient}").json()["total"] == 1


def test_bokmal_by_default_english_on_request(world: World) -> None:
    with page_client(world, "dpo:") as client:
        default = client.get("/dpo/")
        assert '<html lang="nb">' in default.text
        assert MESSAGES["nb"]["dpo.title"] in default.text
        english = client.get("/dpo/", params={"lang": "en"})
        assert '<html lang="en">' in english.text
        assert MESSAGES["en"]["dpo.title"] in english.text
        assert "stafett_sprak=en" in english.headers.get("set-cookie", "")
        # the choice is kept
        assert '<html lang="en">' in client.get("/dpo/").text
        assert '<html lang="nb">' in client.get("/dpo/", params={"lang": "nb"}).text
    with page_client(world, "citizen:ada.mother") as client:
        header = client.get("/familie/", headers={"accept-language": "en-GB,en;q=0.9"})
        assert '<html lang="en">' in header.text
        assert MESSAGES["en"]["family.title"] in header.text
        norwegian = client.get("/familie/", headers={"accept-language": "nn-NO,en;q=0.5"})
        assert '<html lang="nb">' in norwegian.text
    with page_client(world, None) as client:
        assert '<html lang="en">' in client.get("/dpo/", params={"lang": "en"}).text


def test_every_text_exists_in_both_languages() -> None:
    assert set(MESSAGES["nb"]) == set(MESSAGES["en"])
    from pathlib import Path  # noqa: PLC0415

    templates = Path(__file__).resolve().parents[2] / "service" / "web" / "templates"
    used = {
        key
        for path in templates.glob("*.html")
        for key in re.findall(r't\("([a-z_.0-9]+)"\s*[,)]', path.read_text())
    }
    assert used
    assert used <= set(MESSAGES["nb"])


_RAW_KEY = re.compile(
    r">[^<]*\b(?:family|consent|action|class|dpo|filter|report|outcome|kind|detail|task|goal|log"
    r"|level|error|login)\.[a-z]"
)


@pytest.mark.parametrize("lang", ["nb", "en"])
def test_no_page_shows_a_missing_text_key(world: World, lang: str) -> None:
    ada, nora = world.children["ada"], world.children["nora"]
    pages = [
        ("dpo:", "/dpo/"),
        ("dpo:", f"/dpo/barn/{ada.patient}"),
        ("dpo:", f"/dpo/barn/{ada.patient}/tilgang"),
        ("dpo:", "/dpo/avviste?fra=2026-01-01"),
        ("citizen:nora.mother", "/familie/"),
        ("citizen:nora.mother", f"/familie/barn/{nora.patient}"),
        (
            "citizen:nora.mother",
            f"/familie/barn/{nora.patient}/tjeneste/{world.org_ids['nav']}/endre",
        ),
        (
            "citizen:ada.mother",
            f"/familie/barn/{ada.patient}/tjeneste/{world.org_ids['kindergarten']}/trekk",
        ),
        (None, "/logg-inn"),
    ]
    for who, path in pages:
        with page_client(world, who) as client:
            response = client.get(path, params={"lang": lang})
        assert response.status_code == 200, (path, response.text[:500])
        assert f'<html lang="{lang}">' in response.text
        assert _RAW_KEY.search(response.text) is None, (path, _RAW_KEY.search(response.text))


def test_dpo_looks_are_audited(world: World, dpo: httpx.Client) -> None:
    ada = world.children["ada"]
    response = dpo.get(f"/dpo/barn/{ada.patient}/tilgang", params={"utfall": "denied"})
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 5
    mine: list[dict[str, Any]] = []
    while not mine and time.monotonic() < deadline:
        mine = [
            e
            for e in _dpo_audit(world, ada.patient)
            if any(f"/dpo/barn/{ada.patient}/tilgang" in q for q in _queries(e))
        ]
        time.sleep(0.05)
    assert mine, "the DPO's look at the access log was not audited"
    event = mine[0]
    assert event["outcome"] == "0"
    agents = [a for a in event["agent"] if a.get("requestor")]
    assert agents[0]["who"]["identifier"]["value"] == "01817010055"
    assert any(
        e.get("what", {}).get("reference") == f"Patient/{ada.patient}" for e in event["entity"]
    )
    assert "utfall=denied" in _queries(event)[0]


def test_dpo_sees_consents_with_the_signed_form(world: World, dpo: httpx.Client) -> None:
    ada = world.children["ada"]
    page = dpo.get(f"/dpo/barn/{ada.patient}")
    assert page.status_code == 200
    assert ada.fnr in page.text
    assert "Solsikken barnehage" in page.text
    consent_id = ada.ids["consent"].split("/")[1]
    link = f"/dpo/barn/{ada.patient}/samtykke/{consent_id}/skjema"
    assert link in page.text
    form = dpo.get(link)
    assert form.status_code == 200
    assert form.headers["content-type"] == "application/pdf"
    assert form.content == b"%PDF-1.4 signed consent form"
    # a consent of another child is not served under this child
    ben = world.children["ben"]
    assert dpo.get(f"/dpo/barn/{ben.patient}/samtykke/{consent_id}/skjema").status_code == 404
    # never the log's content
    assert "Fast voksen i garderoben" not in page.text


def test_dpo_access_log_filters(world: World, dpo: httpx.Client) -> None:
    ada = world.children["ada"]
    assert world.client("system:nav").get(f"/{ada.ids['careplan']}").status_code == 404
    assert world.client("nurse:").get(f"/{ada.ids['careplan']}").status_code == 200
    base = f"/dpo/barn/{ada.patient}/tilgang"
    denied = dpo.get(base, params={"utfall": "denied", "org": ORGS["nav"]})
    assert denied.status_code == 200
    assert denied.text.count("outcome-denied") >= 1
    assert "outcome-permitted" not in denied.text.split("<tbody>")[1]
    permitted = dpo.get(base, params={"utfall": "permitted", "org": ORGS["health"]})
    assert ORGS["health"] in permitted.text.split("<tbody>")[1]
    assert "outcome-denied" not in permitted.text.split("<tbody>")[1]
    future = dpo.get(base, params={"fra": "2099-01-01"})
    assert MESSAGES["nb"]["access.none"] in future.text
    bad = dpo.get(base, params={"fra": "igår"})
    assert bad.status_code == 400
    assert MESSAGES["nb"]["filter.error.fra"] in bad.text


def test_dpo_exports_csv_and_pdf(world: World, dpo: httpx.Client) -> None:
    ada = world.children["ada"]
    csv = dpo.get(f"/dpo/barn/{ada.patient}/rapport.csv")
    assert csv.status_code == 200
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("recorded,action,outcome,who,organization")
    pdf = dpo.get(f"/dpo/barn/{ada.patient}/rapport.pdf", params={"lang": "en"})
    assert pdf.status_code == 200
    assert pdf.content.startswith(b"%PDF")
    assert "attachment" in pdf.headers["content-disposition"]


def test_dpo_find_errors(world: World, dpo: httpx.Client) -> None:
    csrf = csrf_of(dpo.get("/dpo/").text)
    invalid = dpo.post("/dpo/finn", data={"fnr": "12345678901", "csrf": csrf})
    assert invalid.status_code == 400
    assert 'aria-invalid="true"' in invalid.text
    unknown = dpo.post("/dpo/finn", data={"fnr": "01817010055", "csrf": csrf})
    assert unknown.status_code == 200
    assert MESSAGES["nb"]["dpo.find.none"] in unknown.text
    assert dpo.get("/dpo/barn/no-such-child").status_code == 404
    assert dpo.get("/dpo/finnes-ikke").status_code == 404


def test_a_guardian_without_parental_responsibility_sees_nothing(world: World) -> None:
    ada = world.children["ada"]
    with page_client(world, "citizen:ada.aunt") as aunt:
        index = aunt.get("/familie/")
        assert index.status_code == 200
        assert MESSAGES["nb"]["family.none.heading"] in index.text
        assert ada.patient not in index.text
        page = aunt.get(f"/familie/barn/{ada.patient}")
        assert page.status_code == 404
        assert "Uro i samlingsstund" not in page.text


def test_a_youth_below_the_read_age_sees_nothing(world: World) -> None:
    ada = world.children["ada"]  # five years old
    with page_client(world, "citizen:ada.self") as youth:
        assert MESSAGES["nb"]["family.none.heading"] in youth.get("/familie/").text
        assert youth.get(f"/familie/barn/{ada.patient}").status_code == 404


def test_the_youth_sees_hidden_entries_the_guardian_does_not(world: World) -> None:
    ben = world.children["ben"]  # fourteen
    with page_client(world, "citizen:ben.self") as youth:
        index = youth.get("/familie/")
        assert MESSAGES["nb"]["family.my_log"] in index.text
        own = youth.get(f"/familie/barn/{ben.patient}")
        assert "Samtale med ungdommen alene" in own.text
        assert MESSAGES["nb"]["family.hidden"] in own.text
        assert MESSAGES["nb"]["family.youth.young"].split("{")[0] in own.text
        assert "/trekk" not in own.text  # fourteen: the parents consent
    with page_client(world, "citizen:ben.mother") as mother:
        page = mother.get(f"/familie/barn/{ben.patient}")
        assert "Møte med foreldre" in page.text
        assert "Samtale med ungdommen alene" not in page.text


def test_family_timeline_shows_levels_holder_measures_and_meetings(world: World) -> None:
    nora = world.children["nora"]
    with page_client(world, "citizen:nora.mother") as mother:
        page = mother.get(f"/familie/barn/{nora.patient}")
    assert page.status_code == 200
    text = page.text
    for expected in (
        "Nivå 2",
        "Nivå 1",
        "Stafettholder",
        "Språkgruppe i barnehagen",
        "Evalueres",
        "08.12.2026",
        "Samarbeidsmøte: evaluering av nivå 1",
        "Lysglimt",
        "c) Overføring til annet nivå",
        "Solsikken barnehage",
    ):
        assert expected in text, expected


def test_family_grants_narrows_and_withdraws_through_the_api(world: World) -> None:
    cai = world.children["cai"]
    school = world.client("teacher:school")
    org = world.org_ids["school"]
    assert school.get(f"/{cai.ids['task']}").status_code == 404
    with page_client(world, "citizen:cai.father") as father:
        form = father.get(f"/familie/barn/{cai.patient}/tjeneste/{org}/endre")
        assert form.status_code == 200
        csrf = csrf_of(form.text)
        until = "2027-06-30"
        granted = father.post(
            f"/familie/barn/{cai.patient}/tjeneste/{org}/endre",
            data={
                "csrf": csrf,
                "handling": "access",
                "del": ["Task", "CarePlan"],
                "gyldig_til": until,
            },
        )
        assert granted.status_code == 303, granted.text
        assert "melding=granted" in granted.headers["location"]
        # effective at once, read-only, and only the parts chosen
        assert school.get(f"/{cai.ids['task']}").status_code == 200
        assert school.get(f"/{cai.ids['note']}").status_code == 404
        assert (
            school.post(
                "/Task",
                json={
                    "resourceType": "Task",
                    "status": "requested",
                    "intent": "plan",
                    "for": {"reference": f"Patient/{cai.patient}"},
                },
                headers=fhir_headers(),
            ).status_code
            == 403
        )
        page = father.get(f"/familie/barn/{cai.patient}")
        assert "Fjellvik skole" in page.text.split('id="tjenester"')[1].split("</table>")[0]
        # narrow: measures only
        narrowed = father.post(
            f"/familie/barn/{cai.patient}/tjeneste/{org}/endre",
            data={"csrf": csrf, "handling": "access", "del": "Task", "gyldig_til": until},
        )
        assert narrowed.status_code == 303
        assert "melding=changed" in narrowed.headers["location"]
        assert school.get(f"/{cai.ids['careplan']}").status_code == 404
        assert school.get(f"/{cai.ids['task']}").status_code == 200
        consents = world.client("citizen:cai.father").get(f"/Consent?patient={cai.patient}").json()
        statuses = sorted(e["resource"]["status"] for e in consents["entry"])
        assert statuses == ["active", "active", "inactive"]
        # a bad form is answered with the form and its errors, nothing written
        bad = father.post(
            f"/familie/barn/{cai.patient}/tjeneste/{org}/endre",
            data={"csrf": csrf, "gyldig_til": "2001-01-01"},
        )
        assert bad.status_code == 400
        assert 'aria-invalid="true"' in bad.text
        withdrawn = father.post(
            f"/familie/barn/{cai.patient}/tjeneste/{org}/trekk", data={"csrf": csrf}
        )
        assert withdrawn.status_code == 303
    assert school.get(f"/{cai.ids['task']}").status_code == 404
    # the kindergarten's consent was not touched
    assert world.client("teacher:kindergarten").get(f"/{cai.ids['task']}").status_code == 200


def test_withdrawing_one_service_of_a_shared_consent_keeps_the_other(world: World) -> None:
    ada = world.children["ada"]  # one consent names the kindergarten and the health station
    health = world.org_ids["health"]
    with page_client(world, "citizen:ada.mother") as mother:
        path = f"/familie/barn/{ada.patient}/tjeneste/{health}/trekk"
        csrf = csrf_of(mother.get(path).text)
        assert mother.post(path, data={"csrf": csrf}).status_code == 303
    assert world.client("nurse:").get(f"/{ada.ids['task']}").status_code == 404
    assert world.client("teacher:kindergarten").get(f"/{ada.ids['task']}").status_code == 200
