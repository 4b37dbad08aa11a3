"""The lifecycle's own table (migration 0008), kept apart from the store's metadata."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, String, Table

__all__ = ["lifecycle_archives", "lifecycle_metadata"]

lifecycle_metadata = MetaData()

# One row per archive export of a child's log. The purge requires an export made after the
# log closed (STAFETT_RETENTION_REQUIRE_ARCHIVE) and deletes the rows with the child's data;
# the deletion record keeps the manifest hash as proof of what the archive received.
lifecycle_archives = Table(
    "lifecycle_archives",
    lifecycle_metadata,
    Column("archive_id", String(64), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("archived_at", BigInteger, nullable=False),
    Column("closed_at", BigInteger, nullable=True),
    Column("manifest_sha256", String(64), nullable=False),
    Column("resources", Integer, nullable=False),
    Index("ix_lifecycle_archives_patient_id", "patient_id"),
)
