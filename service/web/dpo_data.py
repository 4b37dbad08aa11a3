"""The data protection officer's questions, asked through the repository and audited.

The queries are those of `stafett audit` (service/audit/cli.py): the child is found by
fødselsnummer in the search index only (the DPO never reads the log's content, the Patient
included), and the answers are AuditEvent and Consent searches as the DPO, so the repository
decides and audits each of them. On top of that every page view is recorded as one AuditEvent
naming the child and the DPO's query (`record_look`).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Final
from urllib.parse import urlencode

from sqlalchemy import select

from service.audit import AuditRecord
from service.audit.cli import _FNR_SYSTEMS, _patient_ids
from service.audit.report import AccessRow, row_from_event
from service.auth import Principal
from service.errors import ServiceUnavailable
from service.repository import FhirRepository
from service.search.values import now_micros
from service.storage.schema import search_token
from service.web.consent_view import ConsentSummary, summarize
from service.web.directory import Directory
from service.web.formatting import sort_key, today

__all__ = [
    "AccessEntry",
    "ConsentEvent",
    "Filters",
    "access_entries",
    "audit_events",
    "consent_timeline",
    "find_children",
    "fnr_of",
    "record_look",
]

_PAGE: Final = 500
OUTCOMES: Final = ("all", "permitted", "denied")


def find_children(repo: FhirRepository, fnr: str) -> list[str]:
    """Return the Patient ids with this fødselsnummer (search index only, as the CLI)."""
    return _patient_ids(repo, fnr)


def fnr_of(repo: FhirRepository, patient_id: str) -> str | None:
    """Return the fødselsnummer of a Patient id from the search index, if it is a child."""
    with repo.config.database.read() as conn:
        row = conn.execute(
            select(search_token.c.code)
            .where(
                search_token.c.resource_type == "Patient",
                search_token.c.resource_id == patient_id,
                search_token.c.param == "identifier",
                search_token.c.system.in_(_FNR_SYSTEMS),
            )
            .limit(1)
        ).first()
    return str(row[0]) if row is not None else None


def record_look(
    repo: FhirRepository, principal: Principal, *, patient_id: str | None, query: str, what: str
) -> None:
    """Store one AuditEvent for a DPO page view, before anything is shown; fail if it cannot."""
    trail = repo.config.audit
    if trail is None:
        raise ServiceUnavailable("The audit trail is not configured; the DPO pages are closed")
    trail.record(
        [
            AuditRecord(
                request_id=repo.ctx.request_id,
                decision_id=uuid.uuid4().hex,
                recorded=now_micros(),
                interaction="search-type",
                permitted=True,
                principal=principal,
                patient_id=patient_id,
                resources=(f"Patient/{patient_id}",) if patient_id else (),
                query=query,
                basis="dpo",
                reason=f"Data protection officer page: {what}",
            )
        ]
    )


@dataclass(frozen=True, slots=True)
class Filters:
    """The access log's filters: date range, organisation (org.nr) and outcome."""

    since: date | None = None
    until: date | None = None
    organization: str = ""
    outcome: str = "all"

    @classmethod
    def parse(
        cls, params: Mapping[str, str], *, default_days: int | None = None
    ) -> tuple[Filters, list[str]]:
        """Read filters from query parameters; return them and the keys of any errors."""
        errors: list[str] = []
        dates: list[date | None] = []
        for name in ("fra", "til"):
            text = params.get(name, "").strip()
            try:
                dates.append(date.fromisoformat(text) if text else None)
            except ValueError:
                errors.append(f"filter.error.{name}")
                dates.append(None)
        since, until = dates
        typed = params.get("fra", "").strip() or params.get("til", "").strip()
        if since is None and default_days is not None and not typed:
            since = today() - timedelta(days=default_days)
        if since and until and since > until:
            errors.append("filter.error.order")
        organization = params.get("org", "").strip()
        if organization and not (organization.isdigit() and len(organization) == 9):
            errors.append("filter.error.org")
            organization = ""
        outcome = params.get("utfall", "all")
        if outcome not in OUTCOMES:
            outcome = "all"
        return cls(since, until, organization, outcome), errors

    def search_params(self) -> list[tuple[str, str]]:
        """Return the AuditEvent search parameters of these filters."""
        params: list[tuple[str, str]] = []
        if self.since:
            params.append(("date", f"ge{self.since.isoformat()}"))
        if self.until:
            params.append(("date", f"le{self.until.isoformat()}"))
        if self.outcome == "denied":
            params.append(("outcome", "8"))
        elif self.outcome == "permitted":
            params.append(("outcome", "0,4"))
        return params

    def query(self) -> str:
        """Return the filters as a query string for links (exports keep them)."""
        pairs = [
            ("fra", self.since.isoformat() if self.since else ""),
            ("til", self.until.isoformat() if self.until else ""),
            ("org", self.organization),
            ("utfall", self.outcome),
        ]
        return urlencode(pairs)


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One access to a child's log: the report row, the child and the service's name."""

    row: AccessRow
    patient_id: str
    org_name: str


def audit_events(
    repo: FhirRepository, params: Sequence[tuple[str, str]], *, limit: int, newest_first: bool
) -> tuple[list[dict[str, Any]], bool]:
    """Search AuditEvents as the DPO (audited); return at most limit and whether more exist."""
    events: list[dict[str, Any]] = []
    offset = 0
    order = "-date" if newest_first else "date"
    while len(events) < limit:
        count = min(_PAGE, limit - len(events))
        query = repo.parse_search(
            "AuditEvent",
            [
                *params,
                ("_sort", order),
                ("_count", str(count)),
                ("_offset", str(offset)),
                ("_total", "none"),
            ],
            strict=True,
        )
        matches = repo.search(query).matches
        events.extend(stored.data for stored in matches)
        if len(matches) < count:
            return events, False
        offset += count
    return events, True


def _patient_of(event: Mapping[str, Any]) -> str:
    for entity in event.get("entity") or ():
        reference = str((entity.get("what") or {}).get("reference", ""))
        if reference.startswith("Patient/"):
            return reference.split("/", 1)[1]
    return ""


def access_entries(
    events: Sequence[Mapping[str, Any]], directory: Directory, *, organization: str = ""
) -> list[AccessEntry]:
    """Turn AuditEvents into rows, keeping only one organisation's when asked."""
    entries: list[AccessEntry] = []
    for event in events:
        row = row_from_event(event)
        if organization and row.organization != organization:
            continue
        name = directory.name_for_number(row.organization) if row.organization else ""
        entries.append(AccessEntry(row=row, patient_id=_patient_of(event), org_name=name))
    return entries


