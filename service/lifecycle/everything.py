"""`Patient/{id}/$everything`: all the caller may see about one child, as a paged searchset.

The family's right of access (GDPR art. 15): every resource of the child's log the caller may
read, with the services and employees they refer to
(https://hl7.org/fhir/R4/patient-operation-everything.html). Nothing here decides access: each
part is an ordinary repository read or search, so the consent policy decides every hit (and
the audit records it) exactly as for the same searches made by hand. A guardian therefore
never gets entries hidden from guardians, a professional gets what the family's Consents
let their organisation read, and a caller who may not see the child gets 404.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson

from service.errors import BadRequest, Forbidden, Gone, NotFound
from service.lifecycle.compartment import Key, references_in
from service.repository import FhirRepository
from service.storage.store import StoredResource

__all__ = ["EVERYTHING_TYPES", "EverythingPage", "everything", "everything_bundle"]

EVERYTHING_TYPES = (
    "Patient",
    "RelatedPerson",
    "Consent",
    "CarePlan",
    "CareTeam",
    "Goal",
    "Task",
    "Communication",
    "Provenance",
)
_DIRECTORY = frozenset({"Organization", "Practitioner", "PractitionerRole"})
_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class EverythingPage:
    """One page of the child's data, the directory entries it refers to, and the total."""

    matches: list[StoredResource]
    included: list[StoredResource]
    total: int
    count: int
    offset: int
    types: tuple[str, ...]


def _search_all(
    repo: FhirRepository, resource_type: str, params: list[tuple[str, str]]
) -> list[StoredResource]:
    page_size = repo.config.max_page_size
    found: list[StoredResource] = []
    offset = 0
    while len(found) < _LIMIT:
        query = repo.parse_search(
            resource_type,
            [*params, ("_count", str(page_size)), ("_offset", str(offset)), ("_total", "none")],
            strict=True,
        )
        result = repo.search(query)
        found.extend(result.matches)
        if len(result.matches) < page_size:
            break
        offset += page_size
    return found


def _search_visible(
    repo: FhirRepository, resource_type: str, params: list[tuple[str, str]]
) -> list[StoredResource]:
    try:
        return _search_all(repo, resource_type, params)
    except Forbidden:
        return []  # the token's scopes do not reach this type: nothing of it is shown


def everything(
    repo: FhirRepository,
    *,
    patient_id: str,
    count: int,
    offset: int,
    types: Sequence[str] | None = None,
) -> EverythingPage:
    """Return one page of everything the caller may see about the child."""
    wanted = tuple(types) if types else EVERYTHING_TYPES
    unknown = [t for t in wanted if t not in EVERYTHING_TYPES]
    if unknown:
        raise BadRequest(
            f"_type may name {', '.join(EVERYTHING_TYPES)}; not {', '.join(sorted(unknown))}"
        )
    # existence is hidden: a caller who may not see the child gets 404 here, and no searches
    patient = repo.read(resource_type="Patient", id=patient_id)
    matches: list[StoredResource] = [patient] if "Patient" in wanted else []
    reference = f"Patient/{patient_id}"
    for resource_type in wanted:
        if resource_type in ("Patient", "Provenance"):
            continue
        matches.extend(_search_visible(repo, resource_type, [("patient", reference)]))
    if "Provenance" in wanted:
        # Provenance points at what it is about, not at the child
        targets = [f"{m.resource_type}/{m.id}" for m in matches]
        seen: set[str] = set()
        for start in range(0, len(targets), 100):
            batch = ",".join(targets[start : start + 100])
            for found in _search_visible(repo, "Provenance", [("target", batch)]):
                if found.id not in seen:
                    seen.add(found.id)
                    matches.append(found)
    matches = matches[:_LIMIT]
    page = matches[offset : offset + count]
    return EverythingPage(
        matches=page,
        included=_directory_entries(repo, page),
        total=len(matches),
        count=count,
        offset=offset,
        types=wanted if types else (),
    )


def _directory_entries(repo: FhirRepository, page: list[StoredResource]) -> list[StoredResource]:
    """Return the services and employees the page refers to, as far as the caller may read them."""
    base = repo.config.base_url
    wanted: set[Key] = set()
    for stored in page:
        wanted |= {k for k in references_in(stored.data, base) if k[0] in _DIRECTORY}
    included: list[StoredResource] = []
    for resource_type, resource_id in sorted(wanted):
        try:
            included.append(repo.read(resource_type=resource_type, id=resource_id))
        except (Forbidden, NotFound, Gone):
            continue  # not readable, or a dangling reference: simply left out
    return included


def everything_bundle(*, fhir_base: str, patient_id: str, page: EverythingPage) -> bytes:
    """Return the searchset Bundle of one page, with self/next/previous links."""
    path = f"{fhir_base}/Patient/{patient_id}/$everything"

    def link(relation: str, offset: int) -> dict[str, str]:
        params: list[tuple[str, str]] = [("_count", str(page.count)), ("_offset", str(offset))]
        if page.types:
            params.append(("_type", ",".join(page.types)))
        return {"relation": relation, "url": f"{path}?{urlencode(params)}"}

    links = [link("self", page.offset)]
    if page.offset + page.count < page.total:
        links.append(link("next", page.offset + page.count))
    if page.offset > 0:
        links.append(link("previous", max(0, page.offset - page.count)))
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{fhir_base}/{s.resource_type}/{s.id}",
            "resource": s.data,
            "search": {"mode": "match"},
        }
        for s in page.matches
    ]
    entries.extend(
        {
            "fullUrl": f"{fhir_base}/{s.resource_type}/{s.id}",
            "resource": s.data,
            "search": {"mode": "include"},
        }
        for s in page.included
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links,
        "entry": entries,
    }
    return orjson.dumps(bundle)
