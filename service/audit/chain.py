"""The tamper-evident audit chain: a sealer appends committed AuditEvents to one hash chain.

AuditEvents are written by many concurrent transactions and by the group committer, so they are
not chained as they are written (that would serialise every audited request on the chain's
head). A sealer, one leader at a time, appends what has committed since: each entry's
``chain_hash`` is SHA-256 over the previous entry's chain hash and this entry's sequence
number, id, times and ``content_hash`` (SHA-256 of the canonical JSON of the stored
AuditEvent); every ``checkpoint_every`` entries or ``checkpoint_interval_s`` seconds it signs
the head with Ed25519. ``stafett audit verify`` (service/audit/verify.py) recomputes it all.
The design, the threat model and the measurements are in docs/security/audit-chain.md.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    tuple_,
)

from service.audit.keys import key_id, load_signing_key
from service.config import Settings
from service.errors import ServiceUnavailable
from service.metrics import AUDIT_SEALED_SEQ, AUDIT_UNSEALED
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.leadership import Leadership
from service.storage.schema import (
    INDEX_TABLES,
    audit_chain,
    audit_checkpoint,
    audit_redaction,
    resource_history,
    resources,
)

__all__ = [
    "AUDIT",
    "GENESIS",
    "REDACTION",
    "AuditSealer",
    "SealResult",
    "canonical_json",
    "checkpoint_message",
    "content_hash",
    "link_hash",
    "redact",
    "redaction_hash",
    "sealer_from_settings",
]

_log = logging.getLogger("stafett.audit.chain")

AUDIT: Final = "audit"
REDACTION: Final = "redaction"
GENESIS: Final = bytes(32)  # the "previous chain hash" of seq 1
_CHAIN_DOMAIN: Final = b"stafett-audit-chain/v1\n"
_CHECKPOINT_DOMAIN: Final = b"stafett-audit-checkpoint/v1\n"
_SEALER_LOCK: Final = "stafett-audit-sealer"
_CHUNK: Final = 500  # ids per IN (...) list


# -- hashing: the whole format, shared with verify --------------------------------------------
def canonical_json(content: str) -> bytes:
    """Return the canonical form of a stored JSON document: sorted keys, no whitespace.

    PostgreSQL's JSONB does not keep the bytes it was given, so the hash is taken over a form
    both databases give back unchanged (a SQLite store moved to PostgreSQL still verifies).
    """
    return orjson.dumps(orjson.loads(content), option=orjson.OPT_SORT_KEYS)


def content_hash(content: str) -> bytes:
    """Return SHA-256 of the canonical JSON of a stored AuditEvent."""
    return hashlib.sha256(canonical_json(content)).digest()


def redaction_hash(resource_id: str, reason: str, redacted_at: int) -> bytes:
    """Return SHA-256 of the canonical JSON of a redaction record."""
    record = {"reason": reason, "redactedAt": redacted_at, "resourceId": resource_id}
    return hashlib.sha256(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).digest()


def _signed64(value: int) -> bytes:
    return value.to_bytes(8, "big", signed=True)


def link_hash(
    prev: bytes,
    *,
    seq: int,
    kind: str,
    resource_id: str,
    recorded_at: int,
    sealed_at: int,
    content: bytes,
) -> bytes:
    """Return the chain hash of an entry: SHA-256(prev || seq || kind || id || times || content)."""
    digest = hashlib.sha256(_CHAIN_DOMAIN)
    digest.update(prev)
    digest.update(_signed64(seq))
    digest.update(kind.encode() + b"\0" + resource_id.encode() + b"\0")
    digest.update(_signed64(recorded_at))
    digest.update(_signed64(sealed_at))
    digest.update(content)
    return digest.digest()


def checkpoint_message(
    *, seq: int, prev_seq: int, chain_hash: bytes, signed_at: int, key: str
) -> bytes:
    """Return the bytes a checkpoint's Ed25519 signature covers."""
    return b"".join(
        (
            _CHECKPOINT_DOMAIN,
            _signed64(seq),
            _signed64(prev_seq),
            chain_hash,
            _signed64(signed_at),
            key.encode(),
        )
    )


