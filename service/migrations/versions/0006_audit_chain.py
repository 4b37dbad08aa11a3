"""the tamper-evident audit chain: audit_chain, audit_checkpoint, audit_redaction

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision (only adds tables: old code keeps running)."""
    op.create_table(
        "audit_chain",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.BigInteger(), nullable=False),
        sa.Column("sealed_at", sa.BigInteger(), nullable=False),
        sa.Column("content_hash", sa.LargeBinary(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_chain"),
    )
    op.create_index(
        "ux_audit_chain_resource_id_kind", "audit_chain", ["resource_id", "kind"], unique=True
    )
    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("prev_seq", sa.BigInteger(), nullable=False),
        sa.Column("chain_hash", sa.LargeBinary(), nullable=False),
        sa.Column("signed_at", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_checkpoint"),
    )
    op.create_table(
        "audit_redaction",
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("redacted_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resource_id", name="pk_audit_redaction"),
    )
    op.create_index("ix_audit_redaction_redacted_at", "audit_redaction", ["redacted_at"])


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_audit_redaction_redacted_at", table_name="audit_redaction")
    op.drop_table("audit_redaction")
    op.drop_table("audit_checkpoint")
    op.drop_index("ux_audit_chain_resource_id_kind", table_name="audit_chain")
    op.drop_table("audit_chain")
