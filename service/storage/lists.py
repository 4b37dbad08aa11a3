"""`column IN (values)` for long lists of ids: one array parameter on PostgreSQL.

An IN list binds one parameter per value, so each list length is a new statement text:
SQLAlchemy renders it again and psycopg parses it again on every execution (psycopg caches
its conversion only for statements under 4 KB and 50 parameters). For a service that may see
a few hundred children, that cost more than running the query (measured: about a sixth of the
API's CPU on a type-wide search with consent on). `column = ANY(:ids)` keeps one statement text
whatever the number of ids. SQLite has no arrays and keeps the IN list.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import BindParameter, ColumnElement, Connection, String, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY

__all__ = ["array_param", "one_of", "uses_arrays"]


def uses_arrays(conn: Connection) -> bool:
    """Return whether this connection's database binds a list as one array parameter."""
    return conn.dialect.name == "postgresql"


def array_param(name: str) -> BindParameter[Sequence[str]]:
    """Return a named bind parameter that takes a list of strings as one PostgreSQL array."""
    return bindparam(name, type_=ARRAY(String))


def one_of(
    column: ColumnElement[str], values: Collection[str], *, arrays: bool
) -> ColumnElement[bool]:
    """Return `column IN values`: `= ANY(array)` when `arrays`, else an IN list."""
    if arrays:
        return column == any_(bindparam(None, list(values), type_=ARRAY(String), unique=True))
    return column.in_(list(values))
