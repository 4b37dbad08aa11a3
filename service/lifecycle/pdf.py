"""The archive's PDF summary of a child's stafettlogg (fpdf2, pure Python, Norwegian text).

The FHIR Bundle is the complete record; the PDF is what an archivist or the family reads:
the child, the guardians, each log with its levels, measures and evaluations, the entries in
time order, who took part and the consents. fpdf2's core fonts are Latin-1, which holds
æ, ø and å; the few characters outside it (dashes, quotes) are replaced, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["summary_pdf"]

_REPLACEMENTS = str.maketrans(
    {
        "\u2013": "-",
        "\u2014": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u2026": "...",
        "\u00a0": " ",
        "\u2022": "*",
    }
)
_HIDDEN_CODES = frozenset({"hidden-from-guardians"})
_CATEGORY = {"note": "Notat", "meeting": "Møte", "lysglimt": "Lysglimt"}
_OUTCOME = {
    "close": "a) Avslutte saken",
    "continue-measures": "b) Videreføre tiltak",
    "change-level": "c) Overføring til annet nivå",
    "system-measures": "d) Systemtiltak",
}
_STATUS = {
    "active": "aktiv",
    "completed": "avsluttet",
    "revoked": "avsluttet av foreldrene",
    "entered-in-error": "registrert ved en feil",
    "inactive": "trukket tilbake",
    "draft": "utkast",
    "rejected": "avslått",
}


def _latin1(text: str) -> str:
    return text.translate(_REPLACEMENTS).encode("latin-1", "replace").decode("latin-1")


def _code(concept: Any) -> str | None:
    if isinstance(concept, Mapping):
        for coding in concept.get("coding") or ():
            if isinstance(coding, Mapping) and isinstance(coding.get("code"), str):
                return str(coding["code"])
    return None


def _codes(concepts: Any) -> list[str]:
    return [c for c in (_code(x) for x in concepts or ()) if c]


def _name(resource: Mapping[str, Any]) -> str:
    for name in resource.get("name") or ():
        if isinstance(name, Mapping):
            given = " ".join(str(g) for g in name.get("given") or ())
            return " ".join(part for part in (given, str(name.get("family") or "")) if part)
    return ""


def _identifier(resource: Mapping[str, Any]) -> str:
    for identifier in resource.get("identifier") or ():
        if isinstance(identifier, Mapping) and identifier.get("value"):
            return str(identifier["value"])
    return ""


def _period(period: Any) -> str:
    if not isinstance(period, Mapping):
        return ""
    start, end = period.get("start"), period.get("end")
    return f"{start or '?'} - {end or ''}".strip()


def _hidden(resource: Mapping[str, Any]) -> bool:
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, Mapping) else None
    return any(isinstance(x, Mapping) and x.get("code") in _HIDDEN_CODES for x in labels or ())


def _ref(value: Any, names: Mapping[str, str]) -> str:
    if not isinstance(value, Mapping):
        return ""
    reference = value.get("reference")
    display = value.get("display")
    if isinstance(display, str):
        return display
    if isinstance(reference, str):
        return names.get(reference, reference)
    return ""


class _Doc:
    """A thin writer over FPDF: headings, labelled lines and paragraphs."""

    def __init__(self, title: str) -> None:
        # fpdf2 (with Pillow) takes most of a second to import: only when a PDF is made
        from fpdf import FPDF  # noqa: PLC0415
        from fpdf.enums import XPos, YPos  # noqa: PLC0415

        self._x, self._y = XPos.LMARGIN, YPos.NEXT
        self.pdf = FPDF(orientation="P", unit="mm", format="A4")
        self.pdf.set_title(_latin1(title))
        self.pdf.set_author("Stafett")
        self.pdf.set_creator("Stafett")
        self.pdf.set_auto_page_break(auto=True, margin=15)
        self.pdf.add_page()
        self.pdf.set_font("Helvetica", style="B", size=16)
        self.pdf.multi_cell(0, 8, _latin1(title), new_x=self._x, new_y=self._y)

    def heading(self, text: str) -> None:
        self.pdf.ln(3)
        self.pdf.set_font("Helvetica", style="B", size=12)
        self.pdf.multi_cell(0, 6, _latin1(text), new_x=self._x, new_y=self._y)

    def subheading(self, text: str) -> None:
        self.pdf.ln(1)
        self.pdf.set_font("Helvetica", style="B", size=10)
        self.pdf.multi_cell(0, 5, _latin1(text), new_x=self._x, new_y=self._y)

    def line(self, text: str, *, italic: bool = False) -> None:
        self.pdf.set_font("Helvetica", style="I" if italic else "", size=9)
        self.pdf.multi_cell(0, 4.5, _latin1(text), new_x=self._x, new_y=self._y)

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def _by_type(resources: Iterable[Mapping[str, Any]], resource_type: str) -> list[Mapping[str, Any]]:
    return [r for r in resources if r.get("resourceType") == resource_type]


def summary_pdf(
    *,
    current: Sequence[Mapping[str, Any]],
    patient_id: str,
    made_at: str,
    made_by: str,
    bundle_sha256: str,
) -> bytes:
    """Return the PDF summary of a child's log from the current version of every resource."""
    names: dict[str, str] = {}
    for resource in current:
        key = f"{resource.get('resourceType')}/{resource.get('id')}"
        label = _name(resource) or str(resource.get("name") or "")
        if resource.get("resourceType") == "PractitionerRole":
            label = _ref(resource.get("practitioner"), names) or _code_text(resource)
        if label:
            names[key] = label
    patient = next((r for r in _by_type(current, "Patient") if r.get("id") == patient_id), {})
    doc = _Doc(f"Stafettlogg - arkivsammendrag for {_name(patient) or patient_id}")
    doc.line(
        f"Fødselsnummer: {_identifier(patient) or '-'}   Født: {patient.get('birthDate', '-')}"
    )
    doc.line(f"Laget {made_at} av {made_by}. Pasient-id i Stafett: {patient_id}")
    doc.line(f"Fullstendig innhold: FHIR Bundle med SHA-256 {bundle_sha256}", italic=True)

    doc.heading("Foresatte og pårørende")
    for person in _by_type(current, "RelatedPerson"):
        relation = ", ".join(_codes(person.get("relationship")))
        doc.line(f"{_name(person) or '-'} ({_identifier(person) or 'uten id'}): {relation}")

    for plan in _by_type(current, "CarePlan"):
        plan_ref = f"CarePlan/{plan.get('id')}"
        doc.heading(f"Logg: {plan.get('title') or plan_ref}")
        doc.line(f"Status: {_STATUS.get(str(plan.get('status')), plan.get('status'))}")
        doc.line(f"Periode: {_period(plan.get('period'))}")
        if plan.get("description"):
            doc.line(f"Oppmerksomhet: {plan['description']}")
        tasks = [
            t
            for t in _by_type(current, "Task")
            if any(
                isinstance(b, Mapping) and str(b.get("reference", "")).endswith(plan_ref)
                for b in t.get("basedOn") or ()
            )
        ]
        _levels(doc, tasks)
        _measures(doc, tasks, names)
        _other_tasks(doc, tasks, names)
    _goals(doc, _by_type(current, "Goal"))
    _entries(doc, _by_type(current, "Communication"), names)
    _teams(doc, _by_type(current, "CareTeam"), names)
    _consents(doc, _by_type(current, "Consent"), names)
    return doc.output()


