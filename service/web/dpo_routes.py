"""The data protection officer's pages under /dpo/: find a child, consents, access log, exports."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.errors import NotFound
from service.fhir.primitives import is_valid_id
from service.identifiers import is_valid_fnr
from service.repository import FhirRepository
from service.web.directory import Directory, load_directory
from service.web.dpo_data import (
    AccessEntry,
    Filters,
    access_entries,
    audit_events,
    consent_timeline,
    find_children,
    fnr_of,
    record_look,
)
from service.web.formatting import iso_now
from service.web.pages import Need, Page, PageError, guarded, open_page
from service.web.reports import ReportHeader, report_csv, report_pdf

__all__ = ["routes"]

_SHOWN: Final = 500
_EXPORTED: Final = 20_000
_FORM_TYPES: Final = {"application/pdf", "image/png", "image/jpeg", "image/tiff"}


def _child_or_404(repo: FhirRepository, patient_id: str) -> str:
    """Return the child's fødselsnummer, or answer 404 for an id that is no child."""
    fnr = fnr_of(repo, patient_id) if is_valid_id(patient_id) else None
    if fnr is None:
        raise PageError(404, "error.404.child")
    return fnr


@guarded
async def index(request: Request) -> Response:
    """Start page: find a child by fødselsnummer; link to refused attempts."""
    page = await open_page(request, Need.DPO)
    return page.render("dpo_index.html", {"fnr": "", "error": "", "matches": []})


@guarded
async def find(request: Request) -> Response:
    """Look a child up by fødselsnummer (POST, so the number stays out of URLs and logs)."""
    page = await open_page(request, Need.DPO)
    fields = await page.form()
    fnr = "".join((fields.get("fnr") or [""])[0].split())
    if not is_valid_fnr(fnr):
        values = {"fnr": fnr, "error": page.t("dpo.find.invalid"), "matches": []}
        return page.render("dpo_index.html", values, status=400)
    repo = page.repository()

    def lookup() -> list[str]:
        found = find_children(repo, fnr)
        record_look(
            repo,
            page.principal,
            patient_id=found[0] if len(found) == 1 else None,
            query=f"POST /dpo/finn fnr={fnr}",
            what="find a child by fødselsnummer",
        )
        return found

    found = await run_in_threadpool(lookup)
    if len(found) == 1:
        return RedirectResponse(f"/dpo/barn/{found[0]}", status_code=303)
    error = page.t("dpo.find.none") if not found else ""
    return page.render("dpo_index.html", {"fnr": fnr, "error": error, "matches": found}, status=200)


@guarded
async def child(request: Request) -> Response:
    """A child's consent timeline: who granted what to whom, when, with the signed form."""
    page = await open_page(request, Need.DPO)
    patient_id = request.path_params["patient_id"]
    repo = page.repository()

    def load() -> dict[str, Any]:
        fnr = _child_or_404(repo, patient_id)
        record_look(
            repo,
            page.principal,
            patient_id=patient_id,
            query=f"GET /dpo/barn/{patient_id}",
            what="consent timeline",
        )
        directory = load_directory(repo)
        return {
            "fnr": fnr,
            "patient_id": patient_id,
            "timeline": consent_timeline(repo, patient_id, directory),
        }

    return page.render("dpo_child.html", await run_in_threadpool(load))


def _entries(
    repo: FhirRepository,
    filters: Filters,
    directory: Directory,
    *,
    patient_id: str | None,
    limit: int,
    newest_first: bool,
) -> tuple[list[AccessEntry], bool]:
    params = filters.search_params()
    if patient_id is not None:
        params.append(("patient", patient_id))
    events, more = audit_events(repo, params, limit=limit, newest_first=newest_first)
    entries = access_entries(events, directory, organization=filters.organization)
    return entries, more


@guarded
async def access_log(request: Request) -> Response:
    """Who read or wrote what in a child's log, when, on which consent; with filters."""
    page = await open_page(request, Need.DPO)
    patient_id = request.path_params["patient_id"]
    filters, errors = Filters.parse(request.query_params)
    repo = page.repository()

    def load() -> dict[str, Any]:
        fnr = _child_or_404(repo, patient_id)
        record_look(
            repo,
            page.principal,
            patient_id=patient_id,
            query=f"GET /dpo/barn/{patient_id}/tilgang?{filters.query()}",
            what="access log",
        )
        directory = load_directory(repo)
        entries, more = _entries(
            repo, filters, directory, patient_id=patient_id, limit=_SHOWN, newest_first=True
        )
        return {
            "fnr": fnr,
            "patient_id": patient_id,
            "filters": filters,
            "errors": errors,
            "entries": entries,
            "more": more,
            "orgs": sorted(directory.by_number.values(), key=lambda o: o.label),
            "export_query": filters.query(),
        }

    values = await run_in_threadpool(load)
    return page.render("dpo_access.html", values, status=400 if errors else 200)


