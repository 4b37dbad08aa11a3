"""Tables of the FHIR store: current resources, history and one search-index table per type.

The same Core tables run on PostgreSQL (JSONB documents) and SQLite (JSON text). Index tables
hold one row per extracted value so that every search is an indexed SQL query.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    cast,
)
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import TypeDecorator, TypeEngine, UserDefinedType

__all__ = [
    "INDEX_TABLES",
    "JsonDocument",
    "audit_chain",
    "audit_checkpoint",
    "audit_redaction",
    "delivery_state",
    "encryption_keys",
    "inbound_applied",
    "metadata",
    "outbox",
    "resource_history",
    "resources",
    "search_date",
    "search_reference",
    "search_string",
    "search_token",
    "time_events",
]

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "pk": "pk_%(table_name)s",
}
metadata = MetaData(naming_convention=NAMING)


class JsonDocument(TypeDecorator[str]):
    """A JSON document passed in and out as text: JSONB on PostgreSQL, TEXT on SQLite.

    The service stores and serves the exact JSON bytes it validated, so values cross this type
    as ``str`` and PostgreSQL does the text <-> jsonb conversion in C.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Use JSONB where the database has it."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(_JsonbText())
        return dialect.type_descriptor(Text())

    def bind_expression(self, bindvalue: Any) -> ColumnElement[Any]:
        """Send the document as text; the column type casts it on PostgreSQL."""
        return cast(bindvalue, _JsonbOnPostgres())

    def column_expression(self, column: Any) -> ColumnElement[Any]:
        """Read the document back as text."""
        return cast(column, Text)

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """Pass text through unchanged."""
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        """Return text whatever the driver delivered."""
        return None if value is None else str(value)


class _JsonbText(UserDefinedType[str]):
    """A column type spelled JSONB in DDL whose values cross the driver as plain text."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "JSONB"


class _JsonbOnPostgres(TypeDecorator[str]):
    """Cast target that is JSONB on PostgreSQL and plain TEXT elsewhere."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(_JsonbText())
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value


