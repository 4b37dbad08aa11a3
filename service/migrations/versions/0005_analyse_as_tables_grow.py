"""analyse the resource and search-index tables as they grow, not after 10 % growth

PostgreSQL's autovacuum analyses a table after 50 rows + 10 % of it changed, checked once a
minute. A database that fills quickly (a municipality's first import, a connector's bulk
pull) keeps planning with the statistics of an empty table for minutes, and the planner then
picks nested loops over the whole index for joins of the search tables (measured: 300 ms
instead of 0.7 ms for a log's Task owners). Analysing after 2 % (at least 500 rows) keeps
the estimates close; on SQLite there is nothing to set.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = (
    "resources",
    "resource_history",
    "search_token",
    "search_string",
    "search_date",
    "search_reference",
)


def upgrade() -> None:
    """Set per-table autovacuum analyse thresholds (PostgreSQL only)."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_analyze_scale_factor = 0.02, "
            "autovacuum_analyze_threshold = 500)"
        )


def downgrade() -> None:
    """Back to the server's defaults."""
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.execute(
            f"ALTER TABLE {table} RESET (autovacuum_analyze_scale_factor, "
            "autovacuum_analyze_threshold)"
        )
