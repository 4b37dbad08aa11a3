"""Closing a log (BTI outcome a, "avslutte saken") as one transaction: `CarePlan/{id}/$close`.

docs/stafettlogg-fhir.md §8: outcome `close` starts no new level Task and the CarePlan becomes
`completed`. Clients may write that themselves in one transaction Bundle; this operation does
it for them so it cannot be half done: the open level Task gets `status` completed,
`executionPeriod.end` and the `level-outcome` output `close`; the CareTeam becomes `inactive`
with every open participation ended; the CarePlan becomes `completed` with `period.end`. The
retention clock (service/lifecycle/purge.py) starts at that `period.end`. Every write is an
ordinary repository update, decided by the consent policy and audited.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from service.errors import Conflict
from service.repository import FhirRepository
from service.search.extract import parse_reference
from service.storage.store import StoredResource

__all__ = [
    "LEVEL_OUTCOME_SYSTEM",
    "TASK_PARAMETER_SYSTEM",
    "TASK_TYPE_SYSTEM",
    "close_log",
    "has_close_outcome",
]

TASK_TYPE_SYSTEM = "https://stafett.no/fhir/CodeSystem/task-type"
TASK_PARAMETER_SYSTEM = "https://stafett.no/fhir/CodeSystem/task-parameter"
LEVEL_OUTCOME_SYSTEM = "https://stafett.no/fhir/CodeSystem/bti-level-outcome"
_CLOSE_OUTPUT = {
    "type": {
        "coding": [
            {
                "system": TASK_PARAMETER_SYSTEM,
                "code": "level-outcome",
                "display": "Utfall av nivået",
            }
        ]
    },
    "valueCodeableConcept": {
        "coding": [
            {"system": LEVEL_OUTCOME_SYSTEM, "code": "close", "display": "a) Avslutte saken"}
        ]
    },
}


def has_close_outcome(task: dict[str, Any]) -> bool:
    """Return whether a level Task's outputs carry the outcome `close`."""
    for output in task.get("output") or ():
        concept = output.get("valueCodeableConcept") if isinstance(output, dict) else None
        for coding in (concept or {}).get("coding") or ():
            if coding.get("system") == LEVEL_OUTCOME_SYSTEM and coding.get("code") == "close":
                return True
    return False


def _end_open(period: Any, when: str) -> dict[str, Any]:
    result = dict(period) if isinstance(period, dict) else {}
    if not result.get("end"):
        result["end"] = when
    return result


def close_log(
    repo: FhirRepository, *, careplan_id: str, closed: datetime | None = None
) -> StoredResource:
    """Close the log: level Task, CareTeam and CarePlan in one transaction; return the plan."""
    moment = (closed or datetime.now(UTC)).astimezone(UTC)
    when = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
    with repo.transaction() as conn:
        plan = repo.read(resource_type="CarePlan", id=careplan_id, conn=conn)
        if plan.data.get("status") != "active":
            raise Conflict(
                f"CarePlan/{careplan_id} is {plan.data.get('status')}; only an active log closes"
            )
        query = repo.parse_search(
            "Task",
            [
                ("based-on", f"CarePlan/{careplan_id}"),
                ("code", f"{TASK_TYPE_SYSTEM}|bti-level"),
                ("status", "in-progress"),
                ("_count", "50"),
            ],
            strict=True,
        )
        for task in repo.search(query, conn=conn).matches:
            data = copy.deepcopy(task.data)
            data["status"] = "completed"
            data["executionPeriod"] = _end_open(data.get("executionPeriod"), when)
            if not has_close_outcome(data):
                data["output"] = [*(data.get("output") or []), copy.deepcopy(_CLOSE_OUTPUT)]
            repo.update(resource_type="Task", id=task.id, resource=data, conn=conn)
        for reference in plan.data.get("careTeam") or ():
            target_type, target_id, _ = parse_reference(
                str(reference.get("reference", "")), repo.config.base_url
            )
            if target_type != "CareTeam" or not target_id:
                continue
            team = copy.deepcopy(repo.read(resource_type="CareTeam", id=target_id, conn=conn).data)
            team["status"] = "inactive"
            team["period"] = _end_open(team.get("period"), when)
            for participant in team.get("participant") or ():
                if isinstance(participant, dict) and isinstance(participant.get("period"), dict):
                    participant["period"] = _end_open(participant["period"], when)
            repo.update(resource_type="CareTeam", id=target_id, resource=team, conn=conn)
        data = copy.deepcopy(plan.data)
        data["status"] = "completed"
        data["period"] = _end_open(data.get("period"), when)
        result = repo.update(resource_type="CarePlan", id=careplan_id, resource=data, conn=conn)
    return result.stored
