"""Low-level SQL access to stored resources: versions, history and index maintenance.

Every function takes the open ``Connection`` so that callers compose several writes into one
database transaction (a FHIR transaction Bundle, or later the audit and outbox rows).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    delete,
    func,
    insert,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.sql import Select

from service.crypto.errors import CryptoError
from service.crypto.fields import FieldSealer
from service.errors import StoredDataUnreadable
from service.search.extract import IndexRows, ResourceIndexer
from service.storage.schema import (
    resource_history,
    resources,
    search_date,
    search_reference,
    search_string,
    search_token,
)

__all__ = [
    "HistoryPage",
    "NewResource",
    "SqlStore",
    "StoredResource",
    "VersionMismatch",
    "token_pairs",
]


class VersionMismatch(Exception):
    """The row changed between read and write (a concurrent update won)."""


@dataclass(frozen=True)
class StoredResource:
    """One stored version of a resource with its JSON text."""

    resource_type: str
    id: str
    version_id: int
    last_updated: int
    deleted: bool
    content: str | None
    method: str | None = None

    @cached_property
    def data(self) -> dict[str, Any]:
        """Return the resource as a dict (parsed on first use)."""
        if self.content is None:
            return {}
        parsed: dict[str, Any] = orjson.loads(self.content)
        return parsed


@dataclass(frozen=True, slots=True)
class NewResource:
    """A resource to store as version 1: its id, time, finalised JSON text and parsed data."""

    id: str
    last_updated: int
    content: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A page of history entries, newest first, and the total count."""

    entries: list[StoredResource]
    total: int


# Rows are read as (type, id, version, lastUpdated, deleted, content, sealed[, method]):
# `sealed` is NULL unless the version has encrypted fields (service/crypto/fields.py).
_RESOURCE_COLUMNS = (
    resources.c.resource_type,
    resources.c.id,
    resources.c.version_id,
    resources.c.last_updated,
    resources.c.deleted,
    resources.c.content,
    resources.c.sealed,
)
_READ_CURRENT = text(
    "SELECT resource_type, id, version_id, last_updated, deleted, CAST(content AS TEXT), sealed"
    " FROM resources WHERE resource_type = :resource_type AND id = :id"
)
_READ_VERSION = text(
    "SELECT resource_type, id, version_id, last_updated, deleted, CAST(content AS TEXT), sealed,"
    " method FROM resource_history"
    " WHERE resource_type = :resource_type AND id = :id AND version_id = :version_id"
)
_HISTORY_COLUMNS = (
    resource_history.c.resource_type,
    resource_history.c.id,
    resource_history.c.version_id,
    resource_history.c.last_updated,
    resource_history.c.deleted,
    resource_history.c.content,
    resource_history.c.sealed,
    resource_history.c.method,
)


def token_pairs(pairs: Sequence[tuple[str, str]]) -> tuple[ColumnElement[bool], ...]:
    """Return the conditions on `search_token` rows carrying one of these (system, code)."""
    # the code alone is what the (type, param, code, system) index is read by
    return (
        search_token.c.code.in_(sorted({code for _system, code in pairs})),
        tuple_(search_token.c.system, search_token.c.code).in_(pairs),
    )


