"""Turn AuditEvents into rows a data protection officer can read, filter and hand to a family."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import orjson

__all__ = ["AccessRow", "row_from_event", "rows_to_csv", "rows_to_json", "rows_to_table"]

_ORG_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
_OUTCOMES = {"0": "permitted", "4": "permitted, not served", "8": "denied"}


@dataclass(frozen=True, slots=True)
class AccessRow:
    """Who did what to which part of a child's log, when, on which consent, with what outcome."""

    recorded: str
    action: str
    outcome: str
    who: str
    organization: str
    resources: str
    consent: str
    basis: str
    reason: str
    request_id: str


def _identifier_text(who: Mapping[str, Any]) -> str:
    identifier = who.get("identifier") or {}
    system = str(identifier.get("system", ""))
    value = str(identifier.get("value", ""))
    label = {
        "urn:oid:2.16.578.1.12.4.1.4.4": "HPR",
        "urn:oid:2.16.578.1.12.4.1.4.1": "fnr",
        _ORG_SYSTEM: "org.nr",
    }.get(system, system)
    return f"{label} {value}".strip() if value else str(who.get("display", ""))


def row_from_event(event: Mapping[str, Any]) -> AccessRow:
    """Summarise one AuditEvent (as Stafett records them) in one row."""
    person = ""
    organization = ""
    for agent in event.get("agent", []):
        who = agent.get("who") or {}
        identifier = who.get("identifier") or {}
        if identifier.get("system") == _ORG_SYSTEM:
            organization = str(identifier.get("value", ""))
        elif agent.get("requestor"):
            name = agent.get("name")
            person = f"{name} ({_identifier_text(who)})" if name else _identifier_text(who)
    resources: list[str] = []
    consent = ""
    details: dict[str, str] = {}
    for entity in event.get("entity", []):
        reference = (entity.get("what") or {}).get("reference", "")
        if reference.startswith("Consent/"):
            consent = reference
        elif reference and not reference.startswith("Patient/"):
            resources.append(reference)
        for detail in entity.get("detail", []):
            if isinstance(detail.get("valueString"), str):
                details[str(detail.get("type"))] = detail["valueString"]
            elif isinstance(detail.get("valueBase64Binary"), str):
                details.setdefault(str(detail.get("type")), "")
    subtype = next((s.get("code", "") for s in event.get("subtype", [])), "")
    request_id = ""
    for entity in event.get("entity", []):
        identifier = (entity.get("what") or {}).get("identifier") or {}
        if entity.get("type", {}).get("code") == "XrequestId" or "request" in str(
            identifier.get("system", "")
        ):
            request_id = str(identifier.get("value", ""))
    return AccessRow(
        recorded=str(event.get("recorded", "")),
        action=subtype,
        outcome=_OUTCOMES.get(str(event.get("outcome")), str(event.get("outcome", ""))),
        who=person,
        organization=organization,
        resources=" ".join(resources),
        consent=consent,
        basis=details.get("decision-basis", ""),
        reason=details.get("reason", str(event.get("outcomeDesc", ""))),
        request_id=request_id,
    )


def rows_to_csv(rows: Iterable[AccessRow]) -> str:
    """Render rows as CSV with a header line."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(AccessRow.__dataclass_fields__)
    for row in rows:
        writer.writerow(asdict(row).values())
    return buffer.getvalue()


def rows_to_json(rows: Iterable[AccessRow]) -> str:
    """Render rows as a JSON array."""
    return orjson.dumps([asdict(row) for row in rows], option=orjson.OPT_INDENT_2).decode()


def rows_to_table(rows: Sequence[AccessRow]) -> str:
    """Render rows for a terminal: time, outcome, who, organisation, what, consent."""
    lines = [f"{'time':24}  {'outcome':9}  {'action':14}  {'who':36}  {'org.nr':9}  what"]
    for row in rows:
        lines.append(
            f"{row.recorded:24}  {row.outcome[:9]:9}  {row.action[:14]:14}  "
            f"{row.who[:36]:36}  {row.organization:9}  {row.resources} {row.consent}".rstrip()
        )
    return "\n".join(lines)
