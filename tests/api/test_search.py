"""FHIR search semantics over real HTTP on both databases: types, modifiers, chains, paging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support import (
    FNR_SYSTEM,
    ORGNR_SYSTEM,
    LiveServer,
    fhir_headers,
    synthetic_fnr,
    synthetic_orgnr,
)

pytestmark = pytest.mark.e2e

BTI = "https://stafett.no/fhir/CodeSystem/bti-category"


@dataclass
class World:
    api: httpx.Client
    tag: str
    child_fnr: str
    child: str
    other_child: str
    kindergarten: str
    kindergarten_nr: str
    school: str
    careplan: str
    tasks: list[str]


def _create(api: httpx.Client, resource: dict[str, Any]) -> str:
    response = api.post(f"/{resource['resourceType']}", json=resource, headers=fhir_headers())
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture(scope="module")
def world(server: LiveServer) -> World:
    kindergarten_nr = synthetic_orgnr()
    api = server.client(server.practitioner_token(org=kindergarten_nr))
    tag = synthetic_orgnr()  # a unique word to keep this module's data apart
    kindergarten = _create(
        api,
        {
            "resourceType": "Organization",
            "identifier": [{"system": ORGNR_SYSTEM, "value": kindergarten_nr}],
            "name": f"Solsikken barnehage {tag}",
        },
    )
    school = _create(
        api,
        {
            "resourceType": "Organization",
            "identifier": [{"system": ORGNR_SYSTEM, "value": synthetic_orgnr()}],
            "name": f"Bakkeby skole {tag}",
        },
    )
    child_fnr = synthetic_fnr()
    child = _create(
        api,
        {
            "resourceType": "Patient",
            "identifier": [{"system": FNR_SYSTEM, "value": child_fnr}],
            "name": [{"family": f"Ødegård{tag}", "given": ["Åse"]}],
            "birthDate": "2020-03-14",
            "gender": "female",
        },
    )
    other_child = _create(
        api,
        {
            "resourceType": "Patient",
            "identifier": [{"system": FNR_SYSTEM, "value": synthetic_fnr()}],
            "name": [{"family": f"Hansen{tag}", "given": ["Per"]}],
            "birthDate": "2018-06",
        },
    )
    careplan = _create(
        api,
        {
            "resourceType": "CarePlan",
            "status": "active",
            "intent": "plan",
            "category": [{"coding": [{"system": BTI, "code": "stafettlogg"}]}],
            "subject": {"reference": f"Patient/{child}"},
            "period": {"start": "2026-08-15"},
            "identifier": [{"system": f"urn:test:{tag}", "value": "log-1"}],
        },
    )
    _create(
        api,
        {
            "resourceType": "CarePlan",
            "status": "completed",
            "intent": "plan",
            "subject": {"reference": f"Patient/{other_child}"},
            "period": {"start": "2025-01-01", "end": "2025-06-30"},
            "identifier": [{"system": f"urn:test:{tag}", "value": "log-2"}],
        },
    )
    tasks = []
    for index, (status, start, owner) in enumerate(
        [
            ("in-progress", "2026-09-01", kindergarten),
            ("requested", "2026-10-01", school),
            ("completed", "2026-08-20", kindergarten),
            ("in-progress", "2026-11-05", school),
            ("cancelled", "2026-07-01", kindergarten),
        ]
    ):
        tasks.append(
            _create(
                api,
                {
                    "resourceType": "Task",
                    "status": status,
                    "intent": "plan",
                    "identifier": [{"system": f"urn:test:{tag}", "value": f"task-{index}"}],
                    "basedOn": [{"reference": f"CarePlan/{careplan}"}],
                    "for": {"reference": f"Patient/{child}"},
                    "owner": {
                        "reference": f"Organization/{owner}",
                        **(
                            {"identifier": {"system": ORGNR_SYSTEM, "value": kindergarten_nr}}
                            if owner == kindergarten
                            else {}
                        ),
                    },
                    "executionPeriod": {"start": start},
                    "description": f"Tiltak {index}",
                },
            )
        )
    return World(
        api,
        tag,
        child_fnr,
        child,
        other_child,
        kindergarten,
        kindergarten_nr,
        school,
        careplan,
        tasks,
    )


def ids(bundle: dict[str, Any], mode: str = "match") -> set[str]:
    return {
        entry["resource"]["id"]
        for entry in bundle.get("entry", [])
        if entry["search"]["mode"] == mode
    }


def search(world: World, resource_type: str, **params: str) -> dict[str, Any]:
    response = world.api.get(f"/{resource_type}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "Bundle"
    assert body["type"] == "searchset"
    return body


def test_token_identifier_forms(world: World) -> None:
    system = f"urn:test:{world.tag}"
    assert ids(search(world, "Task", identifier=f"{system}|task-1")) == {world.tasks[1]}
    assert ids(search(world, "Task", identifier=f"{system}|")) == set(world.tasks)
    assert world.tasks[1] in ids(search(world, "Task", identifier="task-1", _count="100"))
    assert ids(search(world, "Task", identifier="|task-1")) == set()  # it has a system
    either = search(world, "Task", identifier=f"{system}|task-1,{system}|task-2")
    assert ids(either) == {world.tasks[1], world.tasks[2]}


def test_token_not_and_missing(world: World) -> None:
    system = f"urn:test:{world.tag}|"
    not_done = search(world, "Task", identifier=system, **{"status:not": "completed"})
    assert ids(not_done) == set(world.tasks) - {world.tasks[2]}
    assert ids(search(world, "Task", identifier=system, **{"code:missing": "true"})) == set(
        world.tasks
    )
    assert ids(search(world, "Task", identifier=system, **{"code:missing": "false"})) == set()


def test_token_on_codeable_concept(world: World) -> None:
    found = search(
        world, "CarePlan", category=f"{BTI}|stafettlogg", subject=f"Patient/{world.child}"
    )
    assert ids(found) == {world.careplan}


def test_string_semantics(world: World) -> None:
    # default: case- and accent-insensitive prefix match; Nordic letters fold (ø -> o)
    assert ids(search(world, "Patient", family=f"odegard{world.tag}")) == {world.child}
    assert ids(search(world, "Patient", name="ÅSE", family=f"ØDEGÅRD{world.tag}")) == {world.child}
    assert ids(search(world, "Patient", **{"family:exact": f"Ødegård{world.tag}"})) == {world.child}
    assert ids(search(world, "Patient", **{"family:exact": f"odegard{world.tag}"})) == set()
    assert ids(search(world, "Patient", **{"family:contains": f"gård{world.tag}"})) == {world.child}
    assert ids(search(world, "Organization", name=f"solsikken barnehage {world.tag}")) == {
        world.kindergarten
    }


def test_string_with_like_wildcards_is_literal(world: World) -> None:
    assert ids(search(world, "Patient", family="%")) == set()
    assert ids(search(world, "Patient", family="_")) == set()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-03-14", {"child"}),
        ("2020-03", {"child"}),
        ("2020", {"child"}),
        ("gt2019-01-01", {"child"}),
        ("lt2019", {"other"}),
        ("ge2018-06-15", {"child", "other"}),  # 2018-06 overlaps the day
        ("le2018-06-30", {"other"}),
        ("eq2018-06", {"other"}),
        ("ne2020-03-14", {"other"}),
        ("sa2019-12-31", {"child"}),
        ("eb2019-01-01", {"other"}),
    ],
)
def test_date_prefixes(world: World, value: str, expected: set[str]) -> None:
    names = {"child": world.child, "other": world.other_child}
    found = search(world, "Patient", birthdate=value, _id=f"{world.child},{world.other_child}")
    assert ids(found) == {names[n] for n in expected}


def test_date_on_periods(world: World) -> None:
    system = f"urn:test:{world.tag}|"
    in_autumn = search(world, "Task", identifier=system, period="ge2026-09-01")
    assert ids(in_autumn) == {world.tasks[0], world.tasks[1], world.tasks[3]} | {
        # open-ended periods that started earlier still run after the date
        world.tasks[2],
        world.tasks[4],
    }
    started_before = search(world, "Task", identifier=system, period="lt2026-08-21")
    assert ids(started_before) == {world.tasks[2], world.tasks[4]}
    closed = search(world, "CarePlan", identifier=system, date="eb2026-01-01")
    assert len(ids(closed)) == 1


def test_invalid_date_is_400(world: World) -> None:
    response = world.api.get("/Patient", params={"birthdate": "2020-13-45"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


def test_reference_forms(world: World) -> None:
    system = f"urn:test:{world.tag}|"
    by_type_id = search(world, "Task", owner=f"Organization/{world.kindergarten}")
    assert ids(by_type_id) == {world.tasks[0], world.tasks[2], world.tasks[4]}
    by_id = search(world, "Task", owner=world.school)
    assert ids(by_id) == {world.tasks[1], world.tasks[3]}
    by_modifier = search(world, "Task", **{"owner:Organization": world.school})
    assert ids(by_modifier) == {world.tasks[1], world.tasks[3]}
    base = str(world.api.base_url).rstrip("/")
    absolute = search(world, "Task", owner=f"{base}/Organization/{world.school}")
    assert ids(absolute) == {world.tasks[1], world.tasks[3]}
    by_identifier = search(
        world, "Task", **{"owner:identifier": f"{ORGNR_SYSTEM}|{world.kindergarten_nr}"}
    )
    assert ids(by_identifier) == {world.tasks[0], world.tasks[2], world.tasks[4]}
    patient_param = search(world, "Task", identifier=system, patient=world.child)
    assert ids(patient_param) == set(world.tasks)


def test_chain_finds_a_childs_data_by_fodselsnummer(world: World) -> None:
    chain = f"{FNR_SYSTEM}|{world.child_fnr}"
    assert ids(search(world, "Task", **{"subject.identifier": chain})) == set(world.tasks)
    assert ids(search(world, "CarePlan", **{"subject.identifier": chain})) == {world.careplan}
    assert ids(search(world, "CarePlan", **{"subject:Patient.identifier": chain})) == {
        world.careplan
    }
    assert ids(search(world, "Task", **{"patient.birthdate": "2020-03-14"})) == set(world.tasks)
    nobody = search(world, "Task", **{"subject.identifier": f"{FNR_SYSTEM}|{synthetic_fnr()}"})
    assert nobody["total"] == 0


def test_unknown_chain_is_400(world: World) -> None:
    response = world.api.get("/Task", params={"subject.nonsense": "x"})
    assert response.status_code == 400


def test_include_and_revinclude(world: World) -> None:
    bundle = search(
        world,
        "CarePlan",
        _id=world.careplan,
        _include="CarePlan:subject",
        _revinclude="Task:based-on",
    )
    assert ids(bundle) == {world.careplan}
    assert ids(bundle, "include") == {world.child, *world.tasks}
    assert bundle["total"] == 1


def test_include_iterate(world: World) -> None:
    bundle = world.api.get(
        "/Task",
        params=[
            ("_id", world.tasks[0]),
            ("_include", "Task:based-on"),
            ("_include:iterate", "CarePlan:subject"),
        ],
    ).json()
    assert ids(bundle, "include") == {world.careplan, world.child}


def test_paging_with_next_and_previous(world: World) -> None:
    system = f"urn:test:{world.tag}|"
    seen: list[str] = []
    url: str | None = f"/Task?identifier={system}&_count=2&_sort=_id"
    pages = 0
    while url:
        page = world.api.get(url).json()
        assert page["total"] == 5
        seen.extend(entry["resource"]["id"] for entry in page.get("entry", []))
        links = {link["relation"]: link["url"] for link in page["link"]}
        if pages:
            assert "previous" in links
        url = links.get("next")
        pages += 1
    assert pages == 3
    assert sorted(seen) == sorted(world.tasks)
    assert len(seen) == len(set(seen))


def test_sort(world: World) -> None:
    system = f"urn:test:{world.tag}|"
    ascending = search(world, "Task", identifier=system, _sort="period")
    order = [entry["resource"]["id"] for entry in ascending["entry"]]
    assert order == [world.tasks[i] for i in (4, 2, 0, 1, 3)]
    # descending sorts on the upper bound: all these periods are open-ended, so check dates
    both = f"{world.child},{world.other_child}"
    oldest_last = search(world, "Patient", _id=both, _sort="-birthdate")
    assert [e["resource"]["id"] for e in oldest_last["entry"]] == [world.child, world.other_child]
    by_status = search(world, "Task", identifier=system, _sort="status,-_lastUpdated")
    statuses = [e["resource"]["status"] for e in by_status["entry"]]
    assert statuses == sorted(statuses)
    assert world.api.get("/Task", params={"_sort": "nonsense"}).status_code == 400


def test_summary_count_and_elements(world: World) -> None:
    system = f"urn:test:{world.tag}|"
    count = search(world, "Task", identifier=system, _summary="count")
    assert count["total"] == 5
    assert "entry" not in count
    slim = search(world, "Task", identifier=system, _elements="status", _count="1")
    resource = slim["entry"][0]["resource"]
    assert set(resource) >= {"resourceType", "id", "meta", "status", "intent"}  # mandatory kept
    assert "description" not in resource
    assert any(tag["code"] == "SUBSETTED" for tag in resource["meta"]["tag"])
    summary = world.api.get(f"/Task/{world.tasks[0]}", params={"_summary": "true"}).json()
    assert "description" in summary  # Task.description is a summary element in R4
    assert "identifier" not in summary
    assert summary["status"] == "in-progress"


def test_last_updated_and_id(world: World) -> None:
    assert ids(search(world, "Task", _id=world.tasks[0])) == {world.tasks[0]}
    system = f"urn:test:{world.tag}|"
    assert search(world, "Task", identifier=system, _lastUpdated="gt2000-01-01")["total"] == 5
    assert search(world, "Task", identifier=system, _lastUpdated="lt2000-01-01")["total"] == 0


def test_post_search(world: World) -> None:
    response = world.api.post(
        "/Task/_search",
        content=f"identifier=urn:test:{world.tag}|task-3",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert ids(response.json()) == {world.tasks[3]}


def test_unknown_parameter_lenient_or_strict(world: World) -> None:
    lenient = world.api.get("/Task", params={"nonsense": "1", "_count": "1"})
    assert lenient.status_code == 200
    assert "nonsense" not in lenient.json()["link"][0]["url"]
    strict = world.api.get("/Task", params={"nonsense": "1"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400


def test_bad_modifier_and_count_are_400(world: World) -> None:
    assert world.api.get("/Task", params={"status:contains": "x"}).status_code == 400
    assert world.api.get("/Task", params={"_count": "-1"}).status_code == 400
    assert world.api.get("/Task", params={"_include": "Task:status"}).status_code == 400