class SqlStore:
    """Reads and writes resource versions and keeps the search index in step."""

    def __init__(self, *, indexer: ResourceIndexer, sealer: FieldSealer | None = None) -> None:
        self.indexer = indexer
        # without an envelope the sensitive fields stay in clear, marked for `keys rotate`
        self.sealer = sealer or FieldSealer(None)
        # The hottest statements are pre-built text: a select() construct spends more CPU on
        # its cache key at every execution than the primary-key lookup costs the database.
        self._read_stmt = _READ_CURRENT
        self._vread_stmt = _READ_VERSION

    def read(self, conn: Connection, *, resource_type: str, id: str) -> StoredResource | None:
        """Return the current version (possibly a tombstone) or None."""
        row = conn.execute(self._read_stmt, {"resource_type": resource_type, "id": id}).first()
        return self.load(row) if row is not None else None

    def load(self, row: Sequence[Any], method: str | None = None) -> StoredResource:
        """Build a version from (type, id, version, lastUpdated, deleted, content, sealed)."""
        content = row[5]
        if row[6] is not None:
            content = self._open(row[0], row[1], content, bytes(row[6]))
        return StoredResource(row[0], row[1], row[2], row[3], row[4], content, method)

    def _open(self, resource_type: str, id: str, content: str, sealed: bytes) -> str:
        try:
            return self.sealer.merge(resource_type, id, content, sealed)
        except CryptoError as exc:
            # never serve a version whose encrypted part is missing or altered
            raise StoredDataUnreadable(
                f"{resource_type}/{id} cannot be decrypted: {exc}; the operators have been told"
            ) from exc

    def _seal(
        self, resource_type: str, id: str, content: str, data: dict[str, Any]
    ) -> tuple[str, dict[str, Any], bytes | None, str | None]:
        """Return the JSON and data to store and index, the sealed fields and their key id."""
        split = self.sealer.split(resource_type, id, content, data)
        if split is None:
            return content, data, None, None
        return split.content, split.data, split.sealed, split.key_id

    def read_many(
        self,
        conn: Connection,
        keys: Sequence[tuple[str, str]],
        *,
        include_deleted: bool = False,
    ) -> list[StoredResource]:
        """Return the current versions of the given (type, id) keys, in any order."""
        if not keys:
            return []
        by_type: dict[str, list[str]] = {}
        for resource_type, id in keys:
            by_type.setdefault(resource_type, []).append(id)
        found: list[StoredResource] = []
        for resource_type, ids in by_type.items():
            stmt = select(*_RESOURCE_COLUMNS).where(
                resources.c.resource_type == resource_type, resources.c.id.in_(ids)
            )
            if not include_deleted:
                stmt = stmt.where(resources.c.deleted.is_(False))
            found.extend(self.load(row) for row in conn.execute(stmt))
        return found

    def match_tokens(
        self,
        conn: Connection,
        resource_type: str,
        param: str,
        pairs: Sequence[tuple[str, str]],
    ) -> dict[tuple[str, str], list[StoredResource]]:
        """Return the live resources of a type matching `param=system|code`, for many pairs.

        Each pair's list is what the search `param=system|code` returns, in the order of a
        search page without _sort (newest first, then by id): the ingest worker resolves the
        conditional identifiers of a whole batch of messages with one statement instead of
        one search each. Pairs without a match are left out.
        """
        found: dict[tuple[str, str], list[StoredResource]] = {}
        wanted = sorted(set(pairs))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            stmt = (
                select(search_token.c.system, search_token.c.code, *_RESOURCE_COLUMNS)
                .join(
                    resources,
                    and_(
                        resources.c.resource_type == search_token.c.resource_type,
                        resources.c.id == search_token.c.resource_id,
                    ),
                )
                .where(
                    search_token.c.resource_type == resource_type,
                    search_token.c.param == param,
                    *token_pairs(chunk),
                    resources.c.deleted.is_(False),
                )
            )
            seen: set[tuple[str, str, str]] = set()
            for row in conn.execute(stmt):
                key = (row[0], row[1])
                if (key[0], key[1], row[3]) in seen:
                    continue  # one resource once per pair, as `id IN (...)` returns it
                seen.add((key[0], key[1], row[3]))
                found.setdefault(key, []).append(self.load(row[2:]))
        for matches in found.values():
            matches.sort(key=lambda m: (-m.last_updated, m.id))
        return found

    def vread(
        self, conn: Connection, *, resource_type: str, id: str, version_id: int
    ) -> StoredResource | None:
        """Return one historical version or None."""
        row = conn.execute(
            self._vread_stmt, {"resource_type": resource_type, "id": id, "version_id": version_id}
        ).first()
        return self.load(row, row[7]) if row is not None else None

    def lock_current(
        self, conn: Connection, *, resource_type: str, id: str
    ) -> StoredResource | None:
        """Read the current version for update (row lock on PostgreSQL)."""
        stmt = (
            select(*_RESOURCE_COLUMNS)
            .where(resources.c.resource_type == resource_type, resources.c.id == id)
            .with_for_update()
        )
        row = conn.execute(stmt).first()
        return self.load(row) if row is not None else None

    def write(
        self,
        conn: Connection,
        *,
        resource_type: str,
        id: str,
        version_id: int,
        last_updated: int,
        content: str,
        data: dict[str, Any],
        method: str,
        previous_version: int | None,
    ) -> IndexRows:
        """Store a new live version, its history row and its index rows; return the latter.

        Sealed fields are taken out first, so neither the stored JSON nor the index sees them.
        """
        content, data, sealed, sealed_key = self._seal(resource_type, id, content, data)
        rows = self.indexer.index(data)
        values = {
            "resource_type": resource_type,
            "id": id,
            "version_id": version_id,
            "last_updated": last_updated,
            "deleted": False,
            "content": content,
            "sealed": sealed,
            "sealed_key": sealed_key,
        }
        if conn.dialect.name == "postgresql":
            self._write_postgres(conn, values, method, previous_version, rows)
            return rows
        if previous_version is None:
            conn.execute(insert(resources), values)
        else:
            self._update_current(conn, values, previous_version)
            self._delete_index(conn, resource_type, id)
        conn.execute(insert(resource_history), {**values, "method": method})
        self._insert_index(conn, resource_type, id, rows)
        return rows

    def create_many(
        self, conn: Connection, resource_type: str, items: Sequence[NewResource]
    ) -> None:
        """Store new resources of one type (version 1, POST) with their history and index rows.

        On PostgreSQL this is one statement whatever the number of resources, so it also
        commits on its own on an autocommit connection (the audit trail relies on that).
        """
        if not items:
            return
        if conn.dialect.name != "postgresql":
            for item in items:
                self.write(
                    conn,
                    resource_type=resource_type,
                    id=item.id,
                    version_id=1,
                    last_updated=item.last_updated,
                    content=item.content,
                    data=item.data,
                    method="POST",
                    previous_version=None,
                )
            return
        # The content is already JSON text: splice it into the document instead of parsing
        # and dumping it again.
        parts = []
        for item in items:
            content, data, sealed, sealed_key = self._seal(
                resource_type, item.id, item.content, item.data
            )
            rows = self.indexer.index(data)
            head = orjson.dumps(
                {
                    "id": item.id,
                    "lu": item.last_updated,
                    "sb": base64.b64encode(sealed).decode() if sealed is not None else None,
                    "sk": sealed_key,
                    "t": [{"p": p, "s": s, "c": c} for p, s, c in set(rows.tokens)],
                    "s": [{"p": p, "n": n, "e": e} for p, n, e in set(rows.strings)],
                    "d": [{"p": p, "l": lo, "h": hi} for p, lo, hi in set(rows.dates)],
                    "r": [{"p": p, "t": t, "i": i, "u": u} for p, t, i, u in set(rows.references)],
                }
            ).decode()
            parts.append(f'{head[:-1]},"c":{content}}}')
        written = conn.execute(
            _PG_CREATE_MANY, {"rt": resource_type, "doc": "[" + ",".join(parts) + "]"}
        ).scalar_one()
        if written != len(items):
            raise VersionMismatch(f"{resource_type}: {written} of {len(items)} stored")

    def _write_postgres(
        self,
        conn: Connection,
        values: dict[str, Any],
        method: str,
        previous_version: int | None,
        rows: IndexRows,
    ) -> None:
        # One statement instead of up to ten: every round trip and every SQLAlchemy execute
        # costs more than the work itself for a 1-2 KB resource.
        # all index rows travel as one JSON document: cheaper to send than twelve arrays
        index_rows = orjson.dumps(
            {
                "t": [{"p": p, "s": s, "c": c} for p, s, c in set(rows.tokens)],
                "s": [{"p": p, "n": n, "e": e} for p, n, e in set(rows.strings)],
                "d": [{"p": p, "l": lo, "h": hi} for p, lo, hi in set(rows.dates)],
                "r": [{"p": p, "t": t, "i": i, "u": u} for p, t, i, u in set(rows.references)],
            }
        ).decode()
        params = {
            "rt": values["resource_type"],
            "id": values["id"],
            "v": values["version_id"],
            "lu": values["last_updated"],
            "content": values["content"],
            "sealed": values["sealed"],
            "skey": values["sealed_key"],
            "method": method,
            "prev": previous_version,
            "idx": index_rows,
        }
        statement = _PG_CREATE if previous_version is None else _PG_UPDATE
        written = conn.execute(statement, params).scalar_one()
        if written != 1:
            raise VersionMismatch(f"{values['resource_type']}/{values['id']}")

    def write_tombstone(
        self,
        conn: Connection,
        *,
        current: StoredResource,
        last_updated: int,
    ) -> int:
        """Mark a resource deleted as a new version; return that version id."""
        version_id = current.version_id + 1
        values = {
            "resource_type": current.resource_type,
            "id": current.id,
            "version_id": version_id,
            "last_updated": last_updated,
            "deleted": True,
        }
        # the current row keeps the last live version's stored JSON and seal untouched (the
        # `current` given here is decrypted and must not be written back)
        self._update_current(conn, values, current.version_id)
        conn.execute(
            insert(resource_history),
            {**values, "content": None, "sealed": None, "sealed_key": None, "method": "DELETE"},
        )
        self._delete_index(conn, current.resource_type, current.id)
        return version_id

    def _update_current(
        self, conn: Connection, values: dict[str, Any], previous_version: int
    ) -> None:
        stmt = (
            update(resources)
            .where(
                resources.c.resource_type == values["resource_type"],
                resources.c.id == values["id"],
                resources.c.version_id == previous_version,
            )
            .values(
                {key: value for key, value in values.items() if key not in ("resource_type", "id")}
            )
        )
        if conn.execute(stmt).rowcount != 1:
            raise VersionMismatch(f"{values['resource_type']}/{values['id']}")

    def _delete_index(self, conn: Connection, resource_type: str, id: str) -> None:
        for table in (search_token, search_string, search_date, search_reference):
            conn.execute(
                delete(table).where(
                    table.c.resource_type == resource_type, table.c.resource_id == id
                )
            )

    def _insert_index(self, conn: Connection, resource_type: str, id: str, rows: IndexRows) -> None:
        key = {"resource_type": resource_type, "resource_id": id}
        if rows.tokens:
            conn.execute(
                insert(search_token),
                [{**key, "param": p, "system": s, "code": c} for p, s, c in set(rows.tokens)],
            )
        if rows.strings:
            conn.execute(
                insert(search_string),
                [
                    {**key, "param": p, "value_normalized": n, "value_exact": e}
                    for p, n, e in set(rows.strings)
                ],
            )
        if rows.dates:
            conn.execute(
                insert(search_date),
                [{**key, "param": p, "low": lo, "high": hi} for p, lo, hi in set(rows.dates)],
            )
        if rows.references:
            conn.execute(
                insert(search_reference),
                [
                    {**key, "param": p, "target_type": t, "target_id": i, "target_url": u}
                    for p, t, i, u in set(rows.references)
                ],
            )

    def history(
        self,
        conn: Connection,
        *,
        resource_type: str | None,
        id: str | None,
        since: int | None,
        before: int | None,
        count: int,
        offset: int,
        visible: ColumnElement[bool] | None = None,
    ) -> HistoryPage:
        """Return history entries newest first, filtered by type, id, time and visibility.

        `visible` is a condition on `resources` (the access policy's search filter): only
        the history of resources meeting it is listed and counted.
        """
        conditions: list[ColumnElement[bool]] = []
        if visible is not None and resource_type is not None:
            conditions.append(
                resource_history.c.id.in_(
                    select(resources.c.id).where(
                        resources.c.resource_type == resource_type, visible
                    )
                )
            )
        if resource_type is not None:
            conditions.append(resource_history.c.resource_type == resource_type)
        if id is not None:
            conditions.append(resource_history.c.id == id)
        if since is not None:
            conditions.append(resource_history.c.last_updated >= since)
        if before is not None:
            conditions.append(resource_history.c.last_updated < before)
        total = conn.execute(
            select(func.count()).select_from(resource_history).where(*conditions)
        ).scalar_one()
        stmt: Select[Any] = (
            select(*_HISTORY_COLUMNS)
            .where(*conditions)
            .order_by(
                resource_history.c.last_updated.desc(),
                resource_history.c.version_id.desc(),
                resource_history.c.id,
            )
            .limit(count)
            .offset(offset)
        )
        entries = [self.load(row, row[7]) for row in conn.execute(stmt)]
        return HistoryPage(entries=entries, total=int(total))


