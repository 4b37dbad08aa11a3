"""Which organisations take part in a log: Task owners in all reference forms, current team."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import delete, select, text

from service.access import RequestContext, ScopeAccessPolicy
from service.delivery import log_organisations, stafettholder_organisation
from service.delivery.participants import DirectoryCache, OrgnrResolver, logs_organisations
from service.repository import FhirRepository, RepositoryConfig
from service.search.extract import LOG_OWNER_PARAM, ResourceIndexer
from service.seed import seed_principal
from service.storage.database import Database
from service.storage.migrations import alembic_config, upgrade_database
from service.storage.schema import search_token
from service.storage.store import SqlStore
from tests.conftest import new_postgres_database

BASE = "http://test/fhir"
ENH = "urn:oid:2.16.578.1.12.4.1.4.101"
ROLE = "https://stafett.no/fhir/CodeSystem/careteam-role"


@pytest.fixture
def repo(database_url: str) -> Iterator[FhirRepository]:
    yield from _repository(database_url)


def _repository(database_url: str) -> Iterator[FhirRepository]:
    database = Database(database_url, pool_size=2)
    upgrade_database(database.engine)
    config = RepositoryConfig(
        database=database,
        store=SqlStore(indexer=ResourceIndexer(base_url=BASE)),
        policy=ScopeAccessPolicy(),
        base_url=BASE,
        default_page_size=20,
        max_page_size=100,
    )
    yield FhirRepository(config, RequestContext(principal=seed_principal(), request_id="t"))
    database.dispose()


def _create(repo: FhirRepository, resource: dict[str, object]) -> str:
    return repo.create(resource=resource).stored.id


def _org(repo: FhirRepository, orgnr: str) -> str:
    return _create(
        repo, {"resourceType": "Organization", "identifier": [{"system": ENH, "value": orgnr}]}
    )


def _task(repo: FhirRepository, patient: str, owner: dict[str, object]) -> str:
    return _create(
        repo,
        {
            "resourceType": "Task",
            "status": "in-progress",
            "intent": "plan",
            "for": {"reference": f"Patient/{patient}"},
            "owner": owner,
        },
    )


def test_owners_and_current_team_members_in_every_reference_form(repo: FhirRepository) -> None:
    patient = _create(repo, {"resourceType": "Patient"})
    kindergarten = _org(repo, "912837467")
    school = _org(repo, "927364514")
    left = _org(repo, "945182733")
    role = _create(
        repo,
        {
            "resourceType": "PractitionerRole",
            "organization": {"reference": f"Organization/{school}"},
        },
    )
    _task(repo, patient, {"reference": f"Organization/{kindergarten}"})
    _task(repo, patient, {"reference": f"PractitionerRole/{role}"})
    _task(repo, patient, {"identifier": {"system": ENH, "value": "961728398"}})
    other = _create(repo, {"resourceType": "Patient"})
    _task(repo, other, {"identifier": {"system": ENH, "value": "974760673"}})
    _create(
        repo,
        {
            "resourceType": "CareTeam",
            "status": "active",
            "subject": {"reference": f"Patient/{patient}"},
            "participant": [
                {
                    "role": [{"coding": [{"system": ROLE, "code": "stafettholder"}]}],
                    "member": {"reference": f"PractitionerRole/{role}"},
                    "period": {"start": "2026-08-01"},
                },
                {
                    "role": [{"coding": [{"system": ROLE, "code": "service"}]}],
                    "member": {"reference": f"Organization/{left}"},
                    "period": {"start": "2026-01-01", "end": "2026-06-30"},
                },
            ],
        },
    )
    with repo.config.database.read() as conn:
        found = log_organisations(conn, patient, BASE, today=date(2026, 11, 22))
        holder = stafettholder_organisation(conn, patient, BASE)
    # the health station left the team in June; the other child's owner is not this log's
    assert found == {"912837467", "927364514", "961728398"}
    assert holder == "927364514"


def test_many_logs_at_once_keep_their_own_owners(repo: FhirRepository) -> None:
    kindergarten, school = _org(repo, "912837467"), _org(repo, "927364514")
    first, second, empty = (_create(repo, {"resourceType": "Patient"}) for _ in range(3))
    for _ in range(30):  # many Tasks with the same owner count once
        _task(repo, first, {"reference": f"Organization/{kindergarten}"})
    _task(repo, second, {"reference": f"Organization/{school}"})
    _task(repo, second, {"identifier": {"system": ENH, "value": "961728398"}})
    gone = _task(repo, second, {"identifier": {"system": ENH, "value": "974760673"}})
    repo.delete(resource_type="Task", id=gone)  # a deleted Task's owner takes no part any more
    with repo.config.database.read() as conn:
        found = logs_organisations(conn, [first, second, empty], BASE, today=date(2026, 11, 22))
    assert found == {
        first: {"912837467"},
        second: {"927364514", "961728398"},
        empty: set(),
    }


def test_directory_cache_shares_answers_between_batches_until_they_expire(
    repo: FhirRepository,
) -> None:
    clock = [1000.0]
    directory = DirectoryCache(ttl_s=5.0, clock=lambda: clock[0])
    kindergarten = _org(repo, "912837467")
    reference = {"reference": f"Organization/{kindergarten}"}
    with repo.config.database.read() as conn:
        assert OrgnrResolver(conn, BASE, directory=directory).orgnr(reference) == "912837467"
        before = directory.organization_ids(conn, "927364514")  # other tests' schools
    # the directory changes: the kindergarten's identifier is corrected, the school appears
    repo.update(
        resource_type="Organization",
        id=kindergarten,
        resource={
            "resourceType": "Organization",
            "id": kindergarten,
            "identifier": [{"system": ENH, "value": "945182733"}],
        },
    )
    school = _org(repo, "927364514")
    with repo.config.database.read() as conn:
        # within the time to live, a new batch gets the earlier answers without asking
        assert OrgnrResolver(conn, BASE, directory=directory).orgnr(reference) == "912837467"
        assert directory.organization_ids(conn, "927364514") == before
        clock[0] += 5.0
        assert OrgnrResolver(conn, BASE, directory=directory).orgnr(reference) == "945182733"
        assert directory.organization_ids(conn, "927364514") == before | {school}
        # without a directory, every batch reads the current state
        assert OrgnrResolver(conn, BASE).orgnr(reference) == "945182733"


def test_log_owner_rows_pair_each_child_with_each_owner_form() -> None:
    indexer = ResourceIndexer(base_url=BASE)
    rows = indexer.index(
        {
            "resourceType": "Task",
            "status": "in-progress",
            "intent": "plan",
            "for": {"reference": f"{BASE}/Patient/child-1"},
            "owner": {
                "reference": "Organization/org-1",
                "identifier": {"system": ENH, "value": "912837467"},
            },
        }
    )
    assert sorted(t for t in rows.tokens if t[0] == LOG_OWNER_PARAM) == [
        (LOG_OWNER_PARAM, "Organization/org-1", "child-1"),
        (LOG_OWNER_PARAM, "enh:912837467", "child-1"),
    ]
    # no child (another server's Patient) or no owner: nothing to pair
    for task in (
        {
            "for": {"reference": "https://other.example/fhir/Patient/1"},
            "owner": {"reference": "Organization/o"},
        },
        {"for": {"reference": "Patient/child-1"}},
        {
            "for": {"reference": "Patient/child-1"},
            "owner": {"identifier": {"system": "urn:x", "value": "1"}},
        },
    ):
        rows = indexer.index({"resourceType": "Task", "status": "ready", "intent": "plan", **task})
        assert [t for t in rows.tokens if t[0] == LOG_OWNER_PARAM] == []


def _owner_rows(repo: FhirRepository) -> list[tuple[str, str | None, str | None]]:
    with repo.config.database.read() as conn:
        return sorted(
            tuple(row)
            for row in conn.execute(
                select(
                    search_token.c.resource_id, search_token.c.system, search_token.c.code
                ).where(search_token.c.param == LOG_OWNER_PARAM)
            )
        )


def test_migration_0009_backfills_what_the_indexer_writes(
    database_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if database_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'migrate.db'}"
    else:
        url = new_postgres_database(request.getfixturevalue("postgres_admin_url"))
    for repo in _repository(url):
        patient, other = (_create(repo, {"resourceType": "Patient"}) for _ in range(2))
        school = _org(repo, "927364514")
        role = _create(
            repo,
            {
                "resourceType": "PractitionerRole",
                "organization": {"reference": f"Organization/{school}"},
            },
        )
        _task(repo, patient, {"reference": f"Organization/{school}"})
        _task(repo, patient, {"reference": f"PractitionerRole/{role}"})
        _task(repo, other, {"identifier": {"system": ENH, "value": "961728398"}})
        _task(repo, other, {"display": "nobody in particular"})
        written = _owner_rows(repo)
        assert len(written) == 3
        with repo.config.database.read() as conn:
            before = logs_organisations(conn, [patient, other], BASE, today=date(2026, 11, 22))
        with repo.config.database.write() as conn:
            # the state before 0009: Tasks without the internal parameter
            conn.execute(delete(search_token).where(search_token.c.param == LOG_OWNER_PARAM))
            conn.execute(text("UPDATE alembic_version SET version_num = '0008'"))
        upgrade_database(repo.config.database.engine, "0009")
        assert _owner_rows(repo) == written
        with repo.config.database.read() as conn:
            after = logs_organisations(conn, [patient, other], BASE, today=date(2026, 11, 22))
        assert after == before == {patient: {"927364514"}, other: {"961728398"}}

        config = alembic_config()
        with repo.config.database.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0008")
        assert _owner_rows(repo) == []
