"""Post-processing of FHIR output: prune what FHIR JSON forbids and check Norwegian ids."""

from __future__ import annotations

from typing import Any, Final

from mapping._internal.identifiers import (
    DNR_SYSTEM,
    FNR_SYSTEM,
    ORGNR_SYSTEM,
    fnr_problem,
    orgnr_problem,
)

__all__ = ["clean_resource", "plain"]

_CHECKERS: Final = {FNR_SYSTEM: fnr_problem, DNR_SYSTEM: fnr_problem, ORGNR_SYSTEM: orgnr_problem}
_EMPTY: Final[tuple[Any, ...]] = (None, "", {}, [])


def _reference_problem(reference: str) -> str | None:
    _, _, query = reference.partition("?")
    for param in query.split("&"):
        _, _, token = param.partition("=")
        system, sep, value = token.partition("|")
        checker = _CHECKERS.get(system) if sep else None
        if checker is not None:
            problem = checker(value)
            if problem:
                return problem
    return None


def _clean(value: Any, path: str, problems: list[tuple[str, str]]) -> Any:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, child in value.items():
            cleaned = _clean(child, f"{path}.{key}", problems)
            if cleaned not in _EMPTY:
                out[key] = cleaned
        system = out.get("system")
        # a vendor may send any JSON here: a list as system was a TypeError, not a MappingError
        if isinstance(system, str) and system in _CHECKERS and "value" in out:
            problem = _CHECKERS[system](out["value"])
            if problem:
                problems.append((f"{path}.value", problem))
        reference = out.get("reference")
        if isinstance(reference, str) and "?" in reference:
            problem = _reference_problem(reference)
            if problem:
                problems.append((f"{path}.reference", problem))
        return out
    if isinstance(value, list):
        items = (_clean(child, f"{path}[{n}]", problems) for n, child in enumerate(value))
        return [item for item in items if item not in _EMPTY]
    return value


def clean_resource(
    resource: dict[str, Any], resource_type: str
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Drop nulls and empty values; return the resource and (path, problem) per bad id."""
    problems: list[tuple[str, str]] = []
    cleaned = _clean(resource, resource_type, problems)
    return cleaned, problems


def plain(value: Any) -> Any:
    """Return value with JSONata's sequence types turned into plain lists and dicts."""
    if isinstance(value, dict):
        return {key: plain(child) for key, child in value.items()}
    if isinstance(value, list):
        return [plain(child) for child in value]
    return value