def _code_text(resource: Mapping[str, Any]) -> str:
    return ", ".join(_codes(resource.get("code")))


def _task_code(task: Mapping[str, Any]) -> str | None:
    return _code(task.get("code"))


def _start(task: Mapping[str, Any]) -> str:
    period = task.get("executionPeriod")
    return str(period.get("start") or "") if isinstance(period, Mapping) else ""


def _levels(doc: _Doc, tasks: list[Mapping[str, Any]]) -> None:
    levels = sorted((t for t in tasks if _task_code(t) == "bti-level"), key=_start)
    if not levels:
        return
    doc.subheading("Nivåer")
    for task in levels:
        level = next((_code(i.get("valueCodeableConcept")) for i in task.get("input") or ()), "?")
        outcomes = [
            _OUTCOME.get(c, c)
            for c in (_code(o.get("valueCodeableConcept")) for o in task.get("output") or ())
            if c
        ]
        outcome = "; ".join(outcomes) or "pågår"
        doc.line(f"Nivå {level}, {_period(task.get('executionPeriod'))}: {outcome}")


def _measures(doc: _Doc, tasks: list[Mapping[str, Any]], names: Mapping[str, str]) -> None:
    measures = sorted((t for t in tasks if _task_code(t) in ("measure", None)), key=_start)
    if not measures:
        return
    doc.subheading("Tiltak")
    for task in measures:
        restriction = task.get("restriction")
        evaluation = ""
        if isinstance(restriction, Mapping) and isinstance(restriction.get("period"), Mapping):
            evaluation = str(restriction["period"].get("end") or "")
        doc.line(
            f"{task.get('description') or '(uten beskrivelse)'} - ansvarlig: "
            f"{_ref(task.get('owner'), names) or '-'}, status {task.get('status')}, "
            f"periode {_period(task.get('executionPeriod'))}"
            + (f", evaluering {evaluation}" if evaluation else "")
            + (" [skjult for foresatte]" if _hidden(task) else "")
        )
        for output in task.get("output") or ():
            note = output.get("valueAnnotation")
            if isinstance(note, Mapping) and note.get("text"):
                doc.line(f"   Evaluering {note.get('time', '')}: {note['text']}", italic=True)


