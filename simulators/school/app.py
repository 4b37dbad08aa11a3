"""HTTP surface of the school system: `/oauth/token`, `/api` (bearer) and `/_sim`."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from simulators.common.clock import OSLO, Clock
from simulators.common.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    Problem,
    SimError,
)
from simulators.common.faults import FaultMiddleware, Faults, fault_router
from simulators.common.http import json_body
from simulators.common.store import JsonStore
from simulators.school.auth import OAuthError, TokenIssuer
from simulators.school.export import export_measures
from simulators.school.records import ID_FIELD, Kind
from simulators.school.seed import seed_demo
from simulators.school.system import USER, Record, SchoolSystem, initial_data

__all__ = ["SchoolConfig", "create_app"]

JsonBody = Annotated[Any, Depends(json_body)]
IfMatch = Annotated[str | None, Header(alias="If-Match")]


@dataclass(frozen=True)
class SchoolConfig:
    """Settings of one school system instance."""

    data_dir: Path | None
    clients: dict[str, str] = field(default_factory=lambda: {"stafett": "skole-dev-secret"})
    expires_in: int = 300
    export_dir: Path | None = None  # default: <data_dir>/eksport
    export_interval_s: float | None = None  # run the "nightly" export on a timer
    page_max: int = 500
    seed: bool = False
    fault_seed: int | None = None
    now: Callable[[], datetime] | None = None


_TITLES = {
    401: "Ikke autentisert",
    404: "Ikke funnet",
    405: "Metoden er ikke tillatt",
    409: "Konflikt",
    412: "Versjonen stemmer ikke",
    422: "Valideringsfeil",
    500: "Intern feil",
}


def _error(status: int, detail: str, **extra: Any) -> JSONResponse:
    body = {"status": status, "tittel": _TITLES.get(status, "Feil"), "detalj": detail, **extra}
    headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def _record(record: Record, status: int = 200, location: str | None = None) -> JSONResponse:
    headers = {"ETag": record.etag, **({"Location": location} if location else {})}
    return JSONResponse(record.data, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    statuses: dict[type[SimError], int] = {NotFound: 404, Conflict: 409, PreconditionFailed: 412}

    @app.exception_handler(SimError)
    async def sim_error(_: Request, exc: SimError) -> JSONResponse:
        if isinstance(exc, Invalid):
            problems = [{"felt": p.field, "melding": p.message} for p in exc.problems]
            return _error(422, exc.message, feil=problems)
        return _error(statuses.get(type(exc), 400), exc.message)

    @app.exception_handler(OAuthError)
    async def oauth_error(_: Request, exc: OAuthError) -> JSONResponse:
        headers = {"Cache-Control": "no-store"}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="skole"'
        body = {"error": exc.error, "error_description": exc.description}
        return JSONResponse(body, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"felt": ".".join(map(str, e["loc"][1:])), "melding": e["msg"]} for e in exc.errors()
        ]
        return _error(422, "Ugyldig forespørsel", feil=problems)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        details = {401: "Mangler, ugyldig eller utløpt tilgangstoken", 404: "Fant ikke ressursen"}
        return _error(exc.status_code, details.get(exc.status_code, str(exc.detail)))


def _after(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        # a "+" left unencoded in the query arrives as a space
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        problem = Problem("endretEtter", "Må være et tidspunkt i ISO 8601")
        raise Invalid("Ugyldig parameter", [problem]) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=OSLO)


def _filter(request: Request, name: str) -> dict[str, Any]:
    value = request.query_params.get(name)
    if value is None:
        return {}
    if name != "elevId":
        return {name: value}
    if not value.isdigit():
        raise Invalid("Ugyldig parameter", [Problem(name, "Må være et heltall")])
    return {name: int(value)}


def _id(value: str) -> int:
    # ids are integers: anything else cannot name a record
    if not value.isdigit() or len(value) > 10:
        raise NotFound(f"Fant ikke {value}")
    return int(value)


def _client(request: Request, authorization: Annotated[str | None, Header()] = None) -> str:
    """Return the OAuth client behind the bearer token, or fail with 401."""
    tokens: TokenIssuer = request.app.state.tokens
    scheme, _, token = (authorization or "").partition(" ")
    client_id = tokens.client_of(token.strip()) if scheme.lower() == "bearer" else None
    if client_id is None:
        raise HTTPException(401)
    return client_id


ClientDep = Annotated[str, Depends(_client)]


def create_app(config: SchoolConfig) -> FastAPI:
    """Build the school system's ASGI app."""
    store = JsonStore(
        config.data_dir / "skole.json" if config.data_dir else None, initial=initial_data
    )
    clock = Clock(config.now) if config.now else Clock()
    system = SchoolSystem(store=store, clock=clock, page_max=config.page_max)
    if config.seed:
        seed_demo(system)
    tokens = TokenIssuer(
        clients=config.clients, expires_in=config.expires_in, now=lambda: clock.now().timestamp()
    )
    faults = Faults(random.Random(config.fault_seed))  # noqa: S311 - fault dice
    export_dir = config.export_dir or (config.data_dir or Path()) / "eksport"

    def run_export(day: date | None = None) -> dict[str, Any]:
        path, rows = export_measures(system, folder=export_dir, day=day or clock.now().date())
        return {"fil": path.name, "sti": str(path), "rader": rows}

    api = APIRouter(prefix="/api")

    def add_record_routes(kind: Kind, plural: str, filter_name: str) -> None:
        @api.get(f"/{plural}", name=f"list_{kind}")
        def list_records(_: ClientDep, request: Request) -> dict[str, Any]:
            after = _after(request.query_params.get("endretEtter"))
            where = _filter(request, filter_name)
            return {plural: system.changed(kind=kind, after=after, where=where)}

        @api.get(f"/{plural}/{{record_id}}", name=f"get_{kind}")
        def get_record(_: ClientDep, record_id: str) -> Response:
            return _record(system.get(kind=kind, record_id=_id(record_id)))

        @api.put(f"/{plural}/{{record_id}}", name=f"put_{kind}")
        def put_record(
            author: ClientDep, record_id: str, body: JsonBody, if_match: IfMatch = None
        ) -> Response:
            record = system.update(
                kind=kind, record_id=_id(record_id), body=body, author=author, if_match=if_match
            )
            return _record(record)

    add_record_routes("elev", "elever", "personnummer")
    add_record_routes("tiltak", "tiltak", "elevId")
    add_record_routes("samtykke", "samtykker", "elevId")

    @api.post("/tiltak")
    def post_tiltak(author: ClientDep, body: JsonBody) -> Response:
        record = system.create(kind="tiltak", body=body, author=author)
        return _record(record, 201, f"/api/tiltak/{record.data['tiltakId']}")

    sim = APIRouter(prefix="/_sim", tags=["_sim"])

    @sim.get("/store")
    def whole_store() -> dict[str, Any]:
        return store.snapshot()

    @sim.post("/export")
    async def export_now(request: Request) -> dict[str, Any]:
        raw = await request.body()
        body = await json_body(request) if raw.strip() else {}
        day = body.get("dato") if isinstance(body, dict) else None
        try:
            chosen = date.fromisoformat(day) if isinstance(day, str) else None
        except ValueError:
            raise Invalid("Ugyldig dato", [Problem("dato", "ÅÅÅÅ-MM-DD")]) from None
        return await asyncio.to_thread(run_export, chosen)

    @sim.post("/tokens/expire")
    def expire_tokens() -> dict[str, int]:
        return {"utlopt": tokens.expire_all()}

    def add_user_routes(kind: Kind, plural: str) -> None:
        @sim.post(f"/{plural}", name=f"user_creates_{kind}")
        def user_creates(body: JsonBody) -> Response:
            record = system.create(kind=kind, body=body, author=USER)
            return _record(record, 201, f"/api/{plural}/{record.data[ID_FIELD[kind]]}")

        @sim.put(f"/{plural}/{{record_id}}", name=f"user_updates_{kind}")
        def user_updates(record_id: str, body: JsonBody) -> Response:
            return _record(
                system.update(kind=kind, record_id=_id(record_id), body=body, author=USER)
            )

    add_user_routes("elev", "elever")
    add_user_routes("tiltak", "tiltak")
    add_user_routes("samtykke", "samtykker")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        timer = None
        if config.export_interval_s:
            timer = asyncio.create_task(_every(config.export_interval_s, run_export))
        yield
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer

    app = FastAPI(title="Skolesystem (simulator)", version="1", lifespan=lifespan)

    @app.post("/oauth/token")
    async def token(
        request: Request, authorization: Annotated[str | None, Header()] = None
    ) -> JSONResponse:
        if not request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            raise OAuthError(400, "invalid_request", "Use application/x-www-form-urlencoded")
        issued = tokens.issue(form=await request.body(), authorization=authorization)
        return JSONResponse(issued, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    app.include_router(api)
    app.include_router(fault_router(faults))
    app.include_router(sim)
    app.add_middleware(
        FaultMiddleware,
        faults=faults,
        error_response=lambda: _error(500, "Intern feil i skolesystemet"),
    )
    _install_errors(app)
    app.state.system = system
    app.state.store = store
    app.state.faults = faults
    app.state.tokens = tokens
    return app


async def _every(interval: float, job: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(job)
