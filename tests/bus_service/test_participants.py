"""Which organisations take part in a log: Task owners in all reference forms, current team."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from service.access import RequestContext, ScopeAccessPolicy
from service.delivery import log_organisations, stafettholder_organisation
from service.delivery.participants import DirectoryCache, OrgnrResolver
from service.repository import FhirRepository, RepositoryConfig
from service.search.extract import ResourceIndexer
from service.seed import seed_principal
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.store import SqlStore

BASE = "http://test/fhir"
ENH = "urn:oid:2.16.578.1.12.4.1.4.101"
ROLE = "https://stafett.no/fhir/CodeSystem/careteam-role"


@pytest.fixture
def repo(database_url: str) -> Iterator[FhirRepository]:
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


def _task(repo: FhirRepository, patient: str, owner: dict[str, object]) -> None:
    _create(
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
