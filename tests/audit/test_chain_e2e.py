"""End to end: API reads and writes are audited, the worker's sealer chains them, verify agrees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from bus.memory import InMemoryBus
from service.audit.keys import verification_keys
from service.audit.verify import verify_chain
from service.storage.database import Database
from service.worker import Worker
from tests.support import fhir_headers, live_server, synthetic_fnr

ROOT = Path(__file__).resolve().parents[2]
ORG = "974760673"


def _cli(*args: str, database_url: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAFETT_")}
    env = {**clean, "STAFETT_DATABASE_URL": database_url, "STAFETT_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "audit", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _count(db: Database, sql: str) -> int:
    with db.read() as conn:
        return int(conn.execute(text(sql)).scalar_one())


@pytest.mark.e2e
def test_api_worker_sealer_and_verify(database_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with live_server(database_url=database_url, data_dir=data_dir) as live:
        token = live.practitioner_token(org=ORG)
        with live.client(token) as client:
            patient = {
                "resourceType": "Patient",
                "identifier": [
                    {"system": "urn:oid:2.16.578.1.12.4.1.4.1", "value": synthetic_fnr()}
                ],
            }
            # no consent names the organisation: refused, and every refusal is an AuditEvent
            for _ in range(6):
                created = client.post("/Patient", json=patient, headers=fhir_headers())
                assert created.status_code == 403, created.text
            assert client.get("/Task", params={"status": "requested"}).status_code == 200
        worker = Worker(live.settings, bus=InMemoryBus(), components=("sealer",))
        worker.start()
        db = Database(live.settings.effective_database_url)
        try:
            audits = _count(db, "SELECT count(*) FROM resources WHERE resource_type = 'AuditEvent'")
            assert audits >= 6
            deadline = time.monotonic() + 30
            while _count(db, "SELECT count(*) FROM audit_chain") < audits:
                assert time.monotonic() < deadline, "the worker's sealer did not chain the events"
                time.sleep(0.05)
        finally:
            worker.stop()
        # the worker signed its last checkpoint as it stopped
        report = verify_chain(db, keys=verification_keys(live.settings))
        assert report.ok, report.lines()
        assert report.entries == audits
        assert report.last_checkpoint_seq == audits
        verified = _cli("verify", "--json", database_url=database_url, data_dir=data_dir)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert json.loads(verified.stdout)["ok"] is True
        with db.write() as conn:
            victim = conn.execute(text("SELECT resource_id FROM audit_chain WHERE seq = 2")).one()[
                0
            ]
            conn.execute(text("DELETE FROM resources WHERE id = :id"), {"id": victim})
        db.dispose()
    broken = _cli("verify", database_url=database_url, data_dir=data_dir)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"PROBLEM: seq 2: AuditEvent/{victim} deleted" in broken.stdout
    sealed = _cli("seal", database_url=database_url, data_dir=data_dir)
    assert sealed.returncode == 0, sealed.stderr
    assert "sealed 0 AuditEvents" in sealed.stdout
    public = _cli("public-key", database_url=database_url, data_dir=data_dir)
    assert public.stdout.startswith("-----BEGIN PUBLIC KEY-----")
    key_file = tmp_path / "audit.pub"
    key_file.write_text(public.stdout)
    other = tmp_path / "other.pub"
    other.write_text(
        "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n"
        "-----END PUBLIC KEY-----\n"
    )
    wrong = _cli(
        "verify", "--json", "--public-key", str(other), database_url=database_url, data_dir=data_dir
    )
    codes = {p["code"] for p in json.loads(wrong.stdout)["problems"]}
    assert codes == {"deleted", "checkpoint-unknown-key"}


def test_production_refuses_the_development_key(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STAFETT_")}
    env = {
        **clean,
        "STAFETT_ENVIRONMENT": "production",
        "STAFETT_DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x",
        "STAFETT_TRUSTED_ISSUERS": '{"https://helseid-sts.nhn.no": "https://x/jwks"}',
        "STAFETT_DATA_DIR": str(tmp_path),
    }
    refused = subprocess.run(
        [sys.executable, "-m", "service.cli", "audit", "seal"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "STAFETT_AUDIT_SIGNING_KEY_FILE" in refused.stderr