# -- redaction: the data lifecycle's lawful deletion ---------------------------------------------
def redact(
    conn: Connection, *, resource_ids: Sequence[str], reason: str, at: int | None = None
) -> int:
    """Delete AuditEvents lawfully: remove their rows, keep their chain entries, record why.

    Call it in the transaction of the deletion it belongs to. Each id gets an
    ``audit_redaction`` row, which the sealer then chains and signs like an AuditEvent, so
    ``stafett audit verify`` reports the events as redacted (with the reason) instead of
    deleted, and a redaction record removed or edited later is itself caught. Returns how
    many ids were newly redacted.
    """
    if not reason.strip():
        raise ValueError("a redaction needs a reason (the legal basis of the deletion)")
    unique = sorted(set(resource_ids))
    when = now_micros() if at is None else at
    added = 0
    for start in range(0, len(unique), _CHUNK):
        chunk = unique[start : start + _CHUNK]
        done = set(
            conn.execute(
                select(audit_redaction.c.resource_id).where(
                    audit_redaction.c.resource_id.in_(chunk)
                )
            ).scalars()
        )
        new = [i for i in chunk if i not in done]
        if new:
            conn.execute(
                insert(audit_redaction),
                [{"resource_id": i, "reason": reason, "redacted_at": when} for i in new],
            )
            added += len(new)
        for table in (*INDEX_TABLES, resource_history, resources):
            id_column = table.c.resource_id if "resource_id" in table.c else table.c.id
            conn.execute(
                delete(table).where(table.c.resource_type == "AuditEvent", id_column.in_(chunk))
            )
    return added


# -- the sealer -------------------------------------------------------------------------------
def sealer_from_settings(settings: Settings, database: Database) -> AuditSealer:
    """Return the sealer the settings describe; raise AuditKeyError without a usable key."""
    return AuditSealer(
        database=database,
        signing_key=load_signing_key(settings),
        checkpoint_interval_s=settings.audit_checkpoint_interval_s,
        lookback_s=settings.audit_seal_lookback_s,
        # a late commit is chained well inside the grace verify allows it
        sweep_interval_s=max(1.0, min(300.0, settings.audit_seal_grace_s / 3)),
    )


@dataclass(frozen=True, slots=True)
class SealResult:
    """What one sealing pass did."""

    sealed: int  # AuditEvents appended
    redactions: int  # redaction records appended
    head_seq: int  # the chain's last seq after the pass
    checkpoint_seq: int | None  # the seq signed in this pass, if one was


@dataclass(frozen=True, slots=True)
class _Candidate:
    kind: str
    resource_id: str
    recorded_at: int
    content: bytes


