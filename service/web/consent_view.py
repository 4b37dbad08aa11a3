"""Read a Consent for people: who signed, which services, what they may do, until when."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from service.web.directory import Directory, Org
from service.web.formatting import reference_of

__all__ = [
    "ACTIONS",
    "CLASSES",
    "ConsentSummary",
    "action_codes",
    "class_codes",
    "names_org",
    "summarize",
]

ACTION_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/consentaction"
CLASS_SYSTEM: Final = "http://hl7.org/fhir/resource-types"
ACTIONS: Final = ("access", "collect", "correct")
"""The consentaction codes Stafett reads: read in Stafett, deliver, write (§13)."""
CLASSES: Final = ("CarePlan", "CareTeam", "Goal", "Task", "Communication")
"""The log's entry types a consent may cover (an empty list covers all)."""


@dataclass(frozen=True, slots=True)
class ConsentSummary:
    """One Consent version as people read it."""

    id: str
    version: str
    last_updated: str
    status: str
    signed: str
    performers: tuple[str, ...]
    orgs: tuple[Org, ...]
    other_actors: tuple[str, ...]
    actions: tuple[str, ...]
    classes: tuple[str, ...]
    period_start: str
    period_end: str
    form_title: str
    has_form_data: bool
    form_url: str

    @property
    def org_names(self) -> str:
        """Return the services' names, comma-separated."""
        return ", ".join(org.label for org in self.orgs)


def action_codes(provision: Mapping[str, Any]) -> list[str]:
    """Return the consentaction codes of a provision (empty: every action)."""
    codes: list[str] = []
    for concept in provision.get("action") or ():
        for coding in (concept or {}).get("coding") or ():
            if coding.get("system") == ACTION_SYSTEM and isinstance(coding.get("code"), str):
                codes.append(coding["code"])
    return codes


def class_codes(provision: Mapping[str, Any]) -> list[str]:
    """Return the resource types a provision covers (empty: every type)."""
    return [
        str(c["code"])
        for c in provision.get("class") or ()
        if isinstance(c, Mapping) and c.get("system") == CLASS_SYSTEM and c.get("code")
    ]


def names_org(provision: Mapping[str, Any], org: Org, directory: Directory) -> bool:
    """Return whether a provision's actors name this service."""
    for actor in provision.get("actor") or ():
        found = directory.org_of((actor or {}).get("reference"))
        if found is not None and (
            (org.id and found.id == org.id) or (org.number and found.number == org.number)
        ):
            return True
    return False


def summarize(
    consent: Mapping[str, Any], directory: Directory, *, version: str = "", updated: str = ""
) -> ConsentSummary:
    """Summarise one Consent version."""
    provision = consent.get("provision") or {}
    orgs: list[Org] = []
    others: list[str] = []
    for actor in provision.get("actor") or ():
        reference = (actor or {}).get("reference")
        org = directory.org_of(reference)
        if org is not None:
            orgs.append(org)
        elif isinstance(reference, Mapping):
            others.append(reference_of(reference) or str(reference.get("display", "")))
    performers = tuple(
        str(p.get("display") or reference_of(p)) for p in consent.get("performer") or ()
    )
    attachment = consent.get("sourceAttachment") or {}
    period = provision.get("period") or {}
    meta = consent.get("meta") or {}
    return ConsentSummary(
        id=str(consent.get("id", "")),
        version=version or str(meta.get("versionId", "")),
        last_updated=updated or str(meta.get("lastUpdated", "")),
        status=str(consent.get("status", "")),
        signed=str(consent.get("dateTime", "")),
        performers=performers,
        orgs=tuple(orgs),
        other_actors=tuple(o for o in others if o),
        actions=tuple(action_codes(provision)),
        classes=tuple(class_codes(provision)),
        period_start=str(period.get("start", "")),
        period_end=str(period.get("end", "")),
        form_title=str(attachment.get("title", "")),
        has_form_data=isinstance(attachment.get("data"), str) and bool(attachment.get("data")),
        form_url=str(attachment.get("url", "")),
    )
