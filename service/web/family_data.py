"""A child's log as the family sees it, read through the repository (decided and audited).

The repository applies the family rules: guardians with parental responsibility see the log
except entries hidden from guardians, the youth sees everything from the read age, others see
nothing. This module only arranges what it is given into a timeline.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Final

from service.auth import Principal
from service.config import Settings
from service.errors import FhirError, NotFound
from service.repository import FhirRepository
from service.search.extract import parse_reference
from service.web.consent_changes import effective_access, has_exceptions
from service.web.consent_view import ConsentSummary, names_org, summarize
from service.web.directory import Directory, Org, load_directory
from service.web.formatting import code_in, codes_in, name_of, reference_of, sort_key, today
from service.web.i18n import Translate

__all__ = [
    "Child",
    "ConsentContext",
    "LogView",
    "Me",
    "ServiceAccess",
    "TimelineEntry",
    "consent_context",
    "load_log",
    "visible_children",
]

FNR_SYSTEMS: Final = ("urn:oid:2.16.578.1.12.4.1.4.1", "urn:oid:2.16.578.1.12.4.1.4.2")
PARENTAL: Final = "http://hl7.no/fhir/CodeSystem/no-basis-parental-responsibility"
HIDDEN_CODE: Final = "hidden-from-guardians"
CS: Final = "https://stafett.no/fhir/CodeSystem/"
_MOST: Final = "500"


@dataclass(frozen=True, slots=True)
class Child:
    """A child whose log the visitor may see."""

    id: str
    name: str
    birth_date: str
    is_me: bool


@dataclass(frozen=True, slots=True)
class Me:
    """The visitor in this log: their own resource, role and whether they may consent."""

    reference: str
    role: str
    may_consent: bool


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One event in the log: when, what kind, a heading, text and labelled details."""

    when: str
    kind: str
    title: str
    text: str
    details: tuple[tuple[str, str], ...] = ()
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class ServiceAccess:
    """What one service may do in the log now, by which consents."""

    org: Org
    permitted: bool
    reason: str
    until: str
    actions: tuple[str, ...]
    classes: tuple[str, ...]
    consent_ids: tuple[str, ...]
    exceptions: bool = False


@dataclass
class LogView:
    """Everything the family page shows about one child."""

    child: Child
    me: Me | None
    summary: list[tuple[str, str]] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    services: list[ServiceAccess] = field(default_factory=list)
    others: list[Org] = field(default_factory=list)
    consents: list[ConsentSummary] = field(default_factory=list)


def _identifiers(resource: Mapping[str, Any]) -> set[str]:
    return {
        str(i.get("value"))
        for i in resource.get("identifier") or ()
        if isinstance(i, Mapping) and i.get("system") in FNR_SYSTEMS
    }


def visible_children(repo: FhirRepository, pid: str | None) -> list[Child]:
    """Return the children whose logs the citizen may see (a Patient search, audited)."""
    result = repo.search(repo.parse_search("Patient", [("_count", "100")]))
    children = [
        Child(
            id=stored.id,
            name=name_of(stored.data),
            birth_date=str(stored.data.get("birthDate", "")),
            is_me=pid is not None and pid in _identifiers(stored.data),
        )
        for stored in result.matches
    ]
    return sorted(children, key=lambda c: (not c.is_me, c.name))


def _search(repo: FhirRepository, resource_type: str, patient_id: str) -> list[dict[str, Any]]:
    query = repo.parse_search(
        resource_type, [("patient", f"Patient/{patient_id}"), ("_count", _MOST)]
    )
    return [stored.data for stored in repo.search(query).matches]


def _age(birth: str) -> int | None:
    try:
        born = date.fromisoformat(birth)
    except ValueError:
        return None
    now = today()
    return now.year - born.year - ((now.month, now.day) < (born.month, born.day))