@dataclass(frozen=True, slots=True)
class ConsentEvent:
    """One version of a Consent on the timeline, and who stored it."""

    when: str
    kind: str
    summary: ConsentSummary
    recorded_by: str
    recorded_org: str


def _written(event: Mapping[str, Any]) -> str:
    """Return the Consent a write event stored ("" when it is not a Consent write)."""
    for entity in event.get("entity") or ():
        reference = str((entity.get("what") or {}).get("reference", ""))
        role = str((entity.get("role") or {}).get("code", ""))
        if role == "4" and reference.startswith("Consent/"):
            return reference.split("/", 1)[1]
    return ""


def _kind(status: str, previous: str | None) -> str:
    if previous is None:
        return "granted" if status == "active" else f"created-{status}"
    if status == previous:
        return "changed"
    if status == "inactive":
        return "withdrawn"
    return "activated" if status == "active" else f"status-{status}"


def consent_timeline(
    repo: FhirRepository, patient_id: str, directory: Directory
) -> list[ConsentEvent]:
    """Return every version of every Consent of a child, oldest first, with its writer."""
    query = repo.parse_search("Consent", [("patient", f"Patient/{patient_id}"), ("_count", "500")])
    consents = repo.search(query).matches
    writes, _ = audit_events(
        repo,
        [("patient", patient_id), ("action", "C,U"), ("outcome", "0")],
        limit=5000,
        newest_first=False,
    )
    by_consent: dict[str, list[Mapping[str, Any]]] = {}
    for event in writes:
        written = _written(event)
        if written:
            by_consent.setdefault(written, []).append(event)
    timeline: list[ConsentEvent] = []
    for consent in consents:
        page = repo.history(
            resource_type="Consent", id=consent.id, since=None, before=None, count=100, offset=0
        )
        unused = list(by_consent.get(consent.id, []))
        previous: str | None = None
        for version in sorted(page.entries, key=lambda v: v.version_id):
            if version.deleted:
                continue
            summary = summarize(version.data, directory)
            writer = _writer_of(unused, summary.last_updated)
            who, org = ("", "")
            if writer is not None:
                unused.remove(writer)
                row = row_from_event(writer)
                who, org = row.who, row.organization
            timeline.append(
                ConsentEvent(
                    when=summary.last_updated,
                    kind=_kind(summary.status, previous),
                    summary=summary,
                    recorded_by=who,
                    recorded_org=directory.name_for_number(org) if org else "",
                )
            )
            previous = summary.status
    timeline.sort(key=lambda e: sort_key(e.when))
    return timeline


def _writer_of(events: list[Mapping[str, Any]], stored_at: str) -> Mapping[str, Any] | None:
    """Return the first write event recorded with (just after) a version was stored."""
    target = sort_key(stored_at)
    for event in events:
        if sort_key(event.get("recorded")) >= target[:19]:
            return event
    return None
