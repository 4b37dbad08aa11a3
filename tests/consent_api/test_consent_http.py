"""The family decides: consent enforced on every path, through real HTTP, on both databases.

A table of who asks for what, and what they must get; then the writes, withdrawals and
transactions that change what others see. Denials of reads answer 404 (existence is hidden),
denials of writes 403; searches never count what the caller cannot see.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from service.auth import DevIssuer
from tests.consent_api.world import (
    HIDDEN,
    ORGS,
    Child,
    World,
    consent_resource,
    open_log,
    permit,
)
from tests.support import FNR_SYSTEM, ORGNR_SYSTEM, LiveServer, fhir_headers, synthetic_fnr

pytestmark = pytest.mark.e2e

IRCP = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}
    ]
}


@pytest.fixture(scope="module")
def world(consent_server: LiveServer) -> World:
    staff = {
        "teacher-kindergarten": synthetic_fnr(),
        "teacher-school": synthetic_fnr(),
        "nurse": "9144896",
    }
    w = World(server=consent_server, org_ids={}, staff=staff, children={})
    admin = w.client("teacher:kindergarten")
    for name, number in ORGS.items():
        response = admin.post(
            "/Organization",
            json={
                "resourceType": "Organization",
                "identifier": [{"system": ORGNR_SYSTEM, "value": number}],
                "name": name,
            },
            headers=fhir_headers(),
        )
        assert response.status_code == 201, response.text
        w.org_ids[name] = response.json()["id"]
    for _name, value, system in (
        ("teacher-kindergarten", staff["teacher-kindergarten"], FNR_SYSTEM),
        ("teacher-school", staff["teacher-school"], FNR_SYSTEM),
        ("nurse", staff["nurse"], "urn:oid:2.16.578.1.12.4.1.4.4"),
    ):
        response = admin.post(
            "/Practitioner",
            json={
                "resourceType": "Practitioner",
                "identifier": [{"system": system, "value": value}],
            },
            headers=fhir_headers(),
        )
        assert response.status_code == 201, response.text
    ids = w.org_ids
    # Ada (5): kindergarten reads and writes everything; the health station reads, but
    # neither Communications nor writes (nested exceptions).
    ada = Child("Ada", synthetic_fnr())
    ada_consent = permit(
        ids,
        "kindergarten",
        "health",
        nested=[
            {
                "type": "deny",
                "actor": [
                    {"role": IRCP, "reference": {"reference": f"Organization/{ids['health']}"}}
                ],
                "class": [
                    {"system": "http://hl7.org/fhir/resource-types", "code": "Communication"}
                ],
            },
            {
                "type": "deny",
                "actor": [
                    {"role": IRCP, "reference": {"reference": f"Organization/{ids['health']}"}}
                ],
                "action": [
                    {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/consentaction",
                                "code": c,
                            }
                        ]
                    }
                    for c in ("collect", "correct")
                ],
            },
        ],
    )
    response = open_log(
        w.client("teacher:kindergarten"),
        ada,
        birth_date="2021-03-15",
        consent_provision=ada_consent,
        owner=ids["kindergarten"],
    )
    assert response.status_code == 200, response.text
    # Ben (14): the school's log; Ben reads his own log, hidden entries included.
    ben = Child("Ben", synthetic_fnr())
    response = open_log(
        w.client("teacher:school"),
        ben,
        birth_date="2012-05-01",
        consent_provision=permit(ids, "school"),
        owner=ids["school"],
    )
    assert response.status_code == 200, response.text
    # Cai (8): a kindergarten log whose consent the family later withdraws.
    cai = Child("Cai", synthetic_fnr())
    response = open_log(
        w.client("teacher:kindergarten"),
        cai,
        birth_date="2018-01-20",
        consent_provision=permit(ids, "kindergarten"),
        owner=ids["kindergarten"],
    )
    assert response.status_code == 200, response.text
    # Dan (6): a kindergarten log that tests of recorded consents may change freely.
    dan = Child("Dan", synthetic_fnr())
    response = open_log(
        w.client("teacher:kindergarten"),
        dan,
        birth_date="2020-06-01",
        consent_provision=permit(ids, "kindergarten"),
        owner=ids["kindergarten"],
    )
    assert response.status_code == 200, response.text
    w.children.update(ada=ada, ben=ben, cai=cai, dan=dan)
    return w


def resolve(world: World, template: str) -> str:
    """Fill {child.label} (a "Type/id") and {child.id} (the Patient id) in a URL template."""
    values: dict[str, str] = {}
    for name, child in world.children.items():
        values[f"{name}.id"] = child.patient
        values[f"{name}.fnr"] = child.fnr
        for label, reference in child.ids.items():
            values[f"{name}.{label}"] = reference
            values[f"{name}.{label}_id"] = reference.split("/")[1]
    for name, org_id in world.org_ids.items():
        values[f"org.{name}"] = org_id
    return re.sub(r"\{([a-z_.]+)\}", lambda match: values[match.group(1)], template)


# (who, URL, status); reads denied by consent answer 404 so that existence stays hidden
READS = [
    ("teacher:kindergarten", "/{ada.careplan}", 200),
    ("teacher:kindergarten", "/{ada.task}", 200),
    ("teacher:kindergarten", "/{ada.note}", 200),
    ("teacher:kindergarten", "/{ada.hidden}", 200),
    ("teacher:kindergarten", "/{ada.patient}", 200),
    ("teacher:kindergarten", "/{ada.mother}", 200),
    ("teacher:kindergarten", "/{ada.consent}", 200),
    ("system:kindergarten", "/{ada.task}", 200),
    ("system:kindergarten", "/{ada.careplan}", 200),
    ("nurse:", "/{ada.careplan}", 200),
    ("nurse:", "/{ada.task}", 200),
    ("nurse:", "/{ada.note}", 404),
    ("nurse:", "/{ada.hidden}", 404),
    ("teacher:school", "/{ada.careplan}", 404),
    ("teacher:school", "/{ada.task}", 404),
    ("teacher:school", "/{ada.patient}", 404),
    ("teacher:school", "/{ada.consent}", 404),
    ("teacher:school", "/{ben.task}", 200),
    ("system:nav", "/{ada.task}", 404),
    ("system:nav", "/{ben.careplan}", 404),
    ("citizen:ada.mother", "/{ada.careplan}", 200),
    ("citizen:ada.mother", "/{ada.task}", 200),
    ("citizen:ada.mother", "/{ada.note}", 200),
    ("citizen:ada.mother", "/{ada.hidden}", 404),
    ("citizen:ada.mother", "/{ada.consent}", 200),
    ("citizen:ada.father", "/{ada.task}", 200),
    ("citizen:ada.father", "/{ada.hidden}", 404),
    ("citizen:ada.mother", "/{ben.task}", 404),
    ("citizen:ada.aunt", "/{ada.task}", 404),
    ("citizen:ada.aunt", "/{ada.careplan}", 404),
    ("citizen:ada.self", "/{ada.task}", 404),
    ("citizen:ben.self", "/{ben.task}", 200),
    ("citizen:ben.self", "/{ben.hidden}", 200),
    ("citizen:ben.mother", "/{ben.hidden}", 404),
    ("citizen:ben.mother", "/{ben.note}", 200),
    ("stranger:", "/{ada.task}", 404),
    ("stranger:", "/{ada.patient}", 404),
    ("dpo:", "/{ada.consent}", 200),
    ("dpo:", "/{ada.task}", 404),
    ("dpo:", "/{ada.careplan}", 404),
    ("teacher:kindergarten", "/{ada.task}/_history", 200),
    ("teacher:school", "/{ada.task}/_history", 404),
    ("teacher:school", "/{ada.task}/_history/1", 404),
    ("teacher:kindergarten", "/{ada.task}/_history/1", 200),
    ("teacher:kindergarten", "/AuditEvent", 403),
    ("citizen:ada.mother", "/AuditEvent", 403),
    ("dpo:", "/AuditEvent", 200),
    ("teacher:school", "/Organization/{org.kindergarten}", 200),
]


@pytest.mark.parametrize(("who", "url", "status"), READS, ids=[f"{w}-{u}" for w, u, _ in READS])
def test_reads(world: World, who: str, url: str, status: int) -> None:
    response = world.client(who).get(resolve(world, url))
    assert response.status_code == status, response.text
    if status == 404:
        assert response.json()["issue"][0]["code"] == "not-found"


# (who, URL, total): totals, _summary=count and includes never show what is hidden
SEARCHES = [
    ("teacher:kindergarten", "/Task?patient={ada.id}", 1),
    ("teacher:kindergarten", "/Communication?subject=Patient/{ada.id}", 2),
    ("teacher:kindergarten", "/Communication?subject=Patient/{ada.id}&_summary=count", 2),
    ("nurse:", "/Communication?subject=Patient/{ada.id}", 0),
    ("nurse:", "/Task?patient={ada.id}", 1),
    ("citizen:ada.mother", "/Communication?subject=Patient/{ada.id}", 1),
    ("citizen:ada.mother", "/Communication?subject=Patient/{ada.id}&_summary=count", 1),
    ("citizen:ben.self", "/Communication?subject=Patient/{ben.id}", 2),
    ("citizen:ben.mother", "/Communication?subject=Patient/{ben.id}", 1),
    ("teacher:school", "/Task?patient={ada.id}", 0),
    ("teacher:school", "/Task?subject.identifier=urn:oid:2.16.578.1.12.4.1.4.1|{ada.fnr}", 0),
    ("teacher:school", "/Task?_summary=count", 1),
    # two children named, one permitted: the hidden one's Tasks are neither shown nor counted
    ("teacher:school", "/Task?patient={ada.id},{ben.id}", 1),
    ("teacher:school", "/Task?patient={ada.id},{ben.id}&_summary=count", 1),
    ("teacher:school", "/Task?patient={ben.id}&_count=1&_summary=count", 1),
    ("teacher:school", "/Patient?identifier=urn:oid:2.16.578.1.12.4.1.4.1|{ada.fnr}", 0),
    ("system:nav", "/Task?_summary=count", 0),
    ("stranger:", "/CarePlan", 0),
    ("dpo:", "/CarePlan?_summary=count", 0),
    ("dpo:", "/Consent?patient={ada.id}", 1),
    ("citizen:ada.aunt", "/Task", 0),
    ("teacher:school", "/Task/_history", 1),
]


@pytest.mark.parametrize(
    ("who", "url", "total"), SEARCHES, ids=[f"{w}-{u}" for w, u, _ in SEARCHES]
)
def test_searches_count_only_what_is_visible(world: World, who: str, url: str, total: int) -> None:
    response = world.client(who).get(resolve(world, url))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total"] == total
    if "_summary=count" not in url and "_history" not in url:
        assert len(body.get("entry", [])) == total


INCLUDES = [
    ("teacher:kindergarten", 2),
    ("nurse:", 0),
    ("citizen:ada.mother", 1),
    ("teacher:school", None),
]


@pytest.mark.parametrize(("who", "included"), INCLUDES, ids=[w for w, _ in INCLUDES])
def test_revinclude_obeys_the_same_decision(world: World, who: str, included: int | None) -> None:
    url = resolve(world, "/CarePlan?_id={ada.careplan_id}&_revinclude=Communication:based-on")
    body = world.client(who).get(url).json()
    matches = [e for e in body.get("entry", []) if e["search"]["mode"] == "match"]
    includes = [e for e in body.get("entry", []) if e["search"]["mode"] == "include"]
    if included is None:
        assert body["total"] == 0
        assert not matches
        assert not includes
    else:
        assert len(matches) == 1
        assert len(includes) == included


def task_for(world: World, child: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "for": {"reference": f"Patient/{world.children[child].patient}"},
        "description": "Nytt tiltak",
    }


WRITES = [
    ("teacher:kindergarten", "ada", 201),
    ("system:kindergarten", "ada", 201),
    ("nurse:", "ada", 403),
    ("teacher:school", "ada", 403),
    ("system:nav", "ada", 403),
    ("citizen:ada.mother", "ada", 403),
    ("teacher:school", "ben", 201),
    ("teacher:kindergarten", "ben", 403),
]


@pytest.mark.parametrize(("who", "child", "status"), WRITES, ids=[f"{w}-{c}" for w, c, _ in WRITES])
def test_writes_need_a_permit_that_allows_writing(
    world: World, who: str, child: str, status: int
) -> None:
    response = world.client(who).post("/Task", json=task_for(world, child), headers=fhir_headers())
    assert response.status_code == status, response.text


def test_dpo_never_writes(world: World) -> None:
    response = world.client("dpo:").post(
        "/Task", json=task_for(world, "ada"), headers=fhir_headers()
    )
    assert response.status_code == 403


def test_update_of_a_log_entry_by_a_reader_only_is_refused(world: World) -> None:
    nurse = world.client("nurse:")
    task = nurse.get(resolve(world, "/{ada.task}")).json()
    response = nurse.put(
        resolve(world, "/{ada.task}"), json={**task, "status": "completed"}, headers=fhir_headers()
    )
    assert response.status_code == 403
    assert (
        world.client("teacher:kindergarten").get(resolve(world, "/{ada.task}")).json()["status"]
        == task["status"]
    )


def test_transaction_with_one_denied_entry_fails_whole(world: World) -> None:
    teacher = world.client("teacher:kindergarten")
    before = teacher.get(resolve(world, "/Task?patient={ada.id}&_summary=count")).json()["total"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": task_for(world, "ada"), "request": {"method": "POST", "url": "Task"}},
            {"resource": task_for(world, "ben"), "request": {"method": "POST", "url": "Task"}},
        ],
    }
    response = teacher.post("", json=bundle, headers=fhir_headers())
    assert response.status_code == 403
    after = teacher.get(resolve(world, "/Task?patient={ada.id}&_summary=count")).json()["total"]
    assert after == before


def test_batch_entries_are_decided_one_by_one(world: World) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": resolve(world, "{ada.task}")}},
            {"request": {"method": "GET", "url": resolve(world, "{ben.task}")}},
            {"request": {"method": "GET", "url": resolve(world, "Task?patient={ben.id}")}},
        ],
    }
    response = world.client("teacher:kindergarten").post("", json=bundle, headers=fhir_headers())
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[1]["response"]["status"] == "404"
    assert entries[2]["resource"]["total"] == 0


def test_opening_a_log_without_the_signed_form_is_refused(world: World, database_url: str) -> None:
    child = Child("Dag", synthetic_fnr())
    response = open_log(
        world.client("teacher:kindergarten"),
        child,
        birth_date="2020-02-02",
        consent_provision=permit(world.org_ids, "kindergarten"),
        owner=world.org_ids["kindergarten"],
        signed=False,
    )
    assert response.status_code == 403
    assert "sourceAttachment" in response.text or "signed" in response.text
    assert _stored_patients(database_url, child.fnr) == 0


@pytest.mark.parametrize(
    ("start", "end"),
    [("2025-01-01", "2025-12-31"), ("2030-01-01", "2030-12-31")],
    ids=["expired", "not-yet-valid"],
)
def test_opening_with_a_consent_out_of_period_is_refused(
    world: World, database_url: str, start: str, end: str
) -> None:
    child = Child("Eva", synthetic_fnr())
    response = open_log(
        world.client("teacher:kindergarten"),
        child,
        birth_date="2020-02-02",
        consent_provision=permit(world.org_ids, "kindergarten", start=start, end=end),
        owner=world.org_ids["kindergarten"],
    )
    assert response.status_code == 403
    assert _stored_patients(database_url, child.fnr) == 0


def test_professional_cannot_name_another_organisation_to_open_a_log(
    world: World, database_url: str
) -> None:
    child = Child("Fia", synthetic_fnr())
    response = open_log(
        world.client("teacher:kindergarten"),
        child,
        birth_date="2020-02-02",
        consent_provision=permit(world.org_ids, "school"),
        owner=world.org_ids["kindergarten"],
    )
    assert response.status_code == 403
    assert _stored_patients(database_url, child.fnr) == 0


def _stored_patients(database_url: str, fnr: str) -> int:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM search_token WHERE resource_type = 'Patient' "
                        "AND param = 'identifier' AND code = :fnr"
                    ),
                    {"fnr": fnr},
                ).scalar_one()
            )
    finally:
        engine.dispose()


def test_family_grants_a_new_service_and_withdraws_it_at_once(world: World) -> None:
    mother = world.client("citizen:cai.mother")
    school = world.client("teacher:school")
    assert school.get(resolve(world, "/{cai.task}")).status_code == 404
    consent = consent_resource(
        patient=f"Patient/{world.children['cai'].patient}",
        performer=resolve(world, "{cai.mother}"),
        provision=permit(world.org_ids, "school", actions=("access",)),
        signed=False,  # the family signs by logging in
    )
    created = mother.post("/Consent", json=consent, headers=fhir_headers())
    assert created.status_code == 201, created.text
    assert school.get(resolve(world, "/{cai.task}")).status_code == 200
    assert school.get(resolve(world, "/Task?patient={cai.id}")).json()["total"] == 1
    # read-only: the school may not write into Cai's log
    assert (
        school.post("/Task", json=task_for(world, "cai"), headers=fhir_headers()).status_code == 403
    )
    withdrawn = {**created.json(), "status": "inactive"}
    response = mother.put(f"/Consent/{withdrawn['id']}", json=withdrawn, headers=fhir_headers())
    assert response.status_code == 200, response.text
    # the very next request sees the withdrawal
    assert school.get(resolve(world, "/{cai.task}")).status_code == 404
    assert school.get(resolve(world, "/Task?patient={cai.id}")).json()["total"] == 0


def test_withdrawing_the_opening_consent_closes_the_log_to_the_kindergarten(world: World) -> None:
    teacher = world.client("teacher:kindergarten")
    assert teacher.get(resolve(world, "/{cai.careplan}")).status_code == 200
    father = world.client("citizen:cai.father")
    consent = father.get(resolve(world, "/{cai.consent}")).json()
    response = father.put(
        resolve(world, "/{cai.consent}"),
        json={**consent, "status": "inactive"},
        headers=fhir_headers(),
    )
    assert response.status_code == 200, response.text
    assert teacher.get(resolve(world, "/{cai.careplan}")).status_code == 404
    assert teacher.get(resolve(world, "/CarePlan?subject=Patient/{cai.id}")).json()["total"] == 0


@pytest.mark.parametrize("who", ["citizen:ada.aunt", "stranger:", "teacher:school", "dpo:"])
def test_who_may_not_consent(world: World, who: str) -> None:
    consent = consent_resource(
        patient=f"Patient/{world.children['ada'].patient}",
        performer=resolve(world, "{ada.aunt}"),
        provision=permit(world.org_ids, "nav"),
    )
    response = world.client(who).post("/Consent", json=consent, headers=fhir_headers())
    assert response.status_code == 403


def test_professional_records_consent_only_with_the_signed_form(world: World) -> None:
    teacher = world.client("teacher:kindergarten")
    consent = consent_resource(
        patient=f"Patient/{world.children['dan'].patient}",
        performer=resolve(world, "{dan.mother}"),
        provision=permit(world.org_ids, "school", actions=("access",)),
        signed=False,
    )
    refused = teacher.post("/Consent", json=consent, headers=fhir_headers())
    assert refused.status_code == 403
    consent_signed = consent_resource(
        patient=f"Patient/{world.children['dan'].patient}",
        performer=resolve(world, "{dan.mother}"),
        provision=permit(world.org_ids, "school", actions=("access",)),
    )
    recorded = teacher.post("/Consent", json=consent_signed, headers=fhir_headers())
    assert recorded.status_code == 201, recorded.text
    # the family sees every recorded consent
    mother = world.client("citizen:dan.mother")
    assert mother.get(f"/Consent/{recorded.json()['id']}").status_code == 200


def test_a_denied_read_leaves_an_audit_record(world: World) -> None:
    nav = world.client("system:nav")
    assert nav.get(resolve(world, "/{ben.careplan}")).status_code == 404
    dpo = world.client("dpo:")
    deadline = time.monotonic() + 5
    while True:
        events = dpo.get(
            "/AuditEvent",
            params={"patient": world.children["ben"].patient, "outcome": "8", "_count": "100"},
        ).json()
        denied = [
            e["resource"]
            for e in events.get("entry", [])
            if any(
                agent.get("who", {}).get("identifier", {}).get("value") == ORGS["nav"]
                for agent in e["resource"].get("agent", [])
            )
        ]
        if denied or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert denied, events
    event = denied[0]
    assert event["outcome"] == "8"
    assert event["subtype"][0]["code"] == "read"
    entities = [e.get("what", {}).get("reference") for e in event["entity"]]
    assert f"Patient/{world.children['ben'].patient}" in entities


def test_permitted_read_is_audited_with_the_deciding_consent(world: World) -> None:
    world.client("nurse:").get(resolve(world, "/{ada.task}"))
    events = (
        world.client("dpo:")
        .get(
            "/AuditEvent",
            params={"patient": world.children["ada"].patient, "outcome": "0", "_count": "200"},
        )
        .json()
    )
    consent_ref = resolve(world, "{ada.consent}")
    assert any(
        consent_ref in [e.get("what", {}).get("reference") for e in entry["resource"]["entity"]]
        for entry in events.get("entry", [])
    )


def _forged_tokens(world: World) -> Iterator[tuple[str, str]]:
    server = world.server
    good = world.token("teacher:kindergarten")
    header, payload, signature = good.split(".")
    yield "bad-signature", f"{header}.{payload}.{signature[::-1]}"
    none_header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').decode().rstrip("=")
    yield "alg-none", f"{none_header}.{payload}."
    other = DevIssuer.load_or_create(server.settings.data_dir / "other-issuer")
    yield (
        "unknown-key",
        other.issue_practitioner(
            hpr=None,
            pid=world.staff["teacher-kindergarten"],
            organization=ORGS["kindergarten"],
            audience=server.settings.audience,
        ),
    )
    # the same trusted key, but a clock two hours back: the token expired an hour ago
    past = DevIssuer(server.issuer._private_key, clock=lambda: time.time() - 7200)
    yield (
        "expired",
        past.issue_practitioner(
            hpr=None,
            pid=world.staff["teacher-kindergarten"],
            organization=ORGS["kindergarten"],
            audience=server.settings.audience,
            lifetime_seconds=3600,
        ),
    )
    yield (
        "wrong-audience",
        server.issuer.issue_practitioner(
            hpr=None,
            pid=world.staff["teacher-kindergarten"],
            organization=ORGS["kindergarten"],
            audience="someone-else",
        ),
    )


def test_forged_tokens_are_refused(world: World) -> None:
    for name, token in _forged_tokens(world):
        response = world.server.client(token).get(resolve(world, "/{ada.task}"))
        assert response.status_code == 401, name


def test_hidden_label_spelling_of_the_issue_is_honoured(world: World) -> None:
    hidden = world.client("teacher:kindergarten").get(resolve(world, "/{ada.hidden}")).json()
    assert HIDDEN in hidden["meta"]["security"]


STATUS = [
    ("dpo:", "kindergarten", True),
    ("dpo:", "nav", False),
    ("citizen:ada.mother", "health", True),
    ("citizen:ada.mother", "school", False),
    ("teacher:kindergarten", None, True),
    ("nurse:", None, True),
]


@pytest.mark.parametrize(
    ("who", "org", "permitted"), STATUS, ids=[f"{w}-{o}" for w, o, _ in STATUS]
)
def test_consent_status_answers_who_may_see_the_log(
    world: World, who: str, org: str | None, permitted: bool
) -> None:
    params = {"organization": ORGS[org]} if org else {}
    response = world.client(who).get(
        resolve(world, "/Patient/{ada.id}/$consent-status"), params=params
    )
    assert response.status_code == 200, response.text
    values = {p["name"]: p for p in response.json()["parameter"]}
    assert values["permitted"]["valueBoolean"] is permitted
    if (permitted and who != "citizen:ada.mother") or (org and permitted):
        assert values["consent"]["valueReference"]["reference"] == resolve(world, "{ada.consent}")


def test_consent_status_hides_children_the_caller_cannot_see(world: World) -> None:
    for who in ("teacher:school", "stranger:", "system:nav"):
        response = world.client(who).get(
            resolve(world, "/Patient/{ada.id}/$consent-status"),
            params={"organization": ORGS["kindergarten"]},
        )
        assert response.status_code == 404, who


def _cli(database_url: str, world: World, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAFETT_")}
    env.update(
        STAFETT_DATABASE_URL=database_url,
        STAFETT_DATA_DIR=str(world.server.settings.data_dir),
        STAFETT_LOG_LEVEL="WARNING",
    )
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


def test_dpo_cli_answers_who_saw_and_exports_the_family_report(
    world: World, database_url: str, tmp_path: Path
) -> None:
    assert world.client("system:nav").get(resolve(world, "/{ada.careplan}")).status_code == 404
    assert world.client("nurse:").get(resolve(world, "/{ada.careplan}")).status_code == 200
    time.sleep(0.2)
    ada = world.children["ada"]
    result = _cli(database_url, world, "who-saw", "--patient", ada.fnr, "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    careplan = resolve(world, "{ada.careplan}")
    seen = {(row["organization"], row["outcome"]) for row in rows if careplan in row["resources"]}
    assert (ORGS["nav"], "denied") in seen
    assert (ORGS["health"], "permitted") in seen
    export = tmp_path / "report.csv"
    result = _cli(
        database_url,
        world,
        "export",
        "--patient",
        ada.fnr,
        "--format",
        "csv",
        "--output",
        str(export),
    )
    assert result.returncode == 0, result.stderr
    lines = export.read_text().splitlines()
    assert lines[0].startswith("recorded,action,outcome,who,organization")
    assert len(lines) > 2
    denied = _cli(database_url, world, "denied", "--since", "2026-01-01", "--format", "json")
    assert denied.returncode == 0, denied.stderr
    assert all(row["outcome"] == "denied" for row in json.loads(denied.stdout))
    bad = _cli(database_url, world, "who-saw", "--patient", "12345678901")
    assert bad.returncode == 2
    assert "fødselsnummer" in bad.stderr


def test_a_service_joins_an_existing_log_with_its_own_signed_consent(world: World) -> None:
    """A service not yet named refers to the child and guardian by identifier, and the Consent
    naming it in the same transaction counts (its connector knows no Stafett ids)."""
    ada = world.children["ada"]
    nav = world.client("system:nav")
    patient_ref = f"Patient?identifier={FNR_SYSTEM}|{ada.fnr}"
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "plan",
        "for": {"reference": patient_ref},
        "description": "Oppfølging fra NAV",
    }
    alone = nav.post(
        "",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"resource": task, "request": {"method": "POST", "url": "Task"}}],
        },
        headers=fhir_headers(),
    )
    assert alone.status_code == 403, alone.text  # without a consent: no writing in the log
    consent = consent_resource(
        patient=patient_ref,
        performer=f"RelatedPerson?identifier={FNR_SYSTEM}|{ada.guardians['mother']}",
        provision=permit(world.org_ids, "nav"),
    )
    joined = nav.post(
        "",
        json={
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": consent, "request": {"method": "POST", "url": "Consent"}},
                {"resource": task, "request": {"method": "POST", "url": "Task"}},
            ],
        },
        headers=fhir_headers(),
    )
    assert joined.status_code == 200, joined.text
    created = joined.json()["entry"][1]["response"]["location"].split("/_history")[0]
    assert nav.get(f"/{created}").json()["for"]["reference"] == f"Patient/{ada.patient}"