def _me(
    principal: Principal,
    child: Child,
    related: list[dict[str, Any]],
    settings: Settings,
) -> Me | None:
    pid = principal.pid
    if pid is None:
        return None
    if child.is_me:
        age = _age(child.birth_date)
        limit = settings.consent_age.get("default", 16)
        return Me(f"Patient/{child.id}", "youth", age is not None and age >= limit)
    for person in related:
        if pid in _identifiers(person) and person.get("active", True) is not False:
            codes = set(codes_in(person.get("relationship"), PARENTAL))
            may = bool(codes & set(settings.parental_codes))
            return Me(f"RelatedPerson/{person.get('id')}", "guardian", may)
    return None


def _hidden(resource: Mapping[str, Any]) -> bool:
    return any(
        isinstance(label, Mapping) and label.get("code") == HIDDEN_CODE
        for label in (resource.get("meta") or {}).get("security") or ()
    )


class _Names:
    """Names of the people and services a log refers to (directory reads, not audited)."""

    def __init__(self, repo: FhirRepository, directory: Directory, people: dict[str, str]) -> None:
        self._repo = repo
        self._directory = directory
        self._known = dict(people)

    def __call__(self, reference: Any) -> str:
        literal = reference_of(reference)
        display = reference.get("display") if isinstance(reference, Mapping) else None
        if not literal:
            return str(display or "")
        if literal not in self._known:
            self._known[literal] = self._look_up(literal) or str(display or "")
        return self._known[literal]

    def _look_up(self, literal: str) -> str:
        target_type, target_id, _ = parse_reference(literal, self._repo.config.base_url)
        if target_type == "Organization" and target_id:
            org = self._directory.by_id.get(target_id)
            return org.label if org else ""
        if target_type not in ("PractitionerRole", "Practitioner") or not target_id:
            return ""
        try:
            data = self._repo.read(resource_type=target_type, id=target_id).data
        except FhirError:
            return ""
        if target_type == "Practitioner":
            return name_of(data)
        person = self(data.get("practitioner"))
        place = self(data.get("organization"))
        return ", ".join(part for part in (person, place) if part)


def _read_child(
    repo: FhirRepository, principal: Principal, patient_id: str
) -> tuple[Child, list[dict[str, Any]]]:
    """Read the child and the guardians' records (both decided and audited)."""
    patient = repo.read(resource_type="Patient", id=patient_id).data
    child = Child(
        id=patient_id,
        name=name_of(patient),
        birth_date=str(patient.get("birthDate", "")),
        is_me=principal.pid is not None and principal.pid in _identifiers(patient),
    )
    return child, _search(repo, "RelatedPerson", patient_id)


def load_log(
    repo: FhirRepository,
    principal: Principal,
    patient_id: str,
    *,
    settings: Settings,
    t: Translate,
    when: Callable[[Any], str],
) -> LogView:
    """Read one child's log as the family member (404 when they may not see it)."""
    child, related = _read_child(repo, principal, patient_id)
    directory = load_directory(repo)
    people = {f"RelatedPerson/{p.get('id')}": name_of(p) for p in related}
    people[f"Patient/{patient_id}"] = child.name
    names = _Names(repo, directory, people)
    view = LogView(child=child, me=_me(principal, child, related, settings))
    _fill_timeline(repo, view, names, t, when)
    _fill_consents(repo, view, directory)
    return view