# Timestamps are integer microseconds since the epoch (UTC): exact, sortable and identical on
# both databases, which keeps range comparisons free of driver time-zone handling.
resources = Table(
    "resources",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    # JSON of the current version; the last live version is kept for a deleted resource so that
    # history stays complete, but reads answer 410 Gone.
    Column("content", JsonDocument, nullable=False),
    # the version's encrypted fields (service/crypto) and the id of the key that wraps them;
    # sealed_key "-" marks sensitive fields stored in clear, waiting for `stafett keys rotate`
    Column("sealed", LargeBinary, nullable=True),
    Column("sealed_key", String(64), nullable=True),
    Index(None, "resource_type", "last_updated"),
    # Lets PostgreSQL filter, count and sort matches with index-only scans and read the wide
    # JSON rows of one page only.
    Index(
        "ix_resources_live",
        "resource_type",
        "id",
        postgresql_include=["last_updated", "deleted"],
    ),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("resource_type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", BigInteger, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("method", String(8), nullable=False),
    Column("content", JsonDocument, nullable=True),
    Column("sealed", LargeBinary, nullable=True),
    Column("sealed_key", String(64), nullable=True),
    Index(None, "last_updated"),
    Index(None, "resource_type", "last_updated"),
)


def _index_table(name: str, *columns: Column[Any], indexes: tuple[Index, ...] = ()) -> Table:
    return Table(
        name,
        metadata,
        Column("resource_type", String(64), nullable=False),
        Column("resource_id", String(64), nullable=False),
        Column("param", String(64), nullable=False),
        *columns,
        Index(None, "resource_type", "resource_id"),
        *indexes,
    )


search_token = _index_table(
    "search_token",
    Column("system", Text, nullable=True),
    Column("code", Text, nullable=True),
    indexes=(Index(None, "resource_type", "param", "code", "system"),),
)

search_string = _index_table(
    "search_string",
    # casefolded and accent-stripped for the default (starts-with, insensitive) match
    Column("value_normalized", Text, nullable=False),
    Column("value_exact", Text, nullable=False),
    indexes=(
        Index(
            None,
            "resource_type",
            "param",
            "value_normalized",
            postgresql_ops={"value_normalized": "text_pattern_ops"},
        ),
    ),
)

search_date = _index_table(
    "search_date",
    Column("low", BigInteger, nullable=False),
    # inclusive upper bound in microseconds
    Column("high", BigInteger, nullable=False),
    indexes=(Index(None, "resource_type", "param", "low", "high"),),
)

search_reference = _index_table(
    "search_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    # absolute URLs to other servers and identifier-only references keep their raw form
    Column("target_url", Text, nullable=True),
    indexes=(
        Index(None, "resource_type", "param", "target_type", "target_id"),
        Index(None, "target_type", "target_id"),
    ),
)

INDEX_TABLES: tuple[Table, ...] = (search_token, search_string, search_date, search_reference)


# -- the bus: transactional outbox and the workers' own state ----------------------------------

# One row per event to publish, written in the transaction of the change it reports. The relay
# publishes unsent rows in `seq` order and then stamps `sent_at`; sent rows are kept a while for
# operators and then purged.
outbox = Table(
    "outbox",
    metadata,
    Column(
        "seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("topic", String(255), nullable=False),
    Column("key", String(64), nullable=False),
    Column("value", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger, nullable=True),
    # the relay's query: unsent rows in order, from a small index however long the history
    Index(
        "ix_outbox_unsent",
        "seq",
        postgresql_where=Column("sent_at").is_(None),
        sqlite_where=Column("sent_at").is_(None),
    ),
    Index(None, "sent_at"),
)

# Messages from stafett.inbound that were applied, written in the same transaction as their
# effect: a redelivered message finds its row and is not applied twice.
inbound_applied = Table(
    "inbound_applied",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("sender", String(32), nullable=True),
    Column("applied_at", BigInteger, nullable=False),
)

# Time-based events already emitted (evaluation due, consent expiring/expired), keyed by what
# they are about and the date they concern, so each is published once even across restarts.
time_events = Table(
    "time_events",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("emitted_at", BigInteger, nullable=False),
)

# What the consent router last concluded per child and organisation: whether the organisation
# may see the child's log. A change from yes to no sends the organisation a revocation notice.
delivery_state = Table(
    "delivery_state",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("organization", String(32), primary_key=True),
    Column("permitted", Boolean, nullable=False),
    Column("consent_id", String(64), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
)


# -- the tamper-evident audit chain (service/audit/chain.py, docs/security/audit-chain.md) -------

# One row per sealed AuditEvent (kind "audit") or lawful deletion of one (kind "redaction"), in
# the single order the sealer appended them: chain_hash = SHA-256 over the previous entry's
# chain_hash and this entry's fields, content_hash = SHA-256 of the canonical JSON sealed.
audit_chain = Table(
    "audit_chain",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("recorded_at", BigInteger, nullable=False),
    Column("sealed_at", BigInteger, nullable=False),
    Column("content_hash", LargeBinary, nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
    # the sealer's anti-join ("not yet chained") and verify's lookups; unique: sealed once
    Index("ux_audit_chain_resource_id_kind", "resource_id", "kind", unique=True),
)

# Ed25519 signatures over (seq, chain_hash, signed_at, prev_seq, key_id), every N entries or T
# seconds; the private key is never in the database.
audit_checkpoint = Table(
    "audit_checkpoint",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("prev_seq", BigInteger, nullable=False),
    Column("chain_hash", LargeBinary, nullable=False),
    Column("signed_at", BigInteger, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", LargeBinary, nullable=False),
)

# AuditEvents deleted lawfully (data lifecycle): the row goes, its chain entry stays, and this
# record, itself chained by the sealer, says why.
audit_redaction = Table(
    "audit_redaction",
    metadata,
    Column("resource_id", String(64), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("redacted_at", BigInteger, nullable=False),
    Index(None, "redacted_at"),
)

# Key encryption keys the database holds data under. At start every process opens each
# unretired key's probe, so a missing or wrong key stops it before it serves or writes anything.
encryption_keys = Table(
    "encryption_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    # a small value sealed under the key: opening it proves the configured key is the right one
    Column("probe", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("retired_at", BigInteger, nullable=True),
)
