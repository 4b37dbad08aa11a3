"""FHIR R4 RESTful interactions under /fhir (https://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.api import render
from service.api.deps import Services, repository_for, services_of
from service.api.limits import check_bundle_entries, check_json_depth, check_search_size
from service.api.outcomes import FHIR_JSON, outcome_bytes
from service.bundles import process_bundle
from service.errors import BadRequest, Issue, NotAcceptable, UnsupportedMediaType
from service.fhir.primitives import is_valid_id
from service.fhir.validation import parse_json
from service.identifiers import is_valid_orgnr
from service.lifecycle.closing import close_log
from service.lifecycle.everything import everything, everything_bundle
from service.repository import FhirRepository, WriteResult
from service.search.values import InvalidDate, parse_date_range
from service.storage.store import StoredResource

__all__ = ["routes"]

_T = TypeVar("_T")
_E = TypeVar("_E", bound=Callable[..., Any])

# Plain Starlette routes: the endpoints parse their own input (FHIR JSON, search parameters),
# so FastAPI's parameter solving and route matching would only add CPU to every request.
routes: list[Route] = []


def _route(path: str, method: str) -> Callable[[_E], _E]:
    """Register an endpoint called as endpoint(request, **path_params)."""

    def register(endpoint: _E) -> _E:
        if inspect.iscoroutinefunction(endpoint):

            async def handle_async(request: Request) -> Response:
                response: Response = await endpoint(request, **request.path_params)
                return response

            handler: Callable[[Request], Any] = handle_async
        else:

            def handle_sync(request: Request) -> Response:
                response: Response = endpoint(request, **request.path_params)
                return response

            handler = handle_sync
        routes.append(Route(path, handler, methods=[method], name=endpoint.__name__))
        return endpoint

    return register


_JSON_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json")
_ACCEPTABLE = ("application/fhir+json", "application/json", "*/*", "application/*", "")
_FORMAT_OK = ("json", "application/json", "application/fhir+json")


def _negotiate(request: Request) -> None:
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt not in _FORMAT_OK:
        raise NotAcceptable(f"_format '{fmt}' is not served; this server speaks FHIR JSON only")
    accept = request.headers.get("accept", "")
    if fmt is None and accept:
        kinds = [part.split(";")[0].strip() for part in accept.split(",")]
        if not any(kind in _ACCEPTABLE for kind in kinds):
            raise NotAcceptable(f"Cannot answer with {accept}; use application/fhir+json")


async def _json_body(request: Request, *, patch: bool = False) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    allowed = ("application/json-patch+json",) if patch else _JSON_TYPES[:2]
    if content_type not in allowed:
        raise UnsupportedMediaType(
            f"Content-Type '{content_type or 'none'}' is not accepted; send " + " or ".join(allowed)
        )
    body = parse_json(await request.body())
    check_json_depth(body, max_depth=services_of(request).settings.max_json_depth)
    return body


def _resource_headers(stored: StoredResource, fhir_base: str) -> dict[str, str]:
    return {
        "ETag": render.etag(stored),
        "Last-Modified": render.last_modified(stored),
        "Content-Location": f"{fhir_base}/{stored.resource_type}/{stored.id}"
        f"/_history/{stored.version_id}",
    }


def _write_response(request: Request, result: WriteResult, fhir_base: str) -> Response:
    stored = result.stored
    headers = _resource_headers(stored, fhir_base)
    status = 201 if result.created else 200
    if result.created:
        headers["Location"] = headers["Content-Location"]
    prefer = _prefer_return(request)
    if prefer == "minimal":
        return Response(status_code=status, headers=headers)
    if prefer == "OperationOutcome":
        text = (
            f"Created {stored.resource_type}/{stored.id}"
            if result.created
            else f"{'Updated' if result.changed else 'Unchanged'} "
            f"{stored.resource_type}/{stored.id}"
        )
        return Response(
            outcome_bytes([Issue("informational", text, severity="information")]),
            status_code=status,
            headers=headers,
            media_type=FHIR_JSON,
        )
    return Response(
        render.resource_bytes(stored), status_code=status, headers=headers, media_type=FHIR_JSON
    )


def _prefer_return(request: Request) -> str:
    for part in request.headers.get("prefer", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key.strip() == "return":
            return value.strip().strip('"')
    return "representation"


def _prefer_strict(request: Request) -> bool:
    return "handling=strict" in request.headers.get("prefer", "").replace(" ", "")


@_route("/metadata", "GET")
def metadata(request: Request) -> Response:
    """Serve the CapabilityStatement (no authentication, as clients need it first)."""
    services = services_of(request)
    _negotiate(request)
    return Response(services.capability, media_type=FHIR_JSON)


@_route("/", "POST")
async def bundle(request: Request) -> Response:
    """Process a batch or transaction Bundle."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    body = await _json_body(request)
    check_bundle_entries(body, max_entries=services.settings.max_bundle_entries)
    result = await _in_thread(process_bundle, repo, body, services.settings.fhir_base)
    return Response(result, media_type=FHIR_JSON)