def _fill_timeline(
    repo: FhirRepository,
    view: LogView,
    names: _Names,
    t: Translate,
    when: Callable[[Any], str],
) -> None:
    patient_id = view.child.id
    entries: list[TimelineEntry] = []
    for plan in _search(repo, "CarePlan", patient_id):
        level = code_in(
            [e.get("valueCoding") for e in plan.get("extension") or () if isinstance(e, Mapping)],
            CS + "bti-level",
        )
        view.summary.append((t("log.title"), str(plan.get("title") or t("log.untitled"))))
        view.summary.append((t("log.status"), t(f"log.status.{plan.get('status', '')}")))
        if level is not None:
            view.summary.append((t("log.level"), t("level.name", level=level)))
        if plan.get("description"):
            view.summary.append((t("log.concern"), str(plan["description"])))
        entries.append(
            TimelineEntry(
                when=str((plan.get("period") or {}).get("start") or plan.get("created") or ""),
                kind="opened",
                title=t("kind.opened"),
                text=str(plan.get("description", "")),
                hidden=_hidden(plan),
            )
        )
    for team in _search(repo, "CareTeam", patient_id):
        entries.extend(_holders(team, view, names, t, when))
    for goal in _search(repo, "Goal", patient_id):
        entries.append(_goal(goal, t, when))
    for task in _search(repo, "Task", patient_id):
        entries.append(_task(task, names, t, when))
    for message in _search(repo, "Communication", patient_id):
        entries.append(_communication(message, names, t))
    entries.sort(key=lambda e: sort_key(e.when), reverse=True)
    view.timeline = entries


def _holders(
    team: Mapping[str, Any], view: LogView, names: _Names, t: Translate, when: Callable[..., str]
) -> list[TimelineEntry]:
    entries: list[TimelineEntry] = []
    for participant in team.get("participant") or ():
        if code_in(participant.get("role"), CS + "careteam-role") != "stafettholder":
            continue
        who = names(participant.get("member"))
        period = participant.get("period") or {}
        if not period.get("end"):
            view.summary.append((t("log.holder"), who))
        details = ((t("detail.until"), when(period["end"])),) if period.get("end") else ()
        entries.append(
            TimelineEntry(
                when=str(period.get("start", "")),
                kind="holder",
                title=t("kind.holder", who=who),
                text="",
                details=details,
                hidden=_hidden(team),
            )
        )
    return entries


def _goal(goal: Mapping[str, Any], t: Translate, when: Callable[..., str]) -> TimelineEntry:
    due = next((x.get("dueDate") for x in goal.get("target") or () if x.get("dueDate")), None)
    details = [(t("detail.status"), t(f"goal.status.{goal.get('lifecycleStatus', '')}"))]
    if due:
        details.append((t("detail.due"), when(due)))
    return TimelineEntry(
        when=str(goal.get("startDate", "")),
        kind="goal",
        title=t("kind.goal"),
        text=str((goal.get("description") or {}).get("text", "")),
        details=tuple(details),
        hidden=_hidden(goal),
    )


def _task(
    task: Mapping[str, Any], names: _Names, t: Translate, when: Callable[..., str]
) -> TimelineEntry:
    kind = code_in(task.get("code"), CS + "task-type") or "measure"
    execution = task.get("executionPeriod") or {}
    planned = (task.get("restriction") or {}).get("period") or {}
    details: list[tuple[str, str]] = [
        (t("detail.status"), t(f"task.status.{task.get('status', '')}"))
    ]
    if task.get("owner"):
        details.append((t("detail.owner"), names(task.get("owner"))))
    if execution.get("end"):
        details.append((t("detail.ended"), when(execution["end"])))
    if planned.get("end"):
        details.append((t("detail.evaluation"), when(planned["end"])))
    title = t("kind.measure")
    if kind == "bti-level":
        level = next(
            (
                code_in(i.get("valueCodeableConcept"), CS + "bti-level")
                for i in task.get("input") or ()
                if code_in(i.get("type"), CS + "task-parameter") == "bti-level"
            ),
            None,
        )
        title = t("level.name", level=level) if level else t("kind.level")
        for output in task.get("output") or ():
            if code_in(output.get("type"), CS + "task-parameter") == "level-outcome":
                for code in codes_in(output.get("valueCodeableConcept"), CS + "bti-level-outcome"):
                    details.append((t("detail.outcome"), t(f"outcome.level.{code}")))
    for output in task.get("output") or ():
        if code_in(output.get("type"), CS + "task-parameter") == "evaluation":
            note = output.get("valueAnnotation") or {}
            label = t("detail.evaluated", at=when(note.get("time"))) if note.get("time") else ""
            details.append((label or t("detail.evaluation.text"), str(note.get("text", ""))))
    return TimelineEntry(
        when=str(execution.get("start") or task.get("authoredOn") or ""),
        kind="level" if kind == "bti-level" else "measure",
        title=title,
        text=str(task.get("description", "")),
        details=tuple(details),
        hidden=_hidden(task),
    )


