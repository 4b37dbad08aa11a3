"""A database with an audit trail and a sealer, and the raw-SQL tampering the chain must catch."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import text

from service.audit import AuditSealer, AuditTrail
from service.audit.keys import key_id
from service.audit.verify import VerifyReport, verify_chain
from service.storage.database import Database
from service.storage.store import SqlStore
from tests.audit.audit_support import make_record


@dataclass
class ChainEnv:
    """One fresh database: the trail writes AuditEvents, the sealer chains them."""

    db: Database
    store: SqlStore
    trail: AuditTrail
    key: Ed25519PrivateKey
    sealer: AuditSealer

    @property
    def keys(self) -> Mapping[str, Ed25519PublicKey]:
        """Return the verification keys of the sealer's signing key."""
        public = self.key.public_key()
        return {key_id(public): public}

    def write(self, count: int) -> None:
        """Store count AuditEvents through the group committer, as audited reads do."""
        for _ in range(count):
            self.trail.record([make_record(patient_id=f"child-{uuid.uuid4().hex[:8]}")])

    def write_in_transaction(self, count: int) -> None:
        """Store count AuditEvents in a write's own transaction, as audited writes do."""
        with self.db.write() as conn:
            self.trail.record_in_transaction(
                conn, [make_record(patient_id="child-tx", interaction="create")] * count
            )

    def verify(self, **kwargs: Any) -> VerifyReport:
        """Verify the chain with the sealer's public key."""
        return verify_chain(self.db, keys=self.keys, batch_size=7, **kwargs)

    def chain(self) -> list[tuple[int, str]]:
        """Return (seq, resource id) of every chain entry in order."""
        with self.db.read() as conn:
            rows = conn.execute(text("SELECT seq, resource_id FROM audit_chain ORDER BY seq"))
            return [(int(seq), rid) for seq, rid in rows]

    def execute(self, sql: str, **params: Any) -> int:
        """Run one raw SQL statement, as someone with database access would; return rowcount."""
        with self.db.write() as conn:
            return int(conn.execute(text(sql), params).rowcount)

    def content(self, rid: str) -> dict[str, Any]:
        """Return the stored AuditEvent."""
        with self.db.read() as conn:
            raw = conn.execute(
                text(
                    "SELECT CAST(content AS TEXT) FROM resources"
                    " WHERE resource_type = 'AuditEvent' AND id = :id"
                ),
                {"id": rid},
            ).scalar_one()
        data: dict[str, Any] = orjson.loads(raw)
        return data

    def json_param(self) -> str:
        """Return the SQL for a JSON parameter :doc on this database."""
        return "CAST(:doc AS JSONB)" if not self.db.is_sqlite else ":doc"


def problems(report: VerifyReport) -> list[tuple[str, int | None, str | None]]:
    """Return (code, seq, resource id) of each problem, in report order."""
    return [(f.code, f.seq, f.resource_id) for f in report.problems]