class AuditSealer:
    """Appends committed AuditEvents and redactions to the chain and signs checkpoints.

    ``seal_once`` is one transaction: it reads the chain's head, finds up to ``batch_size``
    AuditEvents not yet in ``audit_chain`` (an anti-join, so an event that committed late is
    found whatever its timestamp), appends them in (last_updated, id) order and signs the new
    head when a checkpoint is due. Normal passes look back ``lookback_s`` for late commits;
    a sweep (at start and every ``sweep_interval_s``) looks at every AuditEvent. ``run``
    loops as the single leader (a PostgreSQL advisory lock; SQLite has one writer).
    """

    def __init__(
        self,
        *,
        database: Database,
        signing_key: Ed25519PrivateKey,
        batch_size: int = 2000,
        checkpoint_every: int = 10_000,
        checkpoint_interval_s: float = 10.0,
        lookback_s: float = 60.0,
        sweep_interval_s: float = 300.0,
        clock: Callable[[], int] = now_micros,
    ) -> None:
        if batch_size < 1 or checkpoint_every < 1:
            raise ValueError("batch_size and checkpoint_every must be >= 1")
        self._database = database
        self._key = signing_key
        self.key_id = key_id(signing_key.public_key())
        self._batch = batch_size
        self._every = checkpoint_every
        self._checkpoint_us = int(checkpoint_interval_s * 1_000_000)
        self._lookback_us = int(lookback_s * 1_000_000)
        self._sweep_s = sweep_interval_s
        self._clock = clock
        # the head this sealer last wrote: a different head in the database means someone
        # else appended (or rewrote) entries
        self._head: tuple[int, bytes] | None = None
        self._sweep_after: tuple[int, str] | None = None  # where a running sweep has got to

    # -- one pass ---------------------------------------------------------------------------
    def seal_once(self, *, sweep: bool = False, force_checkpoint: bool = False) -> SealResult:
        """Chain one batch of unsealed AuditEvents and redactions; sign a checkpoint if due."""
        with self._database.write() as conn:
            seq, prev = self._read_head(conn)
            since = None if sweep else self._clock() - self._lookback_us
            audits = self._unsealed_audits(conn, since, self._sweep_after if sweep else None)
            if sweep:
                # a sweep walks the table once, in keyset pages: without the cursor each page
                # would scan every row already chained again (quadratic on a backlog)
                full = len(audits) >= self._batch
                self._sweep_after = (
                    (audits[-1].recorded_at, audits[-1].resource_id) if full else None
                )
            redactions = self._unsealed_redactions(conn, since)
            sealed_at = self._clock()
            rows = []
            for candidate in (*audits, *redactions):
                seq += 1
                prev = link_hash(
                    prev,
                    seq=seq,
                    kind=candidate.kind,
                    resource_id=candidate.resource_id,
                    recorded_at=candidate.recorded_at,
                    sealed_at=sealed_at,
                    content=candidate.content,
                )
                rows.append(
                    {
                        "seq": seq,
                        "kind": candidate.kind,
                        "resource_id": candidate.resource_id,
                        "recorded_at": candidate.recorded_at,
                        "sealed_at": sealed_at,
                        "content_hash": candidate.content,
                        "chain_hash": prev,
                    }
                )
            if rows:
                conn.execute(insert(audit_chain), rows)
            checkpoint = self._checkpoint_if_due(conn, seq, prev, force=force_checkpoint)
            # counted only behind a normal pass: a sweep's count would scan the whole table
            # on every page of a backlog
            behind = len(audits) >= self._batch
            unsealed = self._count_unsealed(conn, since) if behind and not sweep else None
        self._head = (seq, prev)
        AUDIT_SEALED_SEQ.set(seq)
        if not behind:
            AUDIT_UNSEALED.set(0)
        elif unsealed is not None:
            AUDIT_UNSEALED.set(unsealed)
        return SealResult(len(audits), len(redactions), seq, checkpoint)

    def seal_pending(self) -> SealResult:
        """Chain everything waiting (a full sweep), then sign a checkpoint at the head."""
        sealed = redactions = 0
        while True:
            result = self.seal_once(sweep=True)
            sealed += result.sealed
            redactions += result.redactions
            if result.sealed < self._batch and result.redactions < self._batch:
                break
        final = self.seal_once(force_checkpoint=True)
        return SealResult(
            sealed + final.sealed,
            redactions + final.redactions,
            final.head_seq,
            final.checkpoint_seq or result.checkpoint_seq,
        )

    # -- the loop ---------------------------------------------------------------------------
    def run(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Seal as the single leader until `stop` is set; back off while the database is down."""
        backoff = 0.0
        while not stop.is_set():
            try:
                with SealerLeadership(self._database) as leader:
                    if not leader.held:
                        stop.wait(1.0)  # another worker seals; take over if it goes away
                        continue
                    self._head = None  # a new leader starts from the database's head
                    self._sweep_after = None
                    next_sweep = 0.0  # sweep first: the backlog of the time no one sealed
                    checked = time.monotonic()
                    while not stop.is_set():
                        if time.monotonic() - checked > 1.0:
                            leader.check()
                            checked = time.monotonic()
                        sweep = time.monotonic() >= next_sweep
                        result = self.seal_once(sweep=sweep)
                        backoff = 0.0
                        full = result.sealed >= self._batch or result.redactions >= self._batch
                        if sweep and not full:
                            next_sweep = time.monotonic() + self._sweep_s
                        if not full:
                            stop.wait(interval_s)
                    # leaving: sign what this leader chained, so the next one starts signed
                    self.seal_once(force_checkpoint=True)
            except ServiceUnavailable as exc:
                backoff = min(5.0, max(0.1, backoff * 2))
                _log.warning("audit sealer paused %.1f s: %s", backoff, exc)
                stop.wait(backoff)
            except Exception:
                backoff = min(5.0, max(0.1, backoff * 2))
                _log.exception("audit sealer failed; retrying in %.1f s", backoff)
                stop.wait(backoff)

    # -- internals --------------------------------------------------------------------------
    def _read_head(self, conn: Connection) -> tuple[int, bytes]:
        row = conn.execute(
            select(audit_chain.c.seq, audit_chain.c.chain_hash)
            .order_by(audit_chain.c.seq.desc())
            .limit(1)
        ).first()
        head = (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))
        if self._head is not None and head != self._head:
            _log.error(
                "the audit chain's head is seq %d but this sealer last wrote seq %d: entries "
                "were appended or changed outside the sealer; run `stafett audit verify`",
                head[0],
                self._head[0],
            )
        return head

    def _unsealed_audits(
        self, conn: Connection, since: int | None, after: tuple[int, str] | None
    ) -> list[_Candidate]:
        r = resources.c
        # ids first, content after: sorting and anti-joining narrow rows stays cheap, where
        # carrying the JSON through the sort would read every unsealed document on each pass
        stmt = select(r.id, r.last_updated).where(
            r.resource_type == "AuditEvent", ~exists(self._chained(AUDIT, r.id))
        )
        if since is not None:
            stmt = stmt.where(r.last_updated >= since)
        if after is not None:
            stmt = stmt.where(
                tuple_(r.last_updated, r.id) > tuple_(literal(after[0]), literal(after[1]))
            )
        keys = conn.execute(stmt.order_by(r.last_updated, r.id).limit(self._batch)).all()
        if not keys:
            return []
        contents = dict(
            conn.execute(
                select(r.id, r.content).where(
                    r.resource_type == "AuditEvent", r.id.in_([k[0] for k in keys])
                )
            ).all()
        )
        return [
            _Candidate(AUDIT, id, int(last_updated), content_hash(contents[id]))
            for id, last_updated in keys
        ]

    def _unsealed_redactions(self, conn: Connection, since: int | None) -> list[_Candidate]:
        d = audit_redaction.c
        stmt = select(d.resource_id, d.reason, d.redacted_at).where(
            ~exists(self._chained(REDACTION, d.resource_id))
        )
        if since is not None:
            stmt = stmt.where(d.redacted_at >= since)
        rows = conn.execute(stmt.order_by(d.redacted_at, d.resource_id).limit(self._batch))
        return [
            _Candidate(REDACTION, id, int(at), redaction_hash(id, reason, int(at)))
            for id, reason, at in rows
        ]

    @staticmethod
    def _chained(kind: str, id_column: ColumnElement[str]) -> Select[int]:
        return select(literal(1)).where(
            and_(audit_chain.c.resource_id == id_column, audit_chain.c.kind == kind)
        )

    def _count_unsealed(self, conn: Connection, since: int | None) -> int:
        r = resources.c
        stmt = (
            select(func.count())
            .select_from(resources)
            .where(r.resource_type == "AuditEvent", ~exists(self._chained(AUDIT, r.id)))
        )
        if since is not None:
            stmt = stmt.where(r.last_updated >= since)
        return int(conn.execute(stmt).scalar_one())

    def _checkpoint_if_due(
        self, conn: Connection, seq: int, chain_hash: bytes, *, force: bool
    ) -> int | None:
        last = conn.execute(
            select(audit_checkpoint.c.seq, audit_checkpoint.c.signed_at)
            .order_by(audit_checkpoint.c.seq.desc())
            .limit(1)
        ).first()
        last_seq, last_at = (0, 0) if last is None else (int(last[0]), int(last[1]))
        now = self._clock()
        if seq <= last_seq:
            return None
        if not (force or seq - last_seq >= self._every or now - last_at >= self._checkpoint_us):
            return None
        message = checkpoint_message(
            seq=seq, prev_seq=last_seq, chain_hash=chain_hash, signed_at=now, key=self.key_id
        )
        conn.execute(
            insert(audit_checkpoint),
            {
                "seq": seq,
                "prev_seq": last_seq,
                "chain_hash": chain_hash,
                "signed_at": now,
                "key_id": self.key_id,
                "signature": self._key.sign(message),
            },
        )
        # Outside the database too: a log line per checkpoint lets an auditor prove the chain
        # was not cut short later (`stafett audit verify --expect SEQ:HASH`).
        _log.info("audit checkpoint seq=%d hash=%s key=%s", seq, chain_hash.hex(), self.key_id)
        return seq


class SealerLeadership(Leadership):
    """Hold the sealer lock while the block runs (PostgreSQL); SQLite has one writer."""

    def __init__(self, database: Database) -> None:
        super().__init__(database, key=_SEALER_LOCK, role="sealer")
