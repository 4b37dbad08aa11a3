"""the data lifecycle: archive exports made of each child's log

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add lifecycle_archives: which child's log was archived when, with the manifest hash."""
    op.create_table(
        "lifecycle_archives",
        sa.Column("archive_id", sa.String(64), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("archived_at", sa.BigInteger(), nullable=False),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("resources", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("archive_id", name="pk_lifecycle_archives"),
    )
    op.create_index(
        "ix_lifecycle_archives_patient_id", "lifecycle_archives", ["patient_id"], unique=False
    )


def downgrade() -> None:
    """Drop lifecycle_archives."""
    op.drop_index("ix_lifecycle_archives_patient_id", table_name="lifecycle_archives")
    op.drop_table("lifecycle_archives")