def _communication(message: Mapping[str, Any], names: _Names, t: Translate) -> TimelineEntry:
    category = code_in(message.get("category"), CS + "communication-category") or "note"
    if category not in ("note", "meeting", "lysglimt"):
        category = "note"
    text = "\n".join(
        str(p["contentString"])
        for p in message.get("payload") or ()
        if isinstance(p, Mapping) and isinstance(p.get("contentString"), str)
    )
    details: list[tuple[str, str]] = []
    if message.get("sender"):
        details.append((t("detail.sender"), names(message.get("sender"))))
    recipients = [names(r) for r in message.get("recipient") or ()]
    if recipients and category == "meeting":
        details.append((t("detail.participants"), ", ".join(r for r in recipients if r)))
    topic = (message.get("topic") or {}).get("text")
    return TimelineEntry(
        when=str(message.get("sent", "")),
        kind=category,
        title=f"{t('kind.' + category)}: {topic}" if topic else t("kind." + category),
        text=text,
        details=tuple(details),
        hidden=_hidden(message),
    )


def _fill_consents(repo: FhirRepository, view: LogView, directory: Directory) -> None:
    consents = _search(repo, "Consent", view.child.id)
    view.consents = sorted(
        (summarize(c, directory) for c in consents),
        key=lambda s: sort_key(s.signed or s.last_updated),
        reverse=True,
    )
    active = [c for c in consents if c.get("status") == "active"]
    named: dict[str, Org] = {}
    for consent in active:
        for actor in (consent.get("provision") or {}).get("actor") or ():
            org = directory.org_of((actor or {}).get("reference"))
            if org is not None:
                named.setdefault(org.number or org.id, org)
    for org in sorted(named.values(), key=lambda o: o.label):
        view.services.append(_service(repo, view.child.id, org, active, directory))
    having = {s.org.id for s in view.services if s.permitted}
    view.others = sorted(
        (o for o in directory.by_id.values() if o.id not in having and o.kind != "kommune"),
        key=lambda o: o.label,
    )


def _service(
    repo: FhirRepository,
    patient_id: str,
    org: Org,
    active: list[dict[str, Any]],
    directory: Directory,
) -> ServiceAccess:
    mine = [c for c in active if names_org(c.get("provision") or {}, org, directory)]
    summaries = [summarize(c, directory) for c in mine]
    permitted, reason = bool(summaries), ""
    if org.number:
        try:
            decision = repo.consent_status(patient_id=patient_id, organization=org.number)
            permitted, reason = decision.permitted, decision.reason
        except NotFound:
            permitted = False
    actions, classes = effective_access(active, org, directory)
    return ServiceAccess(
        org=org,
        permitted=permitted,
        reason=reason,
        until=max((s.period_end for s in summaries), default=""),
        actions=tuple(actions),
        classes=tuple(classes),
        consent_ids=tuple(s.id for s in summaries),
        exceptions=has_exceptions(active, org, directory),
    )


@dataclass(frozen=True, slots=True)
class ConsentContext:
    """What a consent change needs: the child, the visitor's role, Consents and services."""

    child: Child
    me: Me | None
    consents: list[dict[str, Any]]
    directory: Directory


def consent_context(
    repo: FhirRepository, principal: Principal, patient_id: str, settings: Settings
) -> ConsentContext:
    """Read what a consent change needs, as the family member (404 if they may not see it)."""
    child, related = _read_child(repo, principal, patient_id)
    return ConsentContext(
        child=child,
        me=_me(principal, child, related, settings),
        consents=_search(repo, "Consent", patient_id),
        directory=load_directory(repo),
    )
