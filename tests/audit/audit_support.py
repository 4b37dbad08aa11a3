"""Principals, records and store wrappers shared by the audit tests."""

from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import orjson
from sqlalchemy import Connection, text

from service.audit import AuditRecord
from service.auth import Principal, PrincipalKind, ScopeSet
from service.search.query import parse_search
from service.search.sql import count_statement
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.store import SqlStore
from tests.support import synthetic_fnr

BASE_URL = "http://stafett.test/fhir"
HPR = "565501872"
ORGNR = "974760673"
CLIENT_ID = "kindergarten-app"
_rng = random.Random(20261122)
PRACTITIONER_PID = synthetic_fnr(_rng)
CITIZEN_PID = synthetic_fnr(_rng)

PRINCIPALS: dict[str, Principal] = {
    "practitioner-hpr": Principal(
        kind=PrincipalKind.PRACTITIONER,
        issuer="https://helseid-sts.test",
        subject="practitioner-sub",
        scopes=ScopeSet.parse("user/*.cruds"),
        expires_at=0,
        pid=PRACTITIONER_PID,
        hpr=HPR,
        organization=ORGNR,
        client_id=CLIENT_ID,
        token_id="jti-practitioner",
        display="Kari Nordmann",
    ),
    "practitioner-pid": Principal(
        kind=PrincipalKind.PRACTITIONER,
        issuer="https://helseid-sts.test",
        subject="teacher-sub",
        scopes=ScopeSet.parse("user/*.cruds"),
        expires_at=0,
        pid=PRACTITIONER_PID,
        organization=ORGNR,
        client_id=CLIENT_ID,
    ),
    "citizen": Principal(
        kind=PrincipalKind.CITIZEN,
        issuer="https://idporten.test",
        subject="citizen-sub",
        scopes=ScopeSet.parse("patient/*.cruds"),
        expires_at=0,
        pid=CITIZEN_PID,
        client_id="family-portal",
    ),
    "system": Principal(
        kind=PrincipalKind.SYSTEM,
        issuer="https://maskinporten.test",
        subject="school-system",
        scopes=ScopeSet.parse("system/*.cruds"),
        expires_at=0,
        organization=ORGNR,
        client_id="school-system",
        token_id="jti-system",
    ),
}


def make_record(
    *,
    patient_id: str | None,
    principal: str = "practitioner-hpr",
    interaction: str = "read",
    permitted: bool = True,
    request_id: str | None = None,
    consent_id: str | None = "consent-1",
    resources: tuple[str, ...] | None = None,
    **extra: Any,
) -> AuditRecord:
    """Return a record of one decision with fresh decision and request ids."""
    if resources is None:
        resources = (f"CarePlan/plan-{patient_id}",) if patient_id else ()
    return AuditRecord(
        request_id=request_id or str(uuid.uuid4()),
        decision_id=str(uuid.uuid4()),
        recorded=now_micros(),
        interaction=interaction,
        permitted=permitted,
        principal=PRINCIPALS[principal],
        patient_id=patient_id,
        resources=resources,
        consent_id=consent_id,
        basis="consent" if permitted else "default-deny",
        reason="" if permitted else "no active consent names the organisation",
        **extra,
    )


def audit_count(db: Database) -> int:
    """Return how many AuditEvents are stored."""
    with db.read() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM resources WHERE resource_type = 'AuditEvent'")
            ).scalar_one()
        )


def events_of_patient(db: Database, patient_id: str) -> list[dict[str, Any]]:
    """Return the stored AuditEvents whose `patient` index row points at the Patient."""
    sql = text(
        "SELECT CAST(r.content AS TEXT) FROM resources r JOIN search_reference s"
        " ON s.resource_type = r.resource_type AND s.resource_id = r.id"
        " WHERE r.resource_type = 'AuditEvent' AND s.param = 'patient'"
        " AND s.target_type = 'Patient' AND s.target_id = :pid"
    )
    with db.read() as conn:
        return [orjson.loads(row[0]) for row in conn.execute(sql, {"pid": patient_id})]


def search_count(db: Database, store: SqlStore, params: list[tuple[str, str]]) -> int:
    """Count AuditEvents matching FHIR search parameters, as the search API would."""
    query = parse_search(
        "AuditEvent",
        params,
        known={"AuditEvent": store.indexer.params("AuditEvent")},
        default_count=10,
        max_count=100,
        strict=True,
    )
    with db.read() as conn:
        return int(conn.execute(count_statement(query, base_url=BASE_URL)).scalar_one())


def request_id_of(data: dict[str, Any]) -> str | None:
    """Return the X-Request-Id recorded in an AuditEvent."""
    for entity in data.get("entity", []):
        if entity.get("type", {}).get("code") == "XrequestId":
            value: str = entity["what"]["identifier"]["value"]
            return value
    return None


class ControlledStore(SqlStore):
    """A SqlStore whose writes can be held at a gate or made to fail for chosen requests."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entered = threading.Event()
        self.gate: threading.Event | None = None
        self.fail_request_ids: set[str] = set()
        self._lock = threading.Lock()

    def hold_next_write(self) -> threading.Event:
        """Make the next write wait until the returned event is set."""
        self.entered.clear()
        self.gate = threading.Event()
        return self.gate

    def create_many(self, conn: Connection, resource_type: str, items: Any) -> None:
        with self._lock:
            gate, self.gate = self.gate, None
            request_ids = {request_id_of(item.data) for item in items}
            fail = bool(request_ids & self.fail_request_ids)
            self.fail_request_ids -= {r for r in request_ids if r}
        self.entered.set()
        if gate is not None:
            assert gate.wait(30), "the test never opened the gate"
        if fail:
            raise RuntimeError("injected store failure")
        super().create_many(conn, resource_type, items)
