"""Pure rules of the lifecycle: the family's rectification requests, retention dates."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from consent import AccessRequest, Action, Actor, ActorKind, ChildLog, ConsentPolicy, decide
from service.lifecycle.purge import add_years, closed_at
from service.search.values import parse_date_range

PARENTAL = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
MOTHER = "18848012345"  # any 11 digits: the decision point matches pid to the identifier
NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)

LOG = ChildLog(
    patient_id="c",
    patient={"resourceType": "Patient", "id": "c", "birthDate": "2020-03-15"},
    related_persons=(
        {
            "resourceType": "RelatedPerson",
            "id": "m",
            "patient": {"reference": "Patient/c"},
            "identifier": [{"system": FNR, "value": MOTHER}],
            "relationship": [{"coding": [{"system": PARENTAL, "code": "felles"}]}],
        },
    ),
    consents=(),
)


def _task(**changes: Any) -> dict[str, Any]:
    task: dict[str, Any] = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {
            "coding": [
                {
                    "system": "https://stafett.no/fhir/CodeSystem/task-type",
                    "code": "rectification-request",
                }
            ]
        },
        "for": {"reference": "Patient/c"},
        "requester": {"reference": "RelatedPerson/m"},
    }
    task.update(changes)
    return task


@pytest.mark.parametrize(
    ("task", "permitted"),
    [
        (_task(), True),
        (_task(status="cancelled"), True),
        (_task(requester={"reference": "http://x/fhir/RelatedPerson/m"}), True),
        (_task(status="completed"), False),
        (_task(requester={"reference": "RelatedPerson/other"}), False),
        (_task(code={"coding": [{"code": "measure"}]}), False),
        (
            _task(
                meta={
                    "security": [
                        {"system": "urn:stafett:security-label", "code": "hidden-from-guardians"}
                    ]
                }
            ),
            False,
        ),
    ],
)
def test_family_writes_only_its_own_open_rectification_requests(
    task: dict[str, Any], permitted: bool
) -> None:
    decision = decide(
        actor=Actor(kind=ActorKind.CITIZEN, pid=MOTHER),
        log=LOG,
        request=AccessRequest(action=Action.WRITE, resource_type="Task", resource=task),
        policy=ConsentPolicy(),
        now=NOW,
        decision_id="d",
    )
    assert decision.permitted is permitted, decision.reason


def test_family_never_deletes_a_request() -> None:
    decision = decide(
        actor=Actor(kind=ActorKind.CITIZEN, pid=MOTHER),
        log=LOG,
        request=AccessRequest(action=Action.DELETE, resource_type="Task", resource=_task()),
        policy=ConsentPolicy(),
        now=NOW,
        decision_id="d",
    )
    assert not decision.permitted


def test_retention_counts_from_period_end() -> None:
    plan = {"status": "completed", "period": {"start": "2020-01-01", "end": "2024-02-29"}}
    start_of_day = parse_date_range("2024-02-29")[0]
    assert closed_at(plan, last_updated=0) == start_of_day
    assert closed_at({"status": "completed"}, last_updated=42) == 42
    moment = datetime(2024, 2, 29, tzinfo=UTC)
    assert add_years(moment, 3) == datetime(2027, 2, 28, tzinfo=UTC)
