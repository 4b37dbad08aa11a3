"""`stafett audit verify`: recompute the audit chain and name every record that does not fit.

Streams the chain in seq order, in batches joined to the stored AuditEvents, so memory stays
flat however long the chain is. Problems (non-zero exit) name the record: a changed, deleted or
unchained (inserted) AuditEvent, an altered or missing chain entry, a checkpoint whose signature
or chain hash does not hold. Warnings name what is odd but may be innocent: an AuditEvent
chained long after newer ones (backdated insertion, or a very late commit).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import exists, func, literal, select

from service.audit.chain import (
    AUDIT,
    GENESIS,
    REDACTION,
    checkpoint_message,
    content_hash,
    link_hash,
    redaction_hash,
)
from service.search.values import micros_to_instant, now_micros
from service.storage.database import Database
from service.storage.schema import (
    audit_chain,
    audit_checkpoint,
    audit_redaction,
    resource_history,
    resources,
)

__all__ = ["Finding", "VerifyReport", "verify_chain"]

_NO_ROW = (None, None, None, None)  # content, last_updated, version_id, deleted

Severity = Literal["problem", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing verify found: what, about which record, how bad."""

    severity: Severity
    code: str  # changed, deleted, inserted, entry-altered, entries-missing, checkpoint-*, ...
    message: str
    seq: int | None = None
    resource_id: str | None = None


