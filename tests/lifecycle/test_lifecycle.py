"""The data lifecycle end to end, through real HTTP and the CLI, on SQLite and PostgreSQL.

A log is opened, read in full by the family ($everything), corrected on the family's request,
closed ($close), archived (`stafett lifecycle archive`) and, once the retention has passed on a
clock the test controls, purged: afterwards no table holds a row about the child except the
deletion record, and a guardian's record that a sibling's log still uses survives until that
log is purged too.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle
from pypdf import PdfReader
from sqlalchemy import create_engine, inspect, text

from service.api.app import build_services
from service.api.deps import Services
from service.lifecycle.purge import Purger
from tests.consent_api.world import ORGS, Child, World, open_log, permit
from tests.support import ORGNR_SYSTEM, LiveServer, fhir_headers, synthetic_fnr

pytestmark = pytest.mark.e2e

TASK_TYPE = "https://stafett.no/fhir/CodeSystem/task-type"
NOTE = "Blåbærsyltetøy på tur \u2013 Ada smilte hele dagen"  # an en dash, outside Latin-1


@pytest.fixture(scope="module")
def world(consent_server: LiveServer) -> World:
    staff = {"teacher-kindergarten": synthetic_fnr(), "teacher-school": synthetic_fnr()}
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
    for name in ("ada", "bo"):
        child = Child(name.capitalize(), synthetic_fnr())
        response = open_log(
            admin,
            child,
            birth_date="2020-03-15",
            consent_provision=permit(w.org_ids, "kindergarten"),
            owner=w.org_ids["kindergarten"],
        )
        assert response.status_code == 200, response.text
        w.children[name] = child
    ada, bo = w.children["ada"], w.children["bo"]
    plan = ada.ids["careplan"]
    # a bright spot with Norwegian letters, and an open level Task for $close to finish
    for body in (
        {
            "resourceType": "Communication",
            "status": "completed",
            "subject": {"reference": f"Patient/{ada.patient}"},
            "basedOn": [{"reference": plan}],
            "sent": "2026-10-01T10:00:00+02:00",
            "payload": [{"contentString": NOTE}],
        },
        {
            "resourceType": "Task",
            "status": "in-progress",
            "intent": "plan",
            "code": {"coding": [{"system": TASK_TYPE, "code": "bti-level"}]},
            "for": {"reference": f"Patient/{ada.patient}"},
            "basedOn": [{"reference": plan}],
            "executionPeriod": {"start": "2026-09-01"},
            "owner": {"reference": f"Organization/{w.org_ids['kindergarten']}"},
        },
        # Bo's meeting note names Ada's mother (the same parent): Ada's RelatedPerson is shared
        {
            "resourceType": "Communication",
            "status": "completed",
            "subject": {"reference": f"Patient/{bo.patient}"},
            "basedOn": [{"reference": bo.ids["careplan"]}],
            "recipient": [{"reference": ada.ids["mother"]}],
            "payload": [{"contentString": "Møte med mor"}],
        },
    ):
        response = admin.post(f"/{body['resourceType']}", json=body, headers=fhir_headers())
        assert response.status_code == 201, response.text
    return w


@pytest.fixture(scope="module")
def services(consent_server: LiveServer) -> Iterator[Services]:
    built = build_services(consent_server.settings)
    yield built
    if built.repository.audit is not None:
        built.repository.audit.close()
    built.database.dispose()


def _everything(world: World, who: str, patient: str, **params: str) -> Any:
    return world.client(who).get(f"/Patient/{patient}/$everything", params=params)


def _ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e["search"]["mode"] == mode
    }


def test_everything_follows_the_family_rules(world: World) -> None:
    ada = world.children["ada"]
    mother = _everything(world, "citizen:ada.mother", ada.patient)
    assert mother.status_code == 200, mother.text
    bundle = mother.json()
    assert bundle["type"] == "searchset"
    seen = _ids(bundle)
    for label in ("patient", "mother", "father", "consent", "careplan", "task", "note"):
        assert ada.ids[label] in seen, label
    assert ada.ids["hidden"] not in seen  # hidden from guardians stays hidden
    assert bundle["total"] == len(seen)
    assert f"Organization/{world.org_ids['kindergarten']}" in _ids(bundle, "include")
    teacher = _everything(world, "teacher:kindergarten", ada.patient).json()
    assert ada.ids["hidden"] in _ids(teacher)  # the consented service sees the whole log
    # no consent, no parental responsibility, another child's parent: existence is hidden
    for who in ("teacher:school", "citizen:ada.aunt", "citizen:bo.mother"):
        assert _everything(world, who, ada.patient).status_code == 404, who


def test_everything_is_paged(world: World) -> None:
    ada = world.children["ada"]
    first = _everything(world, "citizen:ada.mother", ada.patient, _count="3").json()
    total = first["total"]
    seen = _ids(first)
    assert len(seen) == 3
    url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    while True:
        page = world.client("citizen:ada.mother").get(url).json()
        seen |= _ids(page)
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        url = nxt[0]
    assert len(seen) == total


def test_capability_statement_lists_the_operations(world: World) -> None:
    body = world.server.client(None).get("/metadata").json()
    by_type = {r["type"]: r for r in body["rest"][0]["resource"]}
    assert "everything" in {op["name"] for op in by_type["Patient"]["operation"]}
    assert "close" in {op["name"] for op in by_type["CarePlan"]["operation"]}


def test_rectification_request_flow(world: World, services: Services) -> None:
    ada = world.children["ada"]
    request = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_TYPE, "code": "rectification-request"}]},
        "for": {"reference": f"Patient/{ada.patient}"},
        "basedOn": [{"reference": ada.ids["careplan"]}],
        "focus": {"reference": ada.ids["note"]},
        "requester": {"reference": ada.ids["mother"]},
        "owner": {"reference": f"Organization/{world.org_ids['kindergarten']}"},
        "description": "Møtet var 3. september, ikke 3. oktober.",
    }
    mother = world.client("citizen:ada.mother")
    before = _outbox_rows(services, ada.patient)
    # not in someone else's name, and never a measure
    as_father = {**request, "requester": {"reference": ada.ids["father"]}}
    assert mother.post("/Task", json=as_father, headers=fhir_headers()).status_code == 403
    measure = {**request, "code": {"coding": [{"system": TASK_TYPE, "code": "measure"}]}}
    assert mother.post("/Task", json=measure, headers=fhir_headers()).status_code == 403
    created = mother.post("/Task", json=request, headers=fhir_headers())
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    # the stafettholder's service finds it, and it went to the outbox for delivery
    teacher = world.client("teacher:kindergarten")
    found = teacher.get("/Task", params={"code": f"{TASK_TYPE}|rectification-request"}).json()
    assert task_id in {e["resource"]["id"] for e in found.get("entry", [])}
    # (the event itself may be encrypted at rest: count the child's rows instead)
    assert _outbox_rows(services, ada.patient) == before + 1
    # the service answers; then the request is no longer the family's to change
    answered = {**created.json(), "status": "completed", "statusReason": {"text": "Rettet"}}
    response = teacher.put(f"/Task/{task_id}", json=answered, headers=fhir_headers())
    assert response.status_code == 200, response.text
    withdraw = {**response.json(), "status": "cancelled"}
    assert mother.put(f"/Task/{task_id}", json=withdraw, headers=fhir_headers()).status_code == 403


def test_close_completes_the_log(world: World) -> None:
    ada, bo = world.children["ada"], world.children["bo"]
    teacher = world.client("teacher:kindergarten")
    assert world.client("citizen:ada.mother").post(
        f"/{ada.ids['careplan']}/$close"
    ).status_code in (403, 404)
    for child in (ada, bo):
        response = teacher.post(f"/{child.ids['careplan']}/$close")
        assert response.status_code == 200, response.text
        plan = response.json()
        assert plan["status"] == "completed"
        assert plan["period"]["end"]
    level = teacher.get(
        "/Task", params={"based-on": ada.ids["careplan"], "code": f"{TASK_TYPE}|bti-level"}
    ).json()["entry"][0]["resource"]
    assert level["status"] == "completed"
    assert level["output"][0]["valueCodeableConcept"]["coding"][0]["code"] == "close"
    assert teacher.post(f"/{ada.ids['careplan']}/$close").status_code == 409


def _cli(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "STAFETT_DATABASE_URL": server.settings.database_url or "",
        "STAFETT_DATA_DIR": str(server.settings.data_dir),
        "STAFETT_BASE_URL": server.settings.base_url,
        "STAFETT_LOG_JSON": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "lifecycle", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def _resolvable(bundle: dict[str, Any]) -> None:
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    base = next(iter(full_urls)).rsplit("/", 2)[0]
    for entry in bundle["entry"]:
        stack: list[Any] = [entry["resource"]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("reference")
                if isinstance(ref, str) and not ref.startswith("#"):
                    assert f"{base}/{ref}" in full_urls or ref in full_urls, ref
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)


def test_archive_then_purge_leaves_only_the_deletion_record(
    world: World, services: Services, tmp_path: Path
) -> None:
    ada, bo = world.children["ada"], world.children["bo"]
    server = world.server
    teacher = world.client("teacher:kindergarten")
    for child in (ada, bo):  # closed by test_close_completes_the_log when run in order
        if teacher.get(f"/{child.ids['careplan']}").json()["status"] == "active":
            assert teacher.post(f"/{child.ids['careplan']}/$close").status_code == 200
    # -- archive (CLI, by fødselsnummer)
    done = _cli(server, "archive", "--patient", ada.fnr, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    folder = tmp_path / f"stafettlogg-{ada.patient}"
    manifest = json.loads((folder / "manifest.json").read_text())
    for item in manifest["files"]:
        data = (folder / item["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == item["sha256"]
    bundle = json.loads((folder / "bundle.json").read_text())
    Bundle.model_validate(bundle)
    assert bundle["type"] == "collection"
    _resolvable(bundle)
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert {"Patient", "RelatedPerson", "Consent", "CarePlan", "Task", "Organization"} <= kinds
    versions = [e for e in bundle["entry"] if e["fullUrl"].endswith(ada.ids["careplan"])]
    assert len(versions) >= 2  # history: the open and the closed version
    reader = PdfReader(io.BytesIO((folder / "sammendrag.pdf").read_bytes()))
    text_of_pdf = " ".join(page.extract_text() for page in reader.pages)
    assert "Blåbærsyltetøy" in text_of_pdf
    assert "Ada" in text_of_pdf
    # -- before retention nothing goes; Bo is past retention but not archived: he waits
    now = datetime.now(UTC)
    early = _purger(services, now + timedelta(days=365)).run()
    assert early.purged == []
    later = now + timedelta(days=365 * 3 + 30)
    dry = _purger(services, later).run(dry_run=True)
    assert [p["patient"] for p in dry.purged] == [ada.patient]
    assert dry.waiting_for_archive == [bo.patient]
    assert _rows_mentioning(services, ada.patient)  # a dry run changes nothing
    # -- purge
    report = _purger(services, later).run()
    assert [p["patient"] for p in report.purged] == [ada.patient]
    purged = report.purged[0]
    assert purged["keptShared"] == 1
    assert purged["auditEvents"] > 0
    assert purged["outboxRows"] > 0
    mother_key = ada.ids["mother"]
    left = _rows_mentioning(services, ada.patient)
    tables = {"resources", "resource_history", "search_reference", "search_token"}
    assert {where for where, _ in left} <= tables, left
    record_id = purged["deletionRecord"]
    assert {key for _, key in left} == {record_id, mother_key.split("/")[1]}, left
    for secret in (ada.fnr, ada.guardians["father"], "Blåbærsyltetøy"):
        assert _rows_mentioning(services, secret) == [], secret
    # the deletion record: a valid AuditEvent the DPO finds, without personal data
    dpo = world.client("dpo:")
    found = dpo.get("/AuditEvent", params={"subtype": "deletion"}).json()
    records = [e["resource"] for e in found["entry"]]
    assert [r["id"] for r in records] == [record_id]
    AuditEvent.model_validate(records[0])
    assert ada.fnr not in json.dumps(records[0])
    assert world.client("teacher:kindergarten").get(f"/{ada.ids['careplan']}").status_code == 404
    # -- the shared guardian survives until Bo's log is purged too
    mother = world.client("teacher:kindergarten").get(f"/{mother_key}")
    assert mother.status_code in (200, 404)  # kept in the database (Ada's log is gone)
    done = _cli(server, "archive", "--patient", bo.patient, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    report = _purger(services, later).run()
    reasons = sorted(p["reason"] for p in report.purged)
    assert reasons == ["leftover", "retention"]
    leftover = next(p for p in report.purged if p["reason"] == "leftover")
    assert leftover["patient"] == ada.patient
    assert leftover["resources"] == {"RelatedPerson": 1}
    left = _rows_mentioning(services, ada.patient)
    # only the two deletion records name the child's former (pseudonymous) id
    assert {key for _, key in left} == {record_id, leftover["deletionRecord"]}
    assert _rows_mentioning(services, bo.fnr) == []


def test_purge_cli_dry_run(world: World) -> None:
    done = _cli(world.server, "purge", "--dry-run", "--as-of", "2099-01-01", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["dryRun"] is True
    refused = _cli(world.server, "purge", "--as-of", "2099-01-01")
    assert refused.returncode == 2


def _outbox_rows(services: Services, patient_id: str) -> int:
    with services.database.read() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM outbox WHERE key = :k"), {"k": patient_id}
            ).scalar_one()
        )


def _purger(services: Services, moment: datetime) -> Purger:
    return Purger(
        database=services.database,
        store=services.repository.store,
        base_url=services.repository.base_url,
        retention_years=3,
        require_archive=True,
        clock=lambda: moment,
        actor="test",
    )


def _rows_mentioning(services: Services, needle: str) -> list[tuple[str, str]]:
    """Return (table, first column) of every row in every table whose text holds needle."""
    url = services.database.engine.url
    engine = create_engine(url)
    found: list[tuple[str, str]] = []
    try:
        with engine.connect() as conn:
            for table in inspect(conn).get_table_names():
                columns = [c["name"] for c in inspect(conn).get_columns(table)]
                rows = conn.execute(text(f'SELECT * FROM "{table}"')).all()
                for row in rows:
                    values = dict(zip(columns, row, strict=True))
                    blob = " ".join(
                        v.decode("latin-1") if isinstance(v, bytes) else str(v)
                        for v in values.values()
                    )
                    if needle in blob:
                        key = values.get("id") or values.get("resource_id") or values.get("key")
                        found.append((table, str(key)))
    finally:
        engine.dispose()
    return found
