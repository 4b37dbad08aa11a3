"""The health station's FHIR flavour: its own code systems, validation and OperationOutcome."""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import BaseModel, ValidationError

from simulators.common.errors import Invalid, Problem, SimError
from simulators.common.ids import is_valid_fnr, is_valid_orgnr

__all__ = [
    "FNR_SYSTEM",
    "JOURNAL_SOURCE",
    "LEVEL_EXTENSION",
    "ORGNR_SYSTEM",
    "PLAN_TYPE_SYSTEM",
    "RESOURCE_TYPES",
    "TASK_CODE_SYSTEM",
    "BadRequest",
    "Gone",
    "Unauthorized",
    "operation_outcome",
    "validate",
]

RESOURCE_TYPES = ("Patient", "CarePlan", "Task", "Consent", "Organization")
FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
PLAN_TYPE_SYSTEM = "http://helsestasjon.example/kodeverk/plantype"
TASK_CODE_SYSTEM = "http://helsestasjon.example/kodeverk/oppgave"
LEVEL_EXTENSION = "http://helsestasjon.example/fhir/niva"
# meta.source of versions written by staff in the journal (not through the API)
JOURNAL_SOURCE = "http://helsestasjon.example/fhir/journal"


class BadRequest(SimError):
    """The request itself is malformed (400)."""


class Unauthorized(SimError):
    """No valid bearer token (401)."""


class Gone(SimError):
    """A search page that has expired (410)."""


def operation_outcome(code: str, diagnostics: str, expression: str | None = None) -> dict[str, Any]:
    """Return an OperationOutcome with one error issue."""
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": diagnostics}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


@cache
def _model(resource_type: str) -> type[BaseModel]:
    model: type[BaseModel] = get_fhir_model_class(resource_type)
    return model


def _path(resource_type: str, loc: tuple[int | str, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.isidentifier():
            path += f".{part}"
    return path


def validate(resource_type: str, resource: Any) -> None:
    """Check a resource against R4 (fhir.resources R4B models) and the station's own rules."""
    if not isinstance(resource, dict):
        raise BadRequest("The body must be a JSON object")
    if resource.get("resourceType") != resource_type:
        raise BadRequest(f"resourceType must be {resource_type}")
    try:
        _model(resource_type).model_validate(resource)
    except ValidationError as exc:
        problems = [Problem(_path(resource_type, e["loc"]), e["msg"]) for e in exc.errors()]
        raise Invalid(f"Invalid {resource_type}", problems) from None
    problems = list(_local_rules(resource_type, resource))
    if problems:
        raise Invalid(f"Invalid {resource_type}", problems)


def _local_rules(resource_type: str, resource: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    for i, ident in enumerate(resource.get("identifier") or []):
        system, value = ident.get("system"), ident.get("value")
        if system == FNR_SYSTEM and not is_valid_fnr(value):
            problems.append(Problem(f"{resource_type}.identifier[{i}]", "Invalid fødselsnummer"))
        if system == ORGNR_SYSTEM and not is_valid_orgnr(value):
            problems.append(Problem(f"{resource_type}.identifier[{i}]", "Invalid org.nr"))
    for i, ext in enumerate(resource.get("extension") or []):
        if ext.get("url") == LEVEL_EXTENSION:
            level = ext.get("valueInteger")
            if resource_type != "CarePlan" or not isinstance(level, int) or not 0 <= level <= 3:
                problems.append(
                    Problem(f"{resource_type}.extension[{i}]", "niva: CarePlan, valueInteger 0-3")
                )
    if resource_type == "Consent":
        actors = (resource.get("provision") or {}).get("actor") or []
        for i, actor in enumerate(actors):
            ident = (actor.get("reference") or {}).get("identifier") or {}
            if ident.get("system") == ORGNR_SYSTEM and not is_valid_orgnr(ident.get("value")):
                where = f"Consent.provision.actor[{i}].reference.identifier"
                problems.append(Problem(where, "Invalid org.nr"))
    return problems