@dataclass(slots=True)
class VerifyReport:
    """The result of one verification."""

    entries: int = 0
    head_seq: int = 0
    checkpoints: int = 0
    last_checkpoint_seq: int = 0
    last_checkpoint_at: int | None = None
    redacted: int = 0
    unsealed_recent: int = 0
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    omitted: int = 0  # findings beyond max_findings, counted only

    @property
    def problems(self) -> list[Finding]:
        """Return the findings that make the chain fail verification."""
        return [f for f in self.findings if f.severity == "problem"]

    @property
    def warnings(self) -> list[Finding]:
        """Return the findings that are suspect but may be innocent."""
        return [f for f in self.findings if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """Return whether no problem was found."""
        return not self.problems and not self.omitted

    @property
    def rate(self) -> float:
        """Return entries verified per second."""
        return self.entries / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {
            "ok": self.ok,
            "entries": self.entries,
            "headSeq": self.head_seq,
            "checkpoints": self.checkpoints,
            "lastCheckpointSeq": self.last_checkpoint_seq,
            "lastCheckpointAt": (
                micros_to_instant(self.last_checkpoint_at) if self.last_checkpoint_at else None
            ),
            "redacted": self.redacted,
            "unsealedRecent": self.unsealed_recent,
            "seconds": round(self.seconds, 3),
            "entriesPerSecond": round(self.rate),
            "problems": [_finding_json(f) for f in self.problems],
            "warnings": [_finding_json(f) for f in self.warnings],
            "omitted": self.omitted,
        }

    def lines(self) -> list[str]:
        """Return the report as lines of text for people."""
        signed = (
            f"last at seq {self.last_checkpoint_seq}, {micros_to_instant(self.last_checkpoint_at)}"
            if self.last_checkpoint_at
            else "none"
        )
        out = [
            f"audit chain: {self.entries} entries (head seq {self.head_seq}), "
            f"{self.checkpoints} signed checkpoints ({signed}), {self.redacted} redacted, "
            f"{self.unsealed_recent} AuditEvents waiting for the sealer"
        ]
        out += [f"PROBLEM: {f.message}" for f in self.problems]
        out += [f"warning: {f.message}" for f in self.warnings]
        if self.omitted:
            out.append(f"PROBLEM: {self.omitted} more findings not listed")
        verdict = "intact" if self.ok else "NOT intact"
        out.append(
            f"{verdict}: {len(self.problems) + self.omitted} problems, {len(self.warnings)} "
            f"warnings; verified in {self.seconds:.2f} s ({self.rate:,.0f} entries/s)"
        )
        return out


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {k: v for k, v in asdict(finding).items() if v is not None}


@dataclass(slots=True)
class _Checkpoint:
    seq: int
    prev_seq: int
    chain_hash: bytes
    signed_at: int
    key_id: str
    signature: bytes


class _Verifier:
    def __init__(
        self,
        *,
        database: Database,
        keys: Mapping[str, Ed25519PublicKey],
        grace_us: int,
        batch_size: int,
        max_findings: int,
        expect: Mapping[int, bytes],
    ) -> None:
        self.database = database
        self.keys = keys
        self.grace_us = grace_us
        self.batch = batch_size
        self.max_findings = max_findings
        self.expect = dict(expect)
        self.now = now_micros()
        self.report = VerifyReport()

    def add(
        self, severity: Severity, code: str, message: str, seq: int | None, rid: str | None
    ) -> None:
        if len(self.report.findings) >= self.max_findings:
            self.report.omitted += 1
            return
        self.report.findings.append(Finding(severity, code, message, seq, rid))

    # -- the whole run --------------------------------------------------------------------------
    def run(self) -> VerifyReport:
        started = time.perf_counter()
        with self.database.read() as conn:
            # one statement: the sealer writes entries and their checkpoint in one transaction
            head, last_cp = conn.execute(
                select(
                    select(func.max(audit_chain.c.seq)).scalar_subquery(),
                    select(func.max(audit_checkpoint.c.seq)).scalar_subquery(),
                )
            ).one()
        head = int(head or 0)
        last_cp = int(last_cp or 0)
        checkpoints = self._checkpoints(last_cp)
        cp = next(checkpoints, None)
        prev_cp_seq = 0
        expected_seq = 1
        prev_hash = GENESIS
        newest_recorded = 0
        first_unsigned: tuple[int, int] | None = None  # (seq, sealed_at) after the last checkpoint
        for row in self._entries(head):
            seq, kind, rid, recorded_at, sealed_at, stored_content, stored_chain = row[:7]
            stored_content, stored_chain = bytes(stored_content), bytes(stored_chain)
            self.report.entries += 1
            name = f"AuditEvent/{rid}"
            if seq != expected_seq:
                self.add(
                    "problem",
                    "entries-missing",
                    f"seq {expected_seq}..{seq - 1}: chain entries deleted",
                    expected_seq,
                    None,
                )
            else:
                computed = link_hash(
                    prev_hash,
                    seq=seq,
                    kind=kind,
                    resource_id=rid,
                    recorded_at=recorded_at,
                    sealed_at=sealed_at,
                    content=stored_content,
                )
                if computed != stored_chain:
                    what = name if kind == AUDIT else f"the redaction of {name}"
                    self.add(
                        "problem",
                        "entry-altered",
                        f"seq {seq}: the chain entry of {what} was altered "
                        "(its chain hash does not match its fields)",
                        seq,
                        rid,
                    )
            prev_hash, expected_seq = stored_chain, seq + 1
            if first_unsigned is None:
                first_unsigned = (seq, sealed_at)
            if seq in self.expect:
                self._check_expected(seq, stored_chain)
            while cp is not None and cp.seq < seq:
                self.add(
                    "problem",
                    "checkpoint-orphaned",
                    f"checkpoint at seq {cp.seq}: its chain entry is missing",
                    cp.seq,
                    None,
                )
                prev_cp_seq = cp.seq
                cp = next(checkpoints, None)
            if cp is not None and cp.seq == seq:
                if self._check_checkpoint(cp, stored_chain, prev_cp_seq):
                    first_unsigned = None
                prev_cp_seq = cp.seq
                cp = next(checkpoints, None)
            if kind == AUDIT:
                self._check_audit(row, name)
                if newest_recorded - recorded_at > self.grace_us:
                    late = (newest_recorded - recorded_at) / 1_000_000
                    self.add(
                        "warning",
                        "out-of-order",
                        f"{name} (seq {seq}) was chained {late:,.0f} s behind newer records "
                        "(recorded "
                        f"{micros_to_instant(recorded_at)}): inserted behind the chain's back?",
                        seq,
                        rid,
                    )
                newest_recorded = max(newest_recorded, recorded_at)
            else:
                self._check_redaction(row, name)
        self.report.head_seq = expected_seq - 1
        while cp is not None:
            self.add(
                "problem",
                "truncated",
                f"checkpoint at seq {cp.seq}: the chain ends at seq {expected_seq - 1} "
                "(entries deleted from the end)",
                cp.seq,
                None,
            )
            cp = next(checkpoints, None)
        for seq in sorted(s for s in self.expect if s >= expected_seq):
            self.add(
                "problem",
                "expected-missing",
                f"seq {seq}: expected chain hash {self.expect[seq].hex()[:16]}…, but the chain "
                f"ends at seq {expected_seq - 1}",
                seq,
                None,
            )
        if first_unsigned is not None:
            self._check_unsigned_tail(first_unsigned, expected_seq - 1)
        self._check_unsealed()
        self._check_extra_versions()
        self.report.seconds = time.perf_counter() - started
        return self.report

    # -- streams ----------------------------------------------------------------------------
    def _entries(self, head: int) -> Iterator[Sequence[Any]]:
        # One query per table and batch, by primary key: a join lets PostgreSQL pick a hash
        # join that reads every AuditEvent for each batch (measured 500 entries/s).
        c, r, h, d = audit_chain.c, resources.c, resource_history.c, audit_redaction.c
        chain = select(
            c.seq, c.kind, c.resource_id, c.recorded_at, c.sealed_at, c.content_hash, c.chain_hash
        )
        after = 0
        while after < head:
            with self.database.read() as conn:
                rows = conn.execute(
                    chain.where(c.seq > after, c.seq <= head).order_by(c.seq).limit(self.batch)
                ).all()
                if not rows:
                    return
                ids = sorted({row[2] for row in rows})
                current = {
                    row[0]: row[1:]
                    for row in conn.execute(
                        select(r.id, r.content, r.last_updated, r.version_id, r.deleted).where(
                            r.resource_type == "AuditEvent", r.id.in_(ids)
                        )
                    )
                }
                history = dict(
                    conn.execute(
                        select(h.id, h.content).where(
                            h.resource_type == "AuditEvent", h.version_id == 1, h.id.in_(ids)
                        )
                    ).all()
                )
                redacted = {
                    row[0]: row[1:]
                    for row in conn.execute(
                        select(d.resource_id, d.reason, d.redacted_at).where(d.resource_id.in_(ids))
                    )
                }
            for row in rows:
                rid, is_audit = row[2], row[1] == AUDIT
                yield (
                    *row,
                    *(current.get(rid, _NO_ROW) if is_audit else _NO_ROW),
                    history.get(rid) if is_audit else None,
                    *redacted.get(rid, (None, None)),
                )
            after = int(rows[-1][0])

    def _checkpoints(self, last: int) -> Iterator[_Checkpoint]:
        k = audit_checkpoint.c
        after = -1
        while after < last:
            with self.database.read() as conn:
                rows = conn.execute(
                    select(k.seq, k.prev_seq, k.chain_hash, k.signed_at, k.key_id, k.signature)
                    .where(k.seq > after, k.seq <= last)
                    .order_by(k.seq)
                    .limit(self.batch)
                ).all()
            if not rows:
                return
            for seq, prev, chain, at, kid, sig in rows:
                yield _Checkpoint(int(seq), int(prev), bytes(chain), int(at), kid, bytes(sig))
            after = int(rows[-1][0])

    # -- checks -----------------------------------------------------------------------------
    def _check_audit(self, row: Sequence[Any], name: str) -> None:
        seq, _, rid, recorded_at, _, stored_content = row[:6]
        content, last_updated, version_id, deleted, history, reason = row[7:13]
        stored_content = bytes(stored_content)
        if content is None:
            if reason is not None:
                self.report.redacted += 1
            else:
                self.add("problem", "deleted", f"seq {seq}: {name} deleted", seq, rid)
            return
        if content_hash(content) != stored_content:
            self.add("problem", "changed", f"{name} (seq {seq}) content changed", seq, rid)
        elif last_updated != recorded_at or version_id != 1 or deleted:
            self.add(
                "problem",
                "changed",
                f"{name} (seq {seq}) changed: version {version_id}, deleted={deleted}, "
                f"last_updated {last_updated} where {recorded_at} was sealed",
                seq,
                rid,
            )
        if history is None:
            self.add(
                "problem", "history-deleted", f"{name} (seq {seq}): history row deleted", seq, rid
            )
        elif history != content and content_hash(history) != stored_content:
            self.add(
                "problem",
                "history-changed",
                f"{name} (seq {seq}): history row content changed",
                seq,
                rid,
            )

    def _check_redaction(self, row: Sequence[Any], name: str) -> None:
        seq, _, rid, recorded_at, _, stored_content = row[:6]
        reason, redacted_at = row[12:14]
        if reason is None:
            self.add(
                "problem",
                "deleted",
                f"seq {seq}: the redaction record of {name} deleted",
                seq,
                rid,
            )
        elif (
            redaction_hash(rid, reason, redacted_at) != bytes(stored_content)
            or redacted_at != recorded_at
        ):
            self.add(
                "problem",
                "changed",
                f"the redaction record of {name} (seq {seq}) changed",
                seq,
                rid,
            )

    def _check_checkpoint(self, cp: _Checkpoint, chain_hash: bytes, prev_cp_seq: int) -> bool:
        self.report.checkpoints += 1
        key = self.keys.get(cp.key_id)
        where = f"checkpoint at seq {cp.seq}"
        if key is None:
            self.add(
                "problem",
                "checkpoint-unknown-key",
                f"{where}: signed with unknown key {cp.key_id} (pass its public key)",
                cp.seq,
                None,
            )
            return False
        message = checkpoint_message(
            seq=cp.seq,
            prev_seq=cp.prev_seq,
            chain_hash=cp.chain_hash,
            signed_at=cp.signed_at,
            key=cp.key_id,
        )
        try:
            key.verify(cp.signature, message)
        except InvalidSignature:
            self.add("problem", "checkpoint-signature", f"{where}: signature invalid", cp.seq, None)
            return False
        good = True
        if cp.chain_hash != chain_hash:
            since = f"seq {prev_cp_seq + 1}" if prev_cp_seq else "the start"
            self.add(
                "problem",
                "checkpoint-mismatch",
                f"{where}: chain hash mismatch (the chain from {since} to seq {cp.seq} was "
                "rewritten)",
                cp.seq,
                None,
            )
            good = False
        if cp.prev_seq != prev_cp_seq:
            self.add(
                "problem",
                "checkpoint-missing",
                f"{where}: signed after a checkpoint at seq {cp.prev_seq}, which is missing",
                cp.seq,
                None,
            )
        self.report.last_checkpoint_seq = cp.seq
        self.report.last_checkpoint_at = cp.signed_at
        return good

    def _check_expected(self, seq: int, chain_hash: bytes) -> None:
        if self.expect.pop(seq) != chain_hash:
            self.add(
                "problem",
                "expected-mismatch",
                f"seq {seq}: chain hash differs from the one recorded outside the database",
                seq,
                None,
            )

    def _check_unsigned_tail(self, first: tuple[int, int], head: int) -> None:
        seq, sealed_at = first
        if self.now - sealed_at > self.grace_us:
            age = (self.now - sealed_at) / 1_000_000
            self.add(
                "problem",
                "unsigned",
                f"seq {seq}..{head}: not covered by a valid signed checkpoint for {age:,.0f} s "
                "(checkpoints deleted, or the sealer cannot sign)",
                seq,
                None,
            )

    def _check_unsealed(self) -> None:
        r, d = resources.c, audit_redaction.c
        chained_audit = select(literal(1)).where(
            audit_chain.c.resource_id == r.id, audit_chain.c.kind == AUDIT
        )
        chained_redaction = select(literal(1)).where(
            audit_chain.c.resource_id == d.resource_id, audit_chain.c.kind == REDACTION
        )
        cutoff = self.now - self.grace_us
        with self.database.read() as conn:
            audits = conn.execute(
                select(r.id, r.last_updated)
                .where(r.resource_type == "AuditEvent", ~exists(chained_audit))
                .order_by(r.last_updated, r.id)
            )
            for rid, last_updated in audits:
                if last_updated >= cutoff:
                    self.report.unsealed_recent += 1
                    continue
                self.add(
                    "problem",
                    "inserted",
                    f"AuditEvent/{rid} not in the chain (inserted?): recorded "
                    f"{micros_to_instant(last_updated)}, unsealed for longer than the grace",
                    None,
                    rid,
                )
            redactions = conn.execute(
                select(d.resource_id, d.redacted_at)
                .where(~exists(chained_redaction), d.redacted_at < cutoff)
                .order_by(d.redacted_at)
            )
            for rid, _at in redactions:
                self.add(
                    "problem",
                    "inserted",
                    f"the redaction record of AuditEvent/{rid} is not in the chain (inserted?)",
                    None,
                    rid,
                )

    def _check_extra_versions(self) -> None:
        h = resource_history.c
        with self.database.read() as conn:
            rows = conn.execute(
                select(h.id, h.version_id)
                .where(h.resource_type == "AuditEvent", h.version_id != 1)
                .order_by(h.id, h.version_id)
            )
            for rid, version in rows:
                self.add(
                    "problem",
                    "changed",
                    f"AuditEvent/{rid} has a version {version} in its history (AuditEvents "
                    "are never updated)",
                    None,
                    rid,
                )


def verify_chain(
    database: Database,
    *,
    keys: Mapping[str, Ed25519PublicKey],
    grace_s: float = 900.0,
    batch_size: int = 2000,
    max_findings: int = 10_000,
    expect: Mapping[int, bytes] | None = None,
) -> VerifyReport:
    """Verify the audit chain, its checkpoints and the stored AuditEvents; report each problem.

    ``keys`` maps key id to the public keys checkpoints may be signed with; ``expect`` maps
    seq to a chain hash recorded outside the database (the sealer logs one per checkpoint),
    which catches a chain cut short together with its checkpoints.
    """
    return _Verifier(
        database=database,
        keys=keys,
        grace_us=int(grace_s * 1_000_000),
        batch_size=batch_size,
        max_findings=max_findings,
        expect=expect or {},
    ).run()