def _other_tasks(doc: _Doc, tasks: list[Mapping[str, Any]], names: Mapping[str, str]) -> None:
    others = [t for t in tasks if _task_code(t) not in ("bti-level", "measure", None)]
    if not others:
        return
    doc.subheading("Andre oppgaver (f.eks. krav om retting)")
    for task in others:
        doc.line(
            f"{_task_code(task)}: {task.get('description') or '-'} (status {task.get('status')},"
            f" fra {_ref(task.get('requester'), names) or '-'})"
        )


def _goals(doc: _Doc, goals: list[Mapping[str, Any]]) -> None:
    if not goals:
        return
    doc.heading("Mål")
    for goal in goals:
        description = goal.get("description")
        text = description.get("text") if isinstance(description, Mapping) else None
        doc.line(f"{text or '-'} ({goal.get('lifecycleStatus')})")


def _entries(doc: _Doc, entries: list[Mapping[str, Any]], names: Mapping[str, str]) -> None:
    if not entries:
        return
    doc.heading("Notater, møter og lysglimt")
    for entry in sorted(entries, key=lambda e: str(e.get("sent") or "")):
        category = next(iter(_codes(entry.get("category"))), "note")
        texts = [
            str(p["contentString"])
            for p in entry.get("payload") or ()
            if isinstance(p, Mapping) and p.get("contentString")
        ]
        hidden = " [skjult for foresatte]" if _hidden(entry) else ""
        doc.subheading(
            f"{_CATEGORY.get(category, category)} {entry.get('sent') or ''} - "
            f"{_ref(entry.get('sender'), names) or 'ukjent avsender'}{hidden}"
        )
        for text in texts:
            doc.line(text)


def _teams(doc: _Doc, teams: list[Mapping[str, Any]], names: Mapping[str, str]) -> None:
    if not teams:
        return
    doc.heading("Stafettholder og deltakere")
    for team in teams:
        for participant in team.get("participant") or ():
            role = ", ".join(_codes(participant.get("role"))) or "deltaker"
            doc.line(
                f"{role}: {_ref(participant.get('member'), names) or '-'} "
                f"({_period(participant.get('period'))})"
            )


def _consents(doc: _Doc, consents: list[Mapping[str, Any]], names: Mapping[str, str]) -> None:
    if not consents:
        return
    doc.heading("Samtykker")
    for consent in sorted(consents, key=lambda c: str(c.get("dateTime") or "")):
        provision = consent.get("provision")
        actors = []
        period = ""
        if isinstance(provision, Mapping):
            period = _period(provision.get("period"))
            actors = [_ref(a.get("reference"), names) for a in provision.get("actor") or ()]
        performers = ", ".join(_ref(p, names) for p in consent.get("performer") or ())
        doc.line(
            f"{consent.get('dateTime') or '-'}: {_STATUS.get(str(consent.get('status')), '')} - "
            f"signert av {performers or '-'}; gjelder {', '.join(a for a in actors if a) or '-'}"
            f" ({period})"
        )
