"""index who owns the Tasks of each child's log, for the consent router

Backfills the internal search-index parameter `stafett-log-owner` (one token per Task and
owner: code = the child's Patient id, system = `Organization/<id>`, `PractitionerRole/<id>`
or `enh:<org.nr>`, see service/search/extract.py) for the Tasks stored before it existed;
later writes index it themselves. It is derived in SQL from the Tasks' own `patient`,
`owner` and `owner:identifier` index rows, exactly as the indexer derives it, so no JSON is
read (or decrypted). The names are copied here on purpose: a migration must keep doing what
it did when it was written, whatever the code later calls things.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARAM = "stafett-log-owner"
_ENH = "urn:oid:2.16.578.1.12.4.1.4.101"

_token = sa.table(
    "search_token",
    sa.column("resource_type", sa.String),
    sa.column("resource_id", sa.String),
    sa.column("param", sa.String),
    sa.column("system", sa.Text),
    sa.column("code", sa.Text),
)
_reference = sa.table(
    "search_reference",
    sa.column("resource_type", sa.String),
    sa.column("resource_id", sa.String),
    sa.column("param", sa.String),
    sa.column("target_type", sa.String),
    sa.column("target_id", sa.String),
)


def upgrade() -> None:
    """Apply this revision."""
    conn = op.get_bind()
    _drop_rows(conn)  # a rerun after a partial deployment must not duplicate rows
    child = _reference.alias("child")
    owner = _reference.alias("owner")
    by_org = _token.alias("by_org")
    of_child = (
        child.c.resource_type == "Task",
        child.c.param == "patient",
        child.c.target_type == "Patient",
        child.c.target_id.is_not(None),
    )
    referenced = (
        sa.select(
            sa.literal("Task"),
            child.c.resource_id,
            sa.literal(_PARAM),
            owner.c.target_type + sa.literal("/") + owner.c.target_id,
            child.c.target_id,
        )
        .join_from(
            child,
            owner,
            sa.and_(
                owner.c.resource_type == "Task",
                owner.c.resource_id == child.c.resource_id,
                owner.c.param == "owner",
                owner.c.target_type.in_(("Organization", "PractitionerRole")),
                owner.c.target_id.is_not(None),
            ),
        )
        .where(*of_child)
    )
    by_orgnr = (
        sa.select(
            sa.literal("Task"),
            child.c.resource_id,
            sa.literal(_PARAM),
            sa.literal("enh:") + by_org.c.code,
            child.c.target_id,
        )
        .join_from(
            child,
            by_org,
            sa.and_(
                by_org.c.resource_type == "Task",
                by_org.c.resource_id == child.c.resource_id,
                by_org.c.param == "owner:identifier",
                by_org.c.system == _ENH,
                by_org.c.code.is_not(None),
                by_org.c.code != "",
            ),
        )
        .where(*of_child)
    )
    conn.execute(
        sa.insert(_token).from_select(
            ["resource_type", "resource_id", "param", "system", "code"],
            sa.union(referenced, by_orgnr),
        )
    )


def downgrade() -> None:
    """Revert this revision."""
    _drop_rows(op.get_bind())


def _drop_rows(conn: sa.Connection) -> None:
    conn.execute(
        sa.delete(_token).where(_token.c.resource_type == "Task", _token.c.param == _PARAM)
    )