_PG_INDEX_INSERTS = """
  idx AS (SELECT CAST(:idx AS jsonb) AS doc),
  tok AS (INSERT INTO search_token (resource_type, resource_id, param, system, code)
          SELECT :rt, :id, x.p, x.s, x.c
          FROM idx, jsonb_to_recordset(idx.doc -> 't') AS x(p text, s text, c text)),
  str AS (INSERT INTO search_string (resource_type, resource_id, param, value_normalized,
                                     value_exact)
          SELECT :rt, :id, x.p, x.n, x.e
          FROM idx, jsonb_to_recordset(idx.doc -> 's') AS x(p text, n text, e text)),
  dat AS (INSERT INTO search_date (resource_type, resource_id, param, low, high)
          SELECT :rt, :id, x.p, x.l, x.h
          FROM idx, jsonb_to_recordset(idx.doc -> 'd') AS x(p text, l bigint, h bigint)),
  ref AS (INSERT INTO search_reference (resource_type, resource_id, param, target_type,
                                        target_id, target_url)
          SELECT :rt, :id, x.p, x.t, x.i, x.u
          FROM idx, jsonb_to_recordset(idx.doc -> 'r') AS x(p text, t text, i text, u text))
"""
_PG_HISTORY_INSERT = """
  hist AS (INSERT INTO resource_history (resource_type, id, version_id, last_updated, deleted,
                                         method, content, sealed, sealed_key)
           VALUES (:rt, :id, :v, :lu, false, :method, CAST(:content AS jsonb), :sealed, :skey)),
"""
_PG_CREATE_MANY = text(
    """
WITH ev AS (SELECT * FROM jsonb_to_recordset(CAST(:doc AS jsonb))
            AS e(id text, lu bigint, c jsonb, sb text, sk text, t jsonb, s jsonb, d jsonb,
                 r jsonb)),
  cur AS (INSERT INTO resources (resource_type, id, version_id, last_updated, deleted, content,
                                 sealed, sealed_key)
          SELECT :rt, ev.id, 1, ev.lu, false, ev.c, decode(ev.sb, 'base64'), ev.sk FROM ev
          RETURNING 1),
  hist AS (INSERT INTO resource_history (resource_type, id, version_id, last_updated, deleted,
                                         method, content, sealed, sealed_key)
           SELECT :rt, ev.id, 1, ev.lu, false, 'POST', ev.c, decode(ev.sb, 'base64'), ev.sk
           FROM ev),
  tok AS (INSERT INTO search_token (resource_type, resource_id, param, system, code)
          SELECT :rt, ev.id, x.p, x.s, x.c
          FROM ev, jsonb_to_recordset(ev.t) AS x(p text, s text, c text)),
  str AS (INSERT INTO search_string (resource_type, resource_id, param, value_normalized,
                                     value_exact)
          SELECT :rt, ev.id, x.p, x.n, x.e
          FROM ev, jsonb_to_recordset(ev.s) AS x(p text, n text, e text)),
  dat AS (INSERT INTO search_date (resource_type, resource_id, param, low, high)
          SELECT :rt, ev.id, x.p, x.l, x.h
          FROM ev, jsonb_to_recordset(ev.d) AS x(p text, l bigint, h bigint)),
  ref AS (INSERT INTO search_reference (resource_type, resource_id, param, target_type,
                                        target_id, target_url)
          SELECT :rt, ev.id, x.p, x.t, x.i, x.u
          FROM ev, jsonb_to_recordset(ev.r) AS x(p text, t text, i text, u text))
SELECT count(*) FROM cur"""
)
# Data-modifying CTEs all see the statement's snapshot, so the DELETEs below remove only the
# previous version's index rows and never the ones inserted beside them.
# S608: these are constant strings joined at import; every value is a bound parameter.
_PG_CREATE = text(
    "WITH cur AS (INSERT INTO resources (resource_type, id, version_id, last_updated, deleted,"  # noqa: S608
    " content, sealed, sealed_key)"
    " VALUES (:rt, :id, :v, :lu, false, CAST(:content AS jsonb), :sealed, :skey) RETURNING 1),"
    + _PG_HISTORY_INSERT
    + _PG_INDEX_INSERTS
    + "SELECT count(*) FROM cur"
)
_PG_UPDATE = text(
    "WITH cur AS (UPDATE resources SET version_id = :v, last_updated = :lu, deleted = false,"  # noqa: S608
    " content = CAST(:content AS jsonb), sealed = :sealed, sealed_key = :skey"
    " WHERE resource_type = :rt AND id = :id AND version_id = :prev RETURNING 1),"
    + _PG_HISTORY_INSERT
    + """
  dtok AS (DELETE FROM search_token WHERE resource_type = :rt AND resource_id = :id),
  dstr AS (DELETE FROM search_string WHERE resource_type = :rt AND resource_id = :id),
  ddat AS (DELETE FROM search_date WHERE resource_type = :rt AND resource_id = :id),
  dref AS (DELETE FROM search_reference WHERE resource_type = :rt AND resource_id = :id),"""
    + _PG_INDEX_INSERTS
    + "SELECT count(*) FROM cur"
)
