"""PostgreSQL must plan searches for their actual values, never with a cached generic plan."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from service.access import RequestContext, ScopeAccessPolicy
from service.repository import FhirRepository, RepositoryConfig
from service.search.extract import ResourceIndexer
from service.seed import seed_principal
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.store import SqlStore
from tests.conftest import new_postgres_database

pytestmark = pytest.mark.postgres


def test_searches_are_never_prepared_but_lookups_are(postgres_admin_url: str) -> None:
    database = Database(new_postgres_database(postgres_admin_url), pool_size=1)
    try:
        upgrade_database(database.engine)
        config = RepositoryConfig(
            database=database,
            store=SqlStore(indexer=ResourceIndexer(base_url="http://test/fhir")),
            policy=ScopeAccessPolicy(),
            base_url="http://test/fhir",
            default_page_size=20,
            max_page_size=100,
        )
        repo = FhirRepository(config, RequestContext(principal=seed_principal(), request_id="t"))
        task = {"resourceType": "Task", "status": "requested", "intent": "plan"}
        created = repo.create(resource=task).stored
        for _ in range(8):
            repo.search(repo.parse_search("Task", [("status", "requested")]))
            repo.read(resource_type="Task", id=created.id)
        with database.engine.connect() as conn:
            prepared = [
                row[0] for row in conn.execute(text("SELECT statement FROM pg_prepared_statements"))
            ]
        assert not [s for s in prepared if "page_id" in s or "count(*)" in s.lower()], prepared
        assert [s for s in prepared if "FROM resources WHERE resource_type" in s], prepared
    finally:
        database.dispose()
