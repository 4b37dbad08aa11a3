"""the bus: transactional outbox, applied inbound messages, time events, delivery state

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_table(
        "outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_outbox"),
        sa.UniqueConstraint("event_id", name="uq_outbox_event_id"),
    )
    op.create_index(
        "ix_outbox_unsent",
        "outbox",
        ["seq"],
        postgresql_where=sa.text("sent_at IS NULL"),
        sqlite_where=sa.text("sent_at IS NULL"),
    )
    op.create_index("ix_outbox_sent_at", "outbox", ["sent_at"])
    op.create_table(
        "inbound_applied",
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("sender", sa.String(32), nullable=True),
        sa.Column("applied_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name="pk_inbound_applied"),
    )
    op.create_table(
        "time_events",
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("emitted_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_time_events"),
    )
    op.create_table(
        "delivery_state",
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("organization", sa.String(32), nullable=False),
        sa.Column("permitted", sa.Boolean(), nullable=False),
        sa.Column("consent_id", sa.String(64), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("patient_id", "organization", name="pk_delivery_state"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_table("delivery_state")
    op.drop_table("time_events")
    op.drop_table("inbound_applied")
    op.drop_index("ix_outbox_sent_at", table_name="outbox")
    op.drop_index("ix_outbox_unsent", table_name="outbox")
    op.drop_table("outbox")
