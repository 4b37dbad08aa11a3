"""HTTP surface of the health station: a FHIR R4 server at `/fhir` and the `/_sim` journal."""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from simulators.common.clock import Clock
from simulators.common.errors import Conflict, Invalid, NotFound, PreconditionFailed, SimError
from simulators.common.faults import FaultMiddleware, Faults, fault_router
from simulators.common.http import json_body
from simulators.common.store import JsonStore
from simulators.health_station.fhir import (
    JOURNAL_SOURCE,
    RESOURCE_TYPES,
    BadRequest,
    Gone,
    Unauthorized,
    operation_outcome,
)
from simulators.health_station.journal import Journal
from simulators.health_station.repository import FhirRepository, Page, initial_data
from simulators.health_station.search import PAGE_DEFAULT, PAGE_MAX, parse_query
from simulators.health_station.seed import seed_demo

__all__ = ["HealthStationConfig", "create_app"]

FHIR_JSON = "application/fhir+json"
JsonBody = Annotated[Any, Depends(json_body)]
IfMatch = Annotated[str | None, Header(alias="If-Match")]


@dataclass(frozen=True)
class HealthStationConfig:
    """Settings of one health station FHIR server."""

    data_dir: Path | None
    token: str = "helsestasjon-dev-token"  # noqa: S105 - development default
    seed: bool = False
    fault_seed: int | None = None
    now: Callable[[], datetime] | None = None


class FhirResponse(JSONResponse):
    """FHIR JSON."""

    media_type = FHIR_JSON


def _outcome(status: int, code: str, diagnostics: str, **headers: str) -> FhirResponse:
    return FhirResponse(operation_outcome(code, diagnostics), status_code=status, headers=headers)


