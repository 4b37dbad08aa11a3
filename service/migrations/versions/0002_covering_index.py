"""covering index on resources for index-only filtering, counting and sorting

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        "ix_resources_live",
        "resources",
        ["resource_type", "id"],
        unique=False,
        postgresql_include=["last_updated", "deleted"],
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_resources_live", table_name="resources")