async def _in_thread(func: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    return await run_in_threadpool(func, *args, **kwargs)


def _check_criteria(services: Services, criteria: str) -> None:
    settings = services.settings
    check_search_size(
        parse_qsl(criteria.lstrip("?"), keep_blank_values=True),
        max_params=settings.max_search_params,
        max_values=settings.max_search_values,
    )


def _search_response(
    request: Request,
    repo: FhirRepository,
    services: Services,
    resource_type: str,
    pairs: list[tuple[str, str]],
) -> Response:
    settings = services.settings
    check_search_size(
        pairs, max_params=settings.max_search_params, max_values=settings.max_search_values
    )
    query = repo.parse_search(resource_type, pairs, strict=_prefer_strict(request))
    result = repo.search(query)
    body = render.search_bundle(
        fhir_base=services.settings.fhir_base,
        query=query,
        matches=result.matches,
        included=result.included,
        total=result.total,
        bundle_id=uuid.uuid4().hex,
    )
    return Response(body, media_type=FHIR_JSON)


@_route("/{resource_type}", "GET")
def search(request: Request, resource_type: str) -> Response:
    """Search with GET."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    pairs = list(request.query_params.multi_items())
    return _search_response(request, repo, services, resource_type, pairs)


@_route("/{resource_type}/_search", "POST")
async def search_post(request: Request, resource_type: str) -> Response:
    """Search with POST (form-encoded parameters, optionally also in the URL)."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            "POST _search takes application/x-www-form-urlencoded parameters"
        )
    body = (await request.body()).decode("utf-8", "replace")
    pairs = list(request.query_params.multi_items()) + parse_qsl(body, keep_blank_values=True)
    return await _in_thread(_search_response, request, repo, services, resource_type, pairs)


@_route("/{resource_type}", "POST")
async def create(request: Request, resource_type: str) -> Response:
    """Create, or conditionally create with If-None-Exist."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    body = await _json_body(request)
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist:
        _check_criteria(services, if_none_exist)
    result = await _in_thread(
        repo.create,
        resource=body,
        resource_type=resource_type,
        if_none_exist=if_none_exist,
    )
    return _write_response(request, result, services.settings.fhir_base)


def _history_params(
    request: Request,
) -> tuple[int | None, int | None, int, int, list[tuple[str, str]]]:
    params = request.query_params
    since = before = None
    extra: list[tuple[str, str]] = []
    try:
        if "_since" in params:
            since = parse_date_range(params["_since"])[0]
            extra.append(("_since", params["_since"]))
        if "_at" in params:
            low, high = parse_date_range(params["_at"])
            since, before = low, high + 1
            extra.append(("_at", params["_at"]))
    except InvalidDate as exc:
        raise BadRequest(str(exc)) from exc
    count_text = params.get("_count", "20")
    offset_text = params.get("_offset", "0")
    if not count_text.isdigit() or not offset_text.isdigit():
        raise BadRequest("_count and _offset must be non-negative integers")
    return since, before, min(int(count_text), 500), int(offset_text), extra


@_route("/Patient/{id}/$consent-status", "GET")
def consent_status(request: Request, *, id: str) -> Response:
    """May an organisation (or the caller) see this child's log, and by which Consent."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    organization = request.query_params.get("organization")
    if organization is not None and not is_valid_orgnr(organization):
        raise BadRequest("organization must be a 9-digit organisation number (org.nr)")
    decision = repo.consent_status(patient_id=id, organization=organization)
    parameters: list[dict[str, Any]] = [
        {"name": "permitted", "valueBoolean": decision.permitted},
        {"name": "basis", "valueCode": decision.basis or "unknown"},
        {"name": "reason", "valueString": decision.reason or "-"},
        {"name": "decisionId", "valueString": decision.decision_id},
    ]
    if decision.consent_id:
        parameters.append(
            {"name": "consent", "valueReference": {"reference": f"Consent/{decision.consent_id}"}}
        )
    if organization:
        parameters.append({"name": "organization", "valueString": organization})
    body = orjson.dumps({"resourceType": "Parameters", "parameter": parameters})
    return Response(body, media_type=FHIR_JSON)


@_route("/Patient/{id}/$everything", "GET")
def patient_everything(request: Request, *, id: str) -> Response:
    """Everything the caller may see about the child, paged (the family's right of access)."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    params = request.query_params
    count_text = params.get("_count", str(services.settings.default_page_size))
    offset_text = params.get("_offset", "0")
    if not count_text.isdigit() or not offset_text.isdigit() or int(count_text) < 1:
        raise BadRequest("_count must be a positive integer and _offset a non-negative one")
    types = [t.strip() for t in params.get("_type", "").split(",") if t.strip()]
    page = everything(
        repo,
        patient_id=id,
        count=min(int(count_text), services.settings.max_page_size),
        offset=int(offset_text),
        types=types or None,
    )
    body = everything_bundle(fhir_base=services.settings.fhir_base, patient_id=id, page=page)
    return Response(body, media_type=FHIR_JSON)


@_route("/CarePlan/{id}/$close", "POST")
async def careplan_close(request: Request, *, id: str) -> Response:
    """Close a log (BTI outcome a) in one transaction; optional Parameters `date`."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    closed: datetime | None = None
    if await request.body():
        body = await _json_body(request)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest("$close takes an optional Parameters resource")
        for parameter in body.get("parameter") or ():
            value = parameter.get("valueDateTime") if isinstance(parameter, dict) else None
            if parameter.get("name") == "date" and isinstance(value, str):
                try:
                    closed = datetime.fromisoformat(value)
                except ValueError as exc:
                    raise BadRequest(f"date must be a FHIR dateTime with a zone: {exc}") from exc
                if closed.tzinfo is None:
                    raise BadRequest("date must carry a time zone")
    stored = await _in_thread(close_log, repo, careplan_id=id, closed=closed)
    headers = _resource_headers(stored, services.settings.fhir_base)
    return Response(render.resource_bytes(stored), headers=headers, media_type=FHIR_JSON)


