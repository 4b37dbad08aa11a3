"""encryption at rest: sealed fields beside the stored JSON, and the key registry

Adds `sealed` (the encrypted fields of a version) and `sealed_key` (the id of the key that
wraps them) to `resources` and `resource_history`, and the `encryption_keys` registry. Rows of
the types that can hold sealed fields are marked `sealed_key = '-'` (stored in clear, not yet
checked): `stafett keys rotate` then encrypts them online, in batches, and clears the mark of
those without any sensitive field. The type list is copied here on purpose: a migration must
keep doing what it did when it was written.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PLAINTEXT = "-"
_TYPES = (
    "CarePlan",
    "CareTeam",
    "Communication",
    "Consent",
    "Goal",
    "Patient",
    "RelatedPerson",
    "Task",
)


def upgrade() -> None:
    """Add the sealed columns and the key registry; mark existing rows for encryption."""
    for table in ("resources", "resource_history"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("sealed", sa.LargeBinary(), nullable=True))
            batch.add_column(sa.Column("sealed_key", sa.String(64), nullable=True))
        rows = sa.table(
            table,
            sa.column("resource_type", sa.String),
            sa.column("content", sa.Text),
            sa.column("sealed_key", sa.String),
        )
        op.execute(
            rows.update()
            .where(rows.c.resource_type.in_(_TYPES), rows.c.content.is_not(None))
            .values(sealed_key=_PLAINTEXT)
        )
    op.create_table(
        "encryption_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("probe", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("retired_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_encryption_keys")),
    )


def downgrade() -> None:
    """Drop the sealed columns and the registry; refused while any row is sealed."""
    sealed = op.get_bind().execute(
        sa.text("SELECT count(*) FROM resource_history WHERE sealed IS NOT NULL")
    )
    if sealed.scalar_one():
        raise RuntimeError("rows are encrypted: dropping their sealed fields would lose them")
    op.drop_table("encryption_keys")
    for table in ("resource_history", "resources"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("sealed_key")
            batch.drop_column("sealed")
