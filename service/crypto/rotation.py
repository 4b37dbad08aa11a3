"""Key rotation and status: re-wrap or re-encrypt sealed rows online, in small batches.

Each batch is its own short transaction and every row update is conditional on the row being
unchanged since it was read, so the service keeps serving and writing meanwhile; a row that a
concurrent write replaced is already sealed under the active key. Rerunning resumes.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Table, func, select, tuple_, update

from service.crypto.envelope import TEXT_PREFIX, Envelope, key_id_of
from service.crypto.errors import KeyringInvalid
from service.crypto.fields import PLAINTEXT, FieldSealer
from service.crypto.runtime import register_key
from service.outbox.writer import outbox_context
from service.search.values import now_micros
from service.storage.database import Database
from service.storage.schema import encryption_keys, outbox, resource_history, resources

__all__ = ["RotationReport", "key_usage", "retire_key", "rotate"]

_SEALED_TABLES: tuple[Table, ...] = (resources, resource_history)
_CLEAR = "(nothing sealed)"


@dataclass(slots=True)
class RotationReport:
    """What a rotation changed, per table."""

    rewrapped: dict[str, int] = field(default_factory=dict)
    encrypted: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def add(self, kind: str, table: str, count: int) -> None:
        """Count rows of a table changed in one way."""
        target = self.rewrapped if kind == "rewrapped" else self.encrypted
        target[table] = target.get(table, 0) + count


def key_usage(conn: Connection) -> dict[str, dict[str, int]]:
    """Return row counts per key id for every table that holds sealed data."""
    usage: dict[str, dict[str, int]] = {}
    for table in _SEALED_TABLES:
        rows = conn.execute(
            select(table.c.sealed_key, func.count()).group_by(table.c.sealed_key)
        ).all()
        usage[table.name] = {
            (_CLEAR if key is None else "in clear, to encrypt" if key == PLAINTEXT else key): n
            for key, n in rows
        }
    counts: dict[str, int] = {}
    # the outbox is small (sent rows are purged), so its values are read rather than indexed
    for (value,) in conn.execute(select(outbox.c.value)):
        key = key_id_of(_outbox_blob(value)) if value.startswith(TEXT_PREFIX) else "not sealed"
        counts[key] = counts.get(key, 0) + 1
    usage[outbox.name] = counts
    return usage


def _outbox_blob(value: str) -> bytes:
    return base64.b64decode(value[len(TEXT_PREFIX) :])


def rotate(
    database: Database,
    sealer: FieldSealer,
    *,
    reencrypt: bool = False,
    batch_size: int = 500,
    pause_s: float = 0.0,
    progress: Callable[[str], None] = lambda _line: None,
) -> RotationReport:
    """Bring every sealed row under the active key and encrypt rows still in clear.

    Re-wrapping replaces only each row's wrapped data key (fast: the data is not decrypted);
    `reencrypt` also gives every value a new data key and nonce.
    """
    envelope = sealer.envelope
    if envelope is None:
        raise KeyringInvalid("encryption at rest is off (STAFETT_ENCRYPTION_AT_REST=false)")
    active = envelope.active_key_id()
    with database.write() as conn:
        register_key(conn, envelope, active)
    report = RotationReport()
    for table in _SEALED_TABLES:
        _rotate_table(
            database,
            sealer=sealer,
            envelope=envelope,
            table=table,
            active=active,
            reencrypt=reencrypt,
            batch_size=batch_size,
            pause_s=pause_s,
            report=report,
            progress=progress,
        )
    _rotate_outbox(
        database,
        envelope=envelope,
        active=active,
        reencrypt=reencrypt,
        batch_size=batch_size,
        report=report,
        progress=progress,
    )
    return report


def _rotate_table(
    database: Database,
    *,
    sealer: FieldSealer,
    envelope: Envelope,
    table: Table,
    active: str,
    reencrypt: bool,
    batch_size: int,
    pause_s: float,
    report: RotationReport,
    progress: Callable[[str], None],
) -> None:
    is_history = table is resource_history
    key_columns = [table.c.resource_type, table.c.id] + ([table.c.version_id] if is_history else [])
    last: tuple[Any, ...] | None = None
    done = 0
    while True:
        with database.write() as conn:
            stmt = (
                select(
                    *key_columns,
                    table.c.version_id,
                    table.c.content,
                    table.c.sealed,
                    table.c.sealed_key,
                )
                .where(table.c.sealed_key.is_not(None), table.c.sealed_key != active)
                .order_by(*key_columns)
                .limit(batch_size)
            )
            if last is not None:
                stmt = stmt.where(tuple_(*key_columns) > tuple_(*last))
            rows = conn.execute(stmt).all()
            if not rows:
                break
            for row in rows:
                resource_type, id = row[0], row[1]
                version_id, content, sealed, sealed_key = row[-4:]
                if sealed_key == PLAINTEXT:
                    values = _encrypt_clear(sealer, resource_type, id, content)
                    kind = "encrypted"
                elif reencrypt:
                    context = sealer.context_of(resource_type, id, content)
                    values = {"sealed": envelope.reencrypt(bytes(sealed), context=context)}
                    kind = "rewrapped"
                else:
                    values = {"sealed": envelope.rewrap(bytes(sealed))}
                    kind = "rewrapped"
                if "sealed" in values:
                    values["sealed_key"] = active if values["sealed"] is not None else None
                conditions = [
                    table.c.resource_type == resource_type,
                    table.c.id == id,
                    table.c.version_id == version_id,
                    table.c.sealed_key == sealed_key,
                ]
                changed = conn.execute(update(table).where(*conditions).values(values)).rowcount
                if changed:
                    report.add(kind, table.name, 1)
                else:
                    report.skipped += 1  # rewritten meanwhile, by a write that sealed it anew
            last = tuple(rows[-1][: len(key_columns)])
        done += len(rows)
        progress(f"{table.name}: {done} rows done")
        if pause_s:
            time.sleep(pause_s)  # leave the database to the service between batches


def _encrypt_clear(
    sealer: FieldSealer, resource_type: str, id: str, content: str | None
) -> dict[str, Any]:
    if content is None:
        return {"sealed_key": None}
    data = orjson.loads(content)
    split = sealer.split(resource_type, id, content, data)
    if split is None:
        return {"sealed_key": None}  # nothing sensitive in this version
    return {"content": split.content, "sealed": split.sealed}


def _rotate_outbox(
    database: Database,
    *,
    envelope: Envelope,
    active: str,
    reencrypt: bool,
    batch_size: int,
    report: RotationReport,
    progress: Callable[[str], None],
) -> None:
    last = 0
    while True:
        with database.write() as conn:
            rows = conn.execute(
                select(outbox.c.seq, outbox.c.event_id, outbox.c.value)
                .where(outbox.c.seq > last)
                .order_by(outbox.c.seq)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            for seq, event_id, value in rows:
                context = outbox_context(event_id)
                if not value.startswith(TEXT_PREFIX):
                    new = envelope.seal_text(value.encode(), context=context)
                    kind = "encrypted"
                elif reencrypt or key_id_of(_outbox_blob(value)) != active:
                    opened = envelope.open_text(value, context=context)
                    new = envelope.seal_text(opened, context=context)
                    kind = "rewrapped"
                else:
                    continue
                changed = conn.execute(
                    update(outbox)
                    .where(outbox.c.seq == seq, outbox.c.value == value)
                    .values(value=new)
                ).rowcount
                if changed:
                    report.add(kind, outbox.name, 1)
            last = rows[-1][0]
        progress(f"outbox: up to seq {last} done")


def retire_key(database: Database, key_id: str, *, active: str | None) -> dict[str, int]:
    """Mark a key retired when nothing uses it; return the uses found (empty when retired)."""
    if key_id == active:
        return {"the active key": 1}
    with database.write() as conn:
        usage = key_usage(conn)
        uses = {table: counts[key_id] for table, counts in usage.items() if counts.get(key_id)}
        if uses:
            return uses
        conn.execute(
            update(encryption_keys)
            .where(encryption_keys.c.key_id == key_id)
            .values(retired_at=now_micros())
        )
    return {}