def _history_response(request: Request, resource_type: str, id: str | None) -> Response:
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    since, before, count, offset, extra = _history_params(request)
    page = repo.history(
        resource_type=resource_type, id=id, since=since, before=before, count=count, offset=offset
    )
    body = render.history_bundle(
        fhir_base=services.settings.fhir_base,
        path=f"{resource_type}/{id}/_history" if id else f"{resource_type}/_history",
        entries=page.entries,
        total=page.total,
        count=count,
        offset=offset,
        extra_params=extra,
        bundle_id=uuid.uuid4().hex,
    )
    return Response(body, media_type=FHIR_JSON)


@_route("/{resource_type}/_history", "GET")
def type_history(request: Request, resource_type: str) -> Response:
    """History of all resources of a type."""
    return _history_response(request, resource_type, None)


@_route("/{resource_type}/{id}", "GET")
def read(request: Request, resource_type: str, id: str) -> Response:
    """Read the current version."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    stored = repo.read(resource_type=resource_type, id=id)
    headers = _resource_headers(stored, services.settings.fhir_base)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match and if_none_match.strip() == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    summary = request.query_params.get("_summary")
    elements = request.query_params.get("_elements")
    if summary is not None and summary not in ("true", "false", "text", "data"):
        raise BadRequest(f"_summary must be true, false, text or data on a read, not '{summary}'")
    body = render.subset(
        stored,
        summary=summary,
        elements=tuple(e.strip() for e in elements.split(",") if e.strip()) if elements else None,
    )
    return Response(body, headers=headers, media_type=FHIR_JSON)


@_route("/{resource_type}", "PUT")
async def update_conditional(request: Request, resource_type: str) -> Response:
    """Conditional update: PUT Type?criteria updates the one match, or creates."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    criteria = request.url.query
    if not criteria:
        raise BadRequest(f"PUT {resource_type} needs search criteria (conditional update)")
    _check_criteria(services, criteria)
    body = await _json_body(request)
    result = await _in_thread(
        repo.update_conditional, resource_type=resource_type, criteria=criteria, resource=body
    )
    return _write_response(request, result, services.settings.fhir_base)


@_route("/{resource_type}/{id}", "PUT")
async def update(request: Request, resource_type: str, id: str) -> Response:
    """Update (or create with the client's id)."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    body = await _json_body(request)
    result = await _in_thread(
        repo.update,
        resource_type=resource_type,
        id=id,
        resource=body,
        if_match=request.headers.get("if-match"),
    )
    return _write_response(request, result, services.settings.fhir_base)


@_route("/{resource_type}/{id}", "PATCH")
async def patch(request: Request, resource_type: str, id: str) -> Response:
    """Patch with a JSON Patch document."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    body = await _json_body(request, patch=True)
    result = await _in_thread(
        repo.patch,
        resource_type=resource_type,
        id=id,
        operations=body,
        if_match=request.headers.get("if-match"),
    )
    return _write_response(request, result, services.settings.fhir_base)


@_route("/{resource_type}/{id}", "DELETE")
def delete(request: Request, resource_type: str, id: str) -> Response:
    """Delete; later reads answer 410 Gone."""
    services = services_of(request)
    repo = repository_for(request, services)
    if not is_valid_id(id):
        # as read and update answer (found by schemathesis: a malformed id was deleted, 204)
        raise BadRequest(f"'{id}' is not a valid FHIR id (1-64 characters of A-Z a-z 0-9 - .)")
    tombstone = repo.delete(resource_type=resource_type, id=id)
    headers = {"ETag": render.etag(tombstone)} if tombstone is not None else {}
    return Response(status_code=204, headers=headers)


@_route("/{resource_type}/{id}/_history", "GET")
def instance_history(request: Request, resource_type: str, id: str) -> Response:
    """History of one resource."""
    return _history_response(request, resource_type, id)


@_route("/{resource_type}/{id}/_history/{version_id}", "GET")
def vread(request: Request, *, resource_type: str, id: str, version_id: str) -> Response:
    """Read one version."""
    services = services_of(request)
    repo = repository_for(request, services)
    _negotiate(request)
    stored = repo.vread(resource_type=resource_type, id=id, version_id=version_id)
    headers = _resource_headers(stored, services.settings.fhir_base)
    return Response(render.resource_bytes(stored), headers=headers, media_type=FHIR_JSON)