def _resource(resource: dict[str, Any], status: int = 200, base: str = "") -> FhirResponse:
    meta = resource["meta"]
    modified = datetime.fromisoformat(meta["lastUpdated"])
    headers = {
        "ETag": f'W/"{meta["versionId"]}"',
        "Last-Modified": format_datetime(modified.astimezone(UTC), usegmt=True),
    }
    if status == 201:
        path = f"{resource['resourceType']}/{resource['id']}/_history/{meta['versionId']}"
        headers["Location"] = f"{base}/{path}"
    return FhirResponse(resource, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(SimError)
    async def sim_error(_: Request, exc: SimError) -> FhirResponse:
        if isinstance(exc, Invalid):
            issues = [
                {
                    "severity": "error",
                    "code": "processing",
                    "diagnostics": p.message,
                    "expression": [p.field],
                }
                if p.field
                else {"severity": "error", "code": "processing", "diagnostics": p.message}
                for p in exc.problems
            ]
            body = {"resourceType": "OperationOutcome", "issue": issues}
            return FhirResponse(body, status_code=422)
        known: dict[type[SimError], tuple[int, str]] = {
            NotFound: (404, "not-found"),
            Conflict: (409, "conflict"),
            PreconditionFailed: (412, "conflict"),
            BadRequest: (400, "invalid"),
            Gone: (410, "not-found"),
        }
        if isinstance(exc, Unauthorized):
            return _outcome(
                401, "login", exc.message, **{"WWW-Authenticate": 'Bearer realm="helsestasjon"'}
            )
        status, code = known.get(type(exc), (400, "invalid"))
        return _outcome(status, code, exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> FhirResponse:
        return _outcome(400, "invalid", str(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> FhirResponse:
        codes = {404: "not-found", 405: "not-supported", 415: "not-supported"}
        return _outcome(exc.status_code, codes.get(exc.status_code, "exception"), str(exc.detail))


def _check_type(resource_type: str) -> str:
    if resource_type not in RESOURCE_TYPES:
        raise NotFound(f"Resource type {resource_type} is not supported by this server")
    return resource_type


async def _fhir_body(request: Request) -> Any:
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media not in (FHIR_JSON, "application/json"):
        raise HTTPException(415, f"Content-Type must be {FHIR_JSON}")
    try:
        return json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"The body is not valid JSON: {exc}") from None


FhirBody = Annotated[Any, Depends(_fhir_body)]


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _bundle(page: Page, *, request: Request, offset: int, count: int) -> dict[str, Any]:
    base = _base(request)
    links = [{"relation": "self", "url": str(request.url)}]
    if page.next_offset is not None:
        url = f"{base}?_getpages={page.search_id}&_getpagesoffset={page.next_offset}&_count={count}"
        links.append({"relation": "next", "url": url})
    if offset > 0:
        previous = max(0, offset - count)
        url = f"{base}?_getpages={page.search_id}&_getpagesoffset={previous}&_count={count}"
        links.append({"relation": "previous", "url": url})
    entries = [
        {
            "fullUrl": f"{base}/{r['resourceType']}/{r['id']}",
            "resource": r,
            "search": {"mode": "match"},
        }
        for r in page.resources
    ]
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": page.total,
        "link": links,
    }
    if entries:
        bundle["entry"] = entries
    return bundle


def _capability() -> dict[str, Any]:
    search = [
        {"name": n, "type": t}
        for n, t in (("identifier", "token"), ("_id", "token"), ("_lastUpdated", "date"))
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "software": {"name": "Helsestasjon FHIR (simulator)", "version": "1"},
        "rest": [
            {
                "mode": "server",
                "security": {"description": "Authorization: Bearer <static token>"},
                "resource": [
                    {
                        "type": t,
                        "versioning": "versioned",
                        "readHistory": True,
                        "updateCreate": False,
                        "conditionalCreate": True,
                        "conditionalUpdate": True,
                        "interaction": [
                            {"code": c}
                            for c in ("read", "vread", "update", "create", "search-type")
                        ],
                        "searchParam": search,
                    }
                    for t in RESOURCE_TYPES
                ],
            }
        ],
    }


def create_app(config: HealthStationConfig) -> FastAPI:
    """Build the health station's ASGI app."""
    store = JsonStore(
        config.data_dir / "helsestasjon.json" if config.data_dir else None, initial=initial_data
    )
    clock = Clock(config.now) if config.now else Clock()
    repository = FhirRepository(store=store, clock=clock)
    journal = Journal(repository)
    if config.seed:
        seed_demo(journal)
    faults = Faults(random.Random(config.fault_seed))  # noqa: S311 - fault dice

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), config.token.encode()
        ):
            raise Unauthorized("A valid bearer token is required")

    def search_params(request: Request) -> list[tuple[str, str]]:
        return list(request.query_params.multi_items())

    def strict(request: Request) -> bool:
        return "handling=strict" in request.headers.get("prefer", "").replace(" ", "")

    def conditional(resource_type: str, criteria: list[tuple[str, str]]) -> list[dict[str, Any]]:
        query = parse_query(resource_type, [*criteria, ("_count", "2")], strict=True)
        if not query.matches:
            raise BadRequest("Conditional operations need search criteria")
        return repository.search(resource_type=resource_type, query=query).resources

    fhir = APIRouter(prefix="/fhir", dependencies=[Depends(require_token)])

    @fhir.get("")
    @fhir.get("/", include_in_schema=False)
    def page(request: Request) -> FhirResponse:
        params = request.query_params
        search_id = params.get("_getpages")
        offset, count = params.get("_getpagesoffset", "0"), params.get("_count", str(PAGE_DEFAULT))
        if not search_id or not offset.isdigit() or not count.isdigit():
            raise BadRequest("Use _getpages=<id>&_getpagesoffset=<n>&_count=<n> (from a next link)")
        found = repository.page(
            search_id=search_id, offset=int(offset), count=min(int(count), PAGE_MAX)
        )
        return FhirResponse(_bundle(found, request=request, offset=int(offset), count=int(count)))

    @fhir.get("/{resource_type}")
    def search(resource_type: str, request: Request) -> FhirResponse:
        query = parse_query(
            _check_type(resource_type), search_params(request), strict=strict(request)
        )
        found = repository.search(resource_type=resource_type, query=query)
        return FhirResponse(_bundle(found, request=request, offset=0, count=query.count))

    @fhir.post("/{resource_type}")
    def create(
        resource_type: str,
        request: Request,
        body: FhirBody,
        if_none_exist: Annotated[str | None, Header()] = None,
    ) -> FhirResponse:
        _check_type(resource_type)
        if if_none_exist:
            existing = conditional(resource_type, parse_qsl(if_none_exist))
            if len(existing) > 1:
                raise PreconditionFailed("If-None-Exist matches more than one resource")
            if existing:
                return _resource(existing[0])
        created = repository.create(resource_type=resource_type, resource=body)
        return _resource(created, 201, _base(request))

    @fhir.put("/{resource_type}")
    def conditional_update(resource_type: str, request: Request, body: FhirBody) -> FhirResponse:
        existing = conditional(_check_type(resource_type), search_params(request))
        if len(existing) > 1:
            raise PreconditionFailed("The criteria match more than one resource")
        if not existing:
            if isinstance(body, dict):
                body.pop("id", None)
            return _resource(
                repository.create(resource_type=resource_type, resource=body), 201, _base(request)
            )
        if isinstance(body, dict) and body.get("id", existing[0]["id"]) != existing[0]["id"]:
            raise BadRequest("The resource id does not match the resource found")
        body = {**body, "id": existing[0]["id"]} if isinstance(body, dict) else body
        updated, _ = repository.update(
            resource_type=resource_type, resource_id=existing[0]["id"], resource=body
        )
        return _resource(updated)

    @fhir.get("/{resource_type}/{resource_id}")
    def read(resource_type: str, resource_id: str) -> FhirResponse:
        return _resource(
            repository.read(resource_type=_check_type(resource_type), resource_id=resource_id)
        )

    @fhir.put("/{resource_type}/{resource_id}")
    def update(
        resource_type: str, resource_id: str, body: FhirBody, if_match: IfMatch = None
    ) -> FhirResponse:
        updated, _ = repository.update(
            resource_type=_check_type(resource_type),
            resource_id=resource_id,
            resource=body,
            if_match=if_match,
        )
        return _resource(updated)

    @fhir.get("/{resource_type}/{resource_id}/_history/{version}")
    def vread(resource_type: str, resource_id: str, version: str) -> FhirResponse:
        found = repository.vread(
            resource_type=_check_type(resource_type), resource_id=resource_id, version=version
        )
        return _resource(found)

    sim = APIRouter(prefix="/_sim", tags=["_sim"])

    @sim.get("/store")
    def whole_store() -> dict[str, Any]:
        return store.snapshot()

    @sim.post("/barn", status_code=201)
    def register_child(body: JsonBody) -> FhirResponse:
        return _resource(journal.register_child(body), 201)

    @sim.post("/logg", status_code=201)
    def open_log(body: JsonBody) -> FhirResponse:
        return _resource(journal.open_log(body), 201)

    @sim.post("/tiltak", status_code=201)
    def add_measure(body: JsonBody) -> FhirResponse:
        return _resource(journal.add_measure(body), 201)

    @sim.post("/tiltak/{task_id}/evaluering")
    def evaluate(task_id: str, body: JsonBody) -> FhirResponse:
        return _resource(journal.evaluate(task_id, body))

    @sim.post("/samtykke", status_code=201)
    def record_consent(body: JsonBody) -> FhirResponse:
        return _resource(journal.record_consent(body), 201)

    @sim.post("/fhir/{resource_type}", status_code=201)
    def user_creates(resource_type: str, body: JsonBody) -> FhirResponse:
        created = repository.create(
            resource_type=_check_type(resource_type), resource=body, source=JOURNAL_SOURCE
        )
        return _resource(created, 201)

    @sim.put("/fhir/{resource_type}/{resource_id}")
    def user_updates(resource_type: str, resource_id: str, body: JsonBody) -> FhirResponse:
        updated, _ = repository.update(
            resource_type=_check_type(resource_type),
            resource_id=resource_id,
            resource=body,
            source=JOURNAL_SOURCE,
        )
        return _resource(updated)

    app = FastAPI(title="Helsestasjon FHIR (simulator)", version="1")

    @app.get("/fhir/metadata")
    def metadata() -> FhirResponse:
        return FhirResponse(_capability())

    app.include_router(fhir)
    app.include_router(fault_router(faults))
    app.include_router(sim)
    app.add_middleware(
        FaultMiddleware,
        faults=faults,
        error_response=lambda: _outcome(500, "exception", "Internal error in the health station"),
    )
    _install_errors(app)
    app.state.repository = repository
    app.state.store = store
    app.state.faults = faults
    return app
