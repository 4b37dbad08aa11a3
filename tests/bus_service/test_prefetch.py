"""The ingest worker's batch-wide conditional lookups (service/prefetch.py) against the search.

Before the first message of a batch, the worker looks up all of the batch's conditional
searches of the common forms at once. These tests hold every form to what the search itself
(service/search/sql.py) returns for the same criteria, leave the other forms alone, and check
that a batch applying the same vendor record twice ends exactly as one by one: one resource,
updated, not two.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import event, func, select

from bus import Envelope, Message, Record, topics
from service.api.app import build_services
from service.api.deps import Services
from service.ingest import Ingestor, IngestOutcome
from service.prefetch import conditional_query, prefetch_conditional
from service.search import sql as search_sql
from service.storage.schema import outbox, resources, search_token
from service.write_batch import WriteBatch
from tests.consent_api.world import ORGS, Child, open_log, permit
from tests.support import (
    FNR_SYSTEM,
    ORGNR_SYSTEM,
    LiveServer,
    fhir_headers,
    live_server,
    synthetic_fnr,
)

UNITS = "urn:stafett:test-unit"
PLANS = "urn:stafett:test-plan"
TASKS = "urn:stafett:test-vendor-task"
CATEGORY = "https://stafett.no/fhir/CodeSystem/log-category"


@dataclass
class World:
    server: LiveServer
    services: Services
    ingestor: Ingestor
    child: Child
    org_ids: dict[str, str]
    tag: str


def _created(response: Any) -> str:
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def world(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with live_server(database_url=database_url, data_dir=tmp_path_factory.mktemp("data")) as server:
        kindergarten = server.client(server.system_token(org=ORGS["kindergarten"]))
        tag = uuid.uuid4().hex[:6]

        def organization(system: str, value: str, name: str) -> str:
            body = {
                "resourceType": "Organization",
                "identifier": [{"system": system, "value": value}],
                "name": name,
            }
            return _created(kindergarten.post("/Organization", json=body, headers=fhir_headers()))

        org_ids = {name: organization(ORGNR_SYSTEM, number, name) for name, number in ORGS.items()}
        organization(UNITS, f"one-{tag}", "Avdeling en")
        organization(UNITS, f"two-{tag}", "Avdeling to")
        organization(UNITS, f"two-{tag}", "Avdeling to (kopi)")
        gone = organization(UNITS, f"gone-{tag}", "Nedlagt avdeling")
        assert kindergarten.delete(f"/Organization/{gone}").status_code in (200, 204)
        child = Child("Kari", synthetic_fnr())
        opened = open_log(
            kindergarten,
            child,
            birth_date="2021-05-01",
            consent_provision=permit(org_ids, "kindergarten"),
            owner=org_ids["kindergarten"],
        )
        assert opened.status_code == 200, opened.text
        for status, value in (("active", f"plan-{tag}"), ("completed", f"old-{tag}")):
            plan = {
                "resourceType": "CarePlan",
                "identifier": [{"system": PLANS, "value": value}],
                "status": status,
                "intent": "plan",
                "category": [{"coding": [{"system": CATEGORY, "code": "stafettlogg"}]}],
                "subject": {"reference": f"Patient/{child.patient}"},
            }
            _created(kindergarten.post("/CarePlan", json=plan, headers=fhir_headers()))
        services = build_services(server.settings)
        ingestor = Ingestor(
            config=services.repository,
            scopes=server.settings.ingest_scopes,
            fhir_base=server.settings.fhir_base,
        )
        yield World(server, services, ingestor, child, org_ids, tag)


def _supported(world: World) -> list[tuple[str, str]]:
    tag, fnr = world.tag, world.child.fnr
    log = f"subject.identifier={FNR_SYSTEM}|{fnr}&category={CATEGORY}|stafettlogg"
    return [
        # one token
        ("Organization", f"identifier={UNITS}|one-{tag}"),
        ("Organization", f"identifier={UNITS}|two-{tag}"),  # two matches: 412 later
        ("Organization", f"identifier={UNITS}|none-{tag}"),
        ("Organization", f"identifier={UNITS}|gone-{tag}"),  # deleted
        ("Organization", f"identifier={ORGNR_SYSTEM}|{ORGS['kindergarten']}"),
        ("Organization", f"identifier={ORGNR_SYSTEM}%7C{ORGS['kindergarten']}"),  # encoded
        ("Patient", f"identifier={FNR_SYSTEM}|{fnr}"),
        # a chain leading, tokens beside it
        ("CarePlan", f"{log}&status=active"),
        ("CarePlan", log),  # two
        ("CarePlan", f"subject.identifier={FNR_SYSTEM}|{fnr}&status=completed"),
        ("CarePlan", f"subject:Patient.identifier={FNR_SYSTEM}|{fnr}&status=active"),
        ("CarePlan", f"subject.identifier={FNR_SYSTEM}|00000000000&status=active"),
        ("CarePlan", f"status=active&subject.identifier={FNR_SYSTEM}|{fnr}"),
        # a token with its system leading
        ("CarePlan", f"identifier={PLANS}|plan-{tag}&status=active"),
        ("CarePlan", f"identifier={PLANS}|plan-{tag}&status=completed"),
        ("CarePlan", f"status=active&identifier={PLANS}|plan-{tag}"),
        ("CarePlan", f"category={CATEGORY}|stafettlogg&status=completed"),
    ]


def _left_alone(world: World) -> list[tuple[str, str]]:
    tag = world.tag
    return [
        ("CarePlan", "status=active"),  # nothing to lead with
        ("Organization", f"identifier={UNITS}|one-{tag},{UNITS}|two-{tag}"),  # two values
        ("Organization", f"identifier:not={UNITS}|one-{tag}"),
        ("Organization", f"identifier={UNITS}|"),
        ("Organization", f"identifier=|one-{tag}"),
        ("Organization", "name=Avdeling"),
        ("Organization", f"identifier={UNITS}|one-{tag}&_sort=name"),
        ("CarePlan", f"subject.identifier={FNR_SYSTEM}|x&subject.identifier={FNR_SYSTEM}|y"),
        ("Organization", "bogus=1"),  # does not parse: find_conditional refuses it
        ("NoSuchType", "identifier=a|b"),
    ]


def _searched(world: World, conn: Any, resource_type: str, criteria: str) -> list[str]:
    """The ids the search itself returns for these criteria, as find_conditional runs it."""
    config = world.services.repository
    query = conditional_query(config.search_params(), resource_type, criteria)
    stmt = search_sql.page_statement(query, base_url=config.base_url)
    return [row[1] for row in conn.execute(stmt)]


def test_the_batch_lookup_finds_what_each_search_finds(world: World) -> None:
    config = world.services.repository
    supported, others = _supported(world), _left_alone(world)
    with config.database.write() as conn:
        batch = WriteBatch(conn)
        prefetch_conditional(config, batch, [*supported, *others, *supported])
        for resource_type, criteria in supported:
            cached = batch.cached_matches(resource_type, criteria)
            assert cached is not None, criteria
            expected = _searched(world, conn, resource_type, criteria)
            assert [m.id for m in cached] == expected, criteria
            for match in cached:
                assert match.content is not None  # the current version, as the search loads it
                assert config.store.read(conn, resource_type=resource_type, id=match.id) == match
        for resource_type, criteria in others:
            assert not batch.knows(resource_type, criteria), criteria
    counts = {criteria: len(_ids(world, t, criteria)) for t, criteria in supported}
    # the fixture made every shape of answer: none, one and two
    assert set(counts.values()) == {0, 1, 2}


def _ids(world: World, resource_type: str, criteria: str) -> list[str]:
    with world.services.database.read() as conn:
        return _searched(world, conn, resource_type, criteria)


def test_a_write_forgets_only_the_lookups_it_concerns(world: World) -> None:
    config = world.services.repository
    tag = world.tag
    one = ("Organization", f"identifier={UNITS}|one-{tag}")
    none = ("Organization", f"identifier={UNITS}|none-{tag}")
    plan = ("CarePlan", f"identifier={PLANS}|plan-{tag}&status=active")
    log = ("CarePlan", f"subject.identifier={FNR_SYSTEM}|{world.child.fnr}&status=active")
    with config.database.write() as conn:
        batch = WriteBatch(conn)
        prefetch_conditional(config, batch, [one, none, plan, log])
        (match,) = batch.cached_matches(*one) or []
        # another Organization that is not indexed under either identifier
        batch.changed("Organization", "elsewhere", frozenset({("identifier", UNITS, "other")}))
        assert batch.knows(*one)
        assert batch.knows(*none)
        assert batch.knows(*plan)  # another type
        # a new Organization with the searched identifier
        batch.changed("Organization", "new", frozenset({("identifier", UNITS, f"none-{tag}")}))
        assert not batch.knows(*none)
        assert batch.knows(*one)
        # the match itself, whatever it is indexed under now
        batch.changed("Organization", match.id, frozenset())
        assert not batch.knows(*one)
        # a conjunction is forgotten with any write of a type it depends on
        batch.changed("Patient", "any", frozenset())
        assert not batch.knows(*log)
        assert batch.knows(*plan)
        batch.changed("CarePlan", "any", frozenset())
        assert not batch.knows(*plan)


def _message(world: World, payload: dict[str, Any]) -> Message:
    envelope = Envelope.new(
        event_type="resource.submitted",
        subject_key=world.child.patient,
        sender=ORGS["kindergarten"],
        payload=payload,
    )
    record = Record.of(topics.INBOUND, envelope)
    return Message(topics.INBOUND, 0, 0, record.key, record.value)


def _vendor_record(world: World, identifier: str, text: str) -> dict[str, Any]:
    """What a connector sends for one vendor record: a conditional update on its identifier."""
    task = {
        "resourceType": "Task",
        "identifier": [{"system": TASKS, "value": identifier}],
        "status": "in-progress",
        "intent": "plan",
        "description": text,
        "for": {"reference": f"Patient?identifier={FNR_SYSTEM}|{world.child.fnr}"},
        "owner": {"reference": f"Organization?identifier={ORGNR_SYSTEM}|{ORGS['kindergarten']}"},
    }
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": task,
                "request": {"method": "PUT", "url": f"Task?identifier={TASKS}|{identifier}"},
            }
        ],
    }


def _tasks(world: World, identifier: str) -> list[tuple[int, dict[str, Any]]]:
    """(version, resource) of the Tasks with this vendor identifier (sealed fields opened)."""
    store = world.services.repository.store
    with world.services.database.read() as conn:
        ids = conn.execute(
            select(search_token.c.resource_id).where(
                search_token.c.resource_type == "Task",
                search_token.c.param == "identifier",
                search_token.c.system == TASKS,
                search_token.c.code == identifier,
            )
        )
        found = store.read_many(conn, [("Task", row[0]) for row in ids])
    return [(task.version_id, task.data) for task in found]


def _totals(world: World) -> dict[str, int]:
    with world.services.database.read() as conn:

        def rows(table: Any, *where: Any) -> int:
            return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar())

        return {
            "tasks": rows(resources, resources.c.resource_type == "Task"),
            "audit": rows(resources, resources.c.resource_type == "AuditEvent"),
            "outbox": rows(outbox),
        }


def test_the_same_record_twice_in_a_batch_updates_one_resource_as_one_by_one(
    world: World,
) -> None:
    tag = uuid.uuid4().hex[:6]
    single = [
        _message(world, _vendor_record(world, f"A-{tag}", "første")),
        _message(world, _vendor_record(world, f"A-{tag}", "andre")),
        _message(world, _vendor_record(world, f"B-{tag}", "egen")),
    ]
    batched = [
        _message(world, _vendor_record(world, f"C-{tag}", "første")),
        _message(world, _vendor_record(world, f"C-{tag}", "andre")),
        _message(world, _vendor_record(world, f"D-{tag}", "egen")),
    ]
    before = _totals(world)
    assert [world.ingestor.apply(m).outcome for m in single] == [IngestOutcome.APPLIED] * 3
    middle = _totals(world)
    results = world.ingestor.apply_many(batched)
    after = _totals(world)
    assert [r.outcome for r in results] == [IngestOutcome.APPLIED] * 3
    assert {k: middle[k] - before[k] for k in before} == {k: after[k] - middle[k] for k in after}
    for first, other in ((f"A-{tag}", f"B-{tag}"), (f"C-{tag}", f"D-{tag}")):
        ((version, task),) = _tasks(world, first)
        assert version == 2
        assert task["description"] == "andre"
        assert [v for v, _ in _tasks(world, other)] == [1]


def test_a_batch_of_vendor_records_needs_about_one_statement_each(world: World) -> None:
    if world.services.database.is_sqlite:
        pytest.skip("SQLite writes a resource with several statements")
    tag = uuid.uuid4().hex[:6]
    messages = [
        _message(world, _vendor_record(world, f"S-{tag}-{n}", f"tiltak {n}")) for n in range(20)
    ]
    executed: list[str] = []

    def count(*args: Any) -> None:
        executed.append(str(args[2]))

    engine = world.services.database.engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        results = world.ingestor.apply_many(messages)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert [r.outcome for r in results] == [IngestOutcome.APPLIED] * len(messages)
    # one write each; the batch's lookups, locks, audit, outbox and markers (and loading the
    # child's log, when not cached) a few in all. One by one, each message also took its lock
    # and searched its identifier, the child, the service, and read the log's versions.
    assert len(executed) <= len(messages) + 20, executed