@guarded
async def denied(request: Request) -> Response:
    """Refused attempts across all children (the last 30 days unless a range is given)."""
    page = await open_page(request, Need.DPO)
    filters, errors = Filters.parse(request.query_params, default_days=30)
    filters = Filters(filters.since, filters.until, filters.organization, "denied")
    repo = page.repository()

    def load() -> dict[str, Any]:
        record_look(
            repo,
            page.principal,
            patient_id=None,
            query=f"GET /dpo/avviste?{filters.query()}",
            what="refused attempts across all children",
        )
        directory = load_directory(repo)
        entries, more = _entries(
            repo, filters, directory, patient_id=None, limit=_SHOWN, newest_first=True
        )
        return {
            "filters": filters,
            "errors": errors,
            "entries": entries,
            "more": more,
            "orgs": sorted(directory.by_number.values(), key=lambda o: o.label),
        }

    values = await run_in_threadpool(load)
    return page.render("dpo_denied.html", values, status=400 if errors else 200)


@guarded
async def export(request: Request) -> Response:
    """The family's access report as CSV or PDF, with the access log's filters."""
    page = await open_page(request, Need.DPO)
    patient_id = request.path_params["patient_id"]
    fmt = request.path_params["fmt"]
    if fmt not in ("csv", "pdf"):
        raise PageError(404, "error.404")
    filters, errors = Filters.parse(request.query_params)
    if errors:
        raise PageError(400, errors[0])
    repo = page.repository()

    def load() -> tuple[str, list[AccessEntry]]:
        fnr = _child_or_404(repo, patient_id)
        record_look(
            repo,
            page.principal,
            patient_id=patient_id,
            query=f"GET /dpo/barn/{patient_id}/rapport.{fmt}?{filters.query()}",
            what=f"export of the access report ({fmt})",
        )
        directory = load_directory(repo)
        entries, _ = _entries(
            repo, filters, directory, patient_id=patient_id, limit=_EXPORTED, newest_first=False
        )
        return fnr, entries

    fnr, entries = await run_in_threadpool(load)
    name = f"tilgangsrapport-{patient_id}"
    if fmt == "csv":
        return Response(
            report_csv(entries),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}.csv"'},
        )
    header = ReportHeader(
        fnr=fnr,
        patient_id=patient_id,
        filters=_describe(page, filters),
        made_by=page.principal.display or page.principal.audit_identity,
        made_at=page.when(iso_now()),
    )
    body = await run_in_threadpool(report_pdf, entries, header, page.t, page.when)
    return Response(
        body,
        media_type="application/pdf",
        headers={"content-disposition": f'attachment; filename="{name}.pdf"'},
    )


def _describe(page: Page, filters: Filters) -> str:
    t = page.t
    parts = [
        t("filter.since") + ": " + (filters.since.isoformat() if filters.since else "-"),
        t("filter.until") + ": " + (filters.until.isoformat() if filters.until else "-"),
        t("filter.org") + ": " + (filters.organization or t("filter.all")),
        t("filter.outcome") + ": " + t(f"filter.outcome.{filters.outcome}"),
    ]
    return "; ".join(parts)


@guarded
async def signed_form(request: Request) -> Response:
    """Download the signed consent form (the Consent's sourceAttachment)."""
    page = await open_page(request, Need.DPO)
    patient_id = request.path_params["patient_id"]
    consent_id = request.path_params["consent_id"]
    repo = page.repository()

    def load() -> dict[str, Any]:
        _child_or_404(repo, patient_id)
        record_look(
            repo,
            page.principal,
            patient_id=patient_id,
            query=f"GET /dpo/barn/{patient_id}/samtykke/{consent_id}/skjema",
            what="signed consent form",
        )
        consent = repo.read(resource_type="Consent", id=consent_id).data
        if (consent.get("patient") or {}).get("reference", "").split("/")[-1] != patient_id:
            raise NotFound(f"Consent/{consent_id} is not a consent of this child")
        attachment: dict[str, Any] = consent.get("sourceAttachment") or {}
        return attachment

    attachment = await run_in_threadpool(load)
    data = attachment.get("data")
    if not isinstance(data, str) or not data:
        raise PageError(404, "error.404.form")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PageError(404, "error.404.form") from exc
    media_type = str(attachment.get("contentType", ""))
    if media_type not in _FORM_TYPES:
        media_type = "application/octet-stream"
    extension = {"application/pdf": "pdf", "image/png": "png", "image/jpeg": "jpg"}.get(
        media_type, "bin"
    )
    return Response(
        content,
        media_type=media_type,
        headers={
            "content-disposition": f'attachment; filename="samtykke-{consent_id}.{extension}"'
        },
    )


routes = [
    Route("/dpo", index, methods=["GET"]),
    Route("/dpo/", index, methods=["GET"]),
    Route("/dpo/finn", find, methods=["POST"]),
    Route("/dpo/avviste", denied, methods=["GET"]),
    Route("/dpo/barn/{patient_id}", child, methods=["GET"]),
    Route("/dpo/barn/{patient_id}/tilgang", access_log, methods=["GET"]),
    Route("/dpo/barn/{patient_id}/rapport.{fmt:str}", export, methods=["GET"]),
    Route("/dpo/barn/{patient_id}/samtykke/{consent_id}/skjema", signed_form, methods=["GET"]),
]
