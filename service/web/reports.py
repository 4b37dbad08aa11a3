"""The family's access report as CSV (the CLI's format) and as PDF (fpdf2, pure Python)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from service.audit.report import rows_to_csv
from service.web.dpo_data import AccessEntry
from service.web.i18n import Translate

__all__ = ["ReportHeader", "report_csv", "report_pdf"]

# The PDF core fonts know Latin-1 only; a few common typographic characters are mapped.
_REPLACEMENTS = str.maketrans(
    {"\u2013": "-", "\u2014": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'}
)
_COLUMNS = (
    ("report.col.time", 34),
    ("report.col.outcome", 22),
    ("report.col.action", 22),
    ("report.col.who", 52),
    ("report.col.org", 42),
    ("report.col.what", 58),
    ("report.col.consent", 47),
)


@dataclass(frozen=True, slots=True)
class ReportHeader:
    """What the report is about: the child, the filters, who made it and when."""

    fnr: str
    patient_id: str
    filters: str
    made_by: str
    made_at: str


def report_csv(entries: Sequence[AccessEntry]) -> str:
    """Return the rows as CSV, exactly as `stafett audit export --format csv`."""
    return rows_to_csv(entry.row for entry in entries)


def _latin1(text: str) -> str:
    return text.translate(_REPLACEMENTS).encode("latin-1", "replace").decode("latin-1")


def report_pdf(
    entries: Sequence[AccessEntry], header: ReportHeader, t: Translate, when: Translate
) -> bytes:
    """Return the access report as a PDF document (A4 landscape, one table)."""
    # fpdf2 (with Pillow) takes most of a second to import: only when a PDF is asked for
    from fpdf import FPDF  # noqa: PLC0415
    from fpdf.enums import XPos, YPos  # noqa: PLC0415

    pdf = FPDF(orientation="L", unit="mm", format="A4")
    title = t("report.title", fnr=header.fnr)
    pdf.set_title(_latin1(title))
    pdf.set_author("Stafett")
    pdf.set_creator("Stafett")
    pdf.set_auto_page_break(auto=True, margin=12)
    pdf.add_page()
    pdf.set_font("Helvetica", style="B", size=15)
    pdf.cell(0, 9, _latin1(title), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("Helvetica", size=9)
    for line in (
        t("report.child", fnr=header.fnr, id=header.patient_id),
        t("report.filters", filters=header.filters),
        t("report.made", who=header.made_by, at=header.made_at),
        t("report.count", count=len(entries)),
    ):
        pdf.cell(0, 5, _latin1(line), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(3)
    pdf.set_font("Helvetica", size=7)
    widths = tuple(width for _, width in _COLUMNS)
    with pdf.table(col_widths=widths, line_height=4, text_align="LEFT") as table:
        heading = table.row()
        for key, _ in _COLUMNS:
            heading.cell(_latin1(t(key)))
        for entry in entries:
            row = entry.row
            organization = (
                f"{entry.org_name} ({row.organization})"
                if entry.org_name and entry.org_name != row.organization
                else row.organization
            )
            cells = (
                when(row.recorded),
                t(f"outcome.{row.outcome}"),
                t(f"action.{row.action}"),
                row.who,
                organization,
                row.resources,
                row.consent,
            )
            cells_row = table.row()
            for value in cells:
                cells_row.cell(_latin1(value))
    pdf.ln(3)
    pdf.set_font("Helvetica", style="I", size=8)
    pdf.multi_cell(0, 4, _latin1(t("report.footer")))
    return bytes(pdf.output())
