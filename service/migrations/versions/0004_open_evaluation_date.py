"""index the planned evaluation date of open Tasks for the time-event scheduler

Backfills the internal search-index parameter `stafett-open-evaluation-date`
(`Task.restriction.period.end` of Tasks whose status is still open, see
service/search/extract.py) for the Tasks stored before it existed; later writes index it
themselves. The parameter and statuses are copied here on purpose: a migration must keep
doing what it did when it was written, whatever the code later calls things.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

from service.search.values import InvalidDate, parse_date_range

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PARAM = "stafett-open-evaluation-date"
_OPEN = ("requested", "received", "accepted", "ready", "in-progress", "on-hold")
_BATCH = 1000

_resources = sa.table(
    "resources",
    sa.column("resource_type", sa.String),
    sa.column("id", sa.String),
    sa.column("deleted", sa.Boolean),
    sa.column("content", sa.Text),
)
_search_token = sa.table(
    "search_token",
    sa.column("resource_type", sa.String),
    sa.column("resource_id", sa.String),
    sa.column("param", sa.String),
    sa.column("code", sa.Text),
)
_search_date = sa.table(
    "search_date",
    sa.column("resource_type", sa.String),
    sa.column("resource_id", sa.String),
    sa.column("param", sa.String),
    sa.column("low", sa.BigInteger),
    sa.column("high", sa.BigInteger),
)


def _rows(task_id: str, task: dict[str, Any]) -> list[dict[str, Any]]:
    if task.get("status") not in _OPEN:
        return []
    restriction = task.get("restriction")
    period = restriction.get("period") if isinstance(restriction, dict) else None
    end = period.get("end") if isinstance(period, dict) else None
    if not isinstance(end, str):
        return []
    try:
        low, high = parse_date_range(end)
    except InvalidDate:
        return []  # the indexer leaves out what it cannot place, too
    return [
        {
            "resource_type": "Task",
            "resource_id": task_id,
            "param": _PARAM,
            "low": low,
            "high": high,
        }
    ]


def upgrade() -> None:
    """Apply this revision."""
    conn = op.get_bind()
    _drop_rows(conn)  # a rerun after a partial deployment must not duplicate rows
    is_open = sa.exists().where(
        _search_token.c.resource_type == "Task",
        _search_token.c.resource_id == _resources.c.id,
        _search_token.c.param == "status",
        _search_token.c.code.in_(_OPEN),
    )
    last_id = ""
    while True:
        # keyset pages keep memory flat however many Tasks there are; closed Tasks (most of
        # them, in time) are left out by the status index before any JSON is read
        page = conn.execute(
            sa.select(_resources.c.id, sa.cast(_resources.c.content, sa.Text))
            .where(
                _resources.c.resource_type == "Task",
                _resources.c.deleted.is_(False),
                _resources.c.id > last_id,
                is_open,
            )
            .order_by(_resources.c.id)
            .limit(_BATCH)
        ).all()
        if not page:
            return
        rows = [row for task_id, content in page for row in _rows(task_id, orjson.loads(content))]
        if rows:
            conn.execute(sa.insert(_search_date), rows)
        last_id = page[-1][0]


def downgrade() -> None:
    """Revert this revision."""
    _drop_rows(op.get_bind())


def _drop_rows(conn: sa.Connection) -> None:
    conn.execute(
        sa.delete(_search_date).where(
            _search_date.c.resource_type == "Task", _search_date.c.param == _PARAM
        )
    )
