"""Alembic migrations, run programmatically (`stafett db upgrade`, or at start when embedded)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

__all__ = ["alembic_config", "upgrade_database"]

_SCRIPTS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    """Return an Alembic config pointing at Stafett's migration scripts."""
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database schema to the given revision."""
    config = alembic_config()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # several workers may start at once; one migrates, the others wait and find it done
            connection.execute(text("SELECT pg_advisory_xact_lock(7426561)"))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
