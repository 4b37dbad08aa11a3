"""The family's pages under /familie/: the log as a timeline, who sees it, consent per service."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Final

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.web.consent_changes import Choice, apply_change, effective_access, plan_change
from service.web.consent_view import ACTIONS, CLASSES, names_org
from service.web.directory import Org
from service.web.family_data import ConsentContext, consent_context, load_log, visible_children
from service.web.formatting import iso_now, today
from service.web.pages import Need, Page, PageError, guarded, open_page

__all__ = ["routes"]

_MAX_YEARS: Final = 5
_MESSAGES: Final = ("granted", "changed", "withdrawn")


@guarded
async def index(request: Request) -> Response:
    """The children whose logs the visitor may see."""
    page = await open_page(request, Need.FAMILY)
    repo = page.repository()
    children = await run_in_threadpool(visible_children, repo, page.principal.pid)
    return page.render("family_index.html", {"children": children})


@guarded
async def child(request: Request) -> Response:
    """One child's log: overview, who can see it, timeline and consents."""
    page = await open_page(request, Need.FAMILY)
    patient_id = request.path_params["patient_id"]
    repo = page.repository()
    view = await run_in_threadpool(
        lambda: load_log(
            repo,
            page.principal,
            patient_id,
            settings=page.services.settings,
            t=page.t,
            when=page.when,
        )
    )
    message = request.query_params.get("melding", "")
    return page.render(
        "family_child.html",
        {
            "view": view,
            "message": page.t(f"family.done.{message}") if message in _MESSAGES else "",
            "consent_age": page.services.settings.consent_age.get("default", 16),
        },
    )


def _org(context: ConsentContext, key: str) -> Org:
    directory = context.directory
    org = directory.by_id.get(key) or directory.by_number.get(key)
    if org is None:
        raise PageError(404, "error.404.service")
    return org


async def _change_context(page: Page) -> tuple[ConsentContext, Org]:
    patient_id = page.request.path_params["patient_id"]
    repo = page.repository()
    context = await run_in_threadpool(
        consent_context, repo, page.principal, patient_id, page.services.settings
    )
    if context.me is None or not context.me.may_consent:
        raise PageError(403, "error.403.consent")
    return context, _org(context, page.request.path_params["org"])


def _defaults(context: ConsentContext, org: Org) -> tuple[list[str], list[str], str]:
    actions, classes = effective_access(context.consents, org, context.directory)
    ends = [
        str(((c.get("provision") or {}).get("period") or {}).get("end", ""))
        for c in context.consents
        if c.get("status") == "active"
        and names_org(c.get("provision") or {}, org, context.directory)
    ]
    until = max((e for e in ends if e), default="")[:10]
    if not until or until <= today().isoformat():
        until = (today() + timedelta(days=365)).isoformat()
    return actions or ["access"], classes or list(CLASSES), until


def _render_form(
    page: Page,
    context: ConsentContext,
    org: Org,
    *,
    actions: list[str],
    classes: list[str],
    until: str,
    errors: dict[str, str] | None = None,
) -> Response:
    granted, _ = effective_access(context.consents, org, context.directory)
    return page.render(
        "family_change.html",
        {
            "child": context.child,
            "org": org,
            "existing": bool(granted),
            "actions": actions,
            "classes": classes,
            "all_classes": CLASSES,
            "until": until,
            "min_date": (today() + timedelta(days=1)).isoformat(),
            "max_date": (today() + timedelta(days=365 * _MAX_YEARS)).isoformat(),
            "errors": errors or {},
        },
        status=400 if errors else 200,
    )


@guarded
async def change_form(request: Request) -> Response:
    """First click: the form to grant a service access, or to narrow or widen it."""
    page = await open_page(request, Need.FAMILY)
    context, org = await _change_context(page)
    actions, classes, until = _defaults(context, org)
    return _render_form(page, context, org, actions=actions, classes=classes, until=until)


def _choice(fields: dict[str, list[str]]) -> tuple[Choice | None, dict[str, str], str]:
    """Read the form; return the choice (or None), errors by field and the date as typed."""
    errors: dict[str, str] = {}
    extra = [a for a in fields.get("handling", []) if a in ACTIONS and a != "access"]
    classes = [c for c in CLASSES if c in fields.get("del", [])]
    if not classes:
        errors["del"] = "family.form.error.classes"
    typed = (fields.get("gyldig_til") or [""])[0].strip()
    until: date | None = None
    try:
        until = date.fromisoformat(typed)
    except ValueError:
        errors["gyldig_til"] = "family.form.error.date"
    if until is not None and not (today() < until <= today() + timedelta(days=365 * _MAX_YEARS)):
        errors["gyldig_til"] = "family.form.error.range"
    if errors or until is None:
        return None, errors, typed
    actions = tuple(a for a in ACTIONS if a == "access" or a in extra)
    return Choice(actions=actions, classes=tuple(classes), until=until), {}, typed


def _apply(page: Page, context: ConsentContext, org: Org, choice: Choice | None) -> None:
    assert context.me is not None
    plan = plan_change(
        consents=context.consents,
        org=org,
        directory=context.directory,
        patient_id=context.child.id,
        performer=context.me.reference,
        choice=choice,
        now=iso_now(),
        start=today(),
    )
    apply_change(page.repository(), plan)


@guarded
async def change(request: Request) -> Response:
    """Second click: store the grant or change as Consent writes (effective at once)."""
    page = await open_page(request, Need.FAMILY)
    fields = await page.form()
    context, org = await _change_context(page)
    choice, errors, typed = _choice(fields)
    if choice is None:
        messages = {field: page.t(key) for field, key in errors.items()}
        chosen: list[str] = [a for a in ACTIONS if a in fields.get("handling", [])]
        return _render_form(
            page,
            context,
            org,
            actions=chosen or ["access"],
            classes=[c for c in CLASSES if c in fields.get("del", [])],
            until=typed,
            errors=messages,
        )
    existed = bool(effective_access(context.consents, org, context.directory)[0])
    await run_in_threadpool(_apply, page, context, org, choice)
    done = "changed" if existed else "granted"
    return RedirectResponse(
        f"/familie/barn/{context.child.id}?melding={done}#tjenester", status_code=303
    )


@guarded
async def withdraw_form(request: Request) -> Response:
    """First click: confirm withdrawing a service's access."""
    page = await open_page(request, Need.FAMILY)
    context, org = await _change_context(page)
    values: dict[str, Any] = {"child": context.child, "org": org}
    return page.render("family_withdraw.html", values)


@guarded
async def withdraw(request: Request) -> Response:
    """Second click: withdraw the service's access (Consent inactive), at once everywhere."""
    page = await open_page(request, Need.FAMILY)
    await page.form()
    context, org = await _change_context(page)
    await run_in_threadpool(_apply, page, context, org, None)
    return RedirectResponse(
        f"/familie/barn/{context.child.id}?melding=withdrawn#tjenester", status_code=303
    )


_SERVICE = "/familie/barn/{patient_id}/tjeneste/{org}"
routes = [
    Route("/familie", index, methods=["GET"]),
    Route("/familie/", index, methods=["GET"]),
    Route("/familie/barn/{patient_id}", child, methods=["GET"]),
    Route(_SERVICE + "/endre", change_form, methods=["GET"]),
    Route(_SERVICE + "/endre", change, methods=["POST"]),
    Route(_SERVICE + "/trekk", withdraw_form, methods=["GET"]),
    Route(_SERVICE + "/trekk", withdraw, methods=["POST"]),
]
