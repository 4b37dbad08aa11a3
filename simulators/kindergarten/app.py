"""HTTP surface of the kindergarten system: `/api/v1` (API key) and `/_sim` (staff, tests)."""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from simulators.common.clock import Clock
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
from simulators.kindergarten.records import Kind
from simulators.kindergarten.seed import seed_demo
from simulators.kindergarten.system import KindergartenSystem, Record, initial_data

__all__ = ["KindergartenConfig", "create_app"]

JsonBody = Annotated[Any, Depends(json_body)]
IfMatch = Annotated[str | None, Header(alias="If-Match")]


@dataclass(frozen=True)
class KindergartenConfig:
    """Settings of one kindergarten system instance."""

    data_dir: Path | None
    api_key: str = "barnehage-dev-key"
    seed: bool = False
    feed_default: int = 100
    feed_max: int = 500
    fault_seed: int | None = None
    now: Callable[[], datetime] | None = None


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"melding": message, **extra}, status_code=status)


def _record(record: Record, status: int = 200, location: str | None = None) -> JSONResponse:
    headers = {"ETag": record.etag}
    if location:
        headers["Location"] = location
    return JSONResponse(record.data, status_code=status, headers=headers)


def _install_errors(app: FastAPI) -> None:
    statuses: dict[type[SimError], int] = {
        NotFound: 404,
        Conflict: 409,
        PreconditionFailed: 412,
    }

    @app.exception_handler(SimError)
    async def sim_error(_: Request, exc: SimError) -> JSONResponse:
        if isinstance(exc, Invalid):
            problems = [{"felt": p.field, "melding": p.message} for p in exc.problems]
            return _error(422, exc.message, feil=problems)
        return _error(statuses.get(type(exc), 400), exc.message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"felt": ".".join(str(p) for p in e["loc"][1:]), "melding": e["msg"]}
            for e in exc.errors()
        ]
        return _error(422, "Ugyldig forespørsel (JSON eller parametre)", feil=problems)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> JSONResponse:
        messages = {
            401: "Mangler eller ugyldig API-nøkkel",
            404: "Fant ikke ressursen",
            405: "Metoden er ikke tillatt her",
        }
        message = messages.get(exc.status_code, str(exc.detail))
        return _error(exc.status_code, message)


def create_app(config: KindergartenConfig) -> FastAPI:
    """Build the kindergarten system's ASGI app."""
    path = config.data_dir / "barnehage.json" if config.data_dir else None
    store = JsonStore(path, initial=initial_data)
    clock = Clock(config.now) if config.now else Clock()
    system = KindergartenSystem(store=store, clock=clock)
    if config.seed:
        seed_demo(system, store)
    faults = Faults(random.Random(config.fault_seed))  # noqa: S311 - fault dice

    def require_key(x_api_key: Annotated[str | None, Header()] = None) -> None:
        if x_api_key is None or not secrets.compare_digest(
            x_api_key.encode(), config.api_key.encode()
        ):
            raise HTTPException(401)

    api = APIRouter(prefix="/api/v1", dependencies=[Depends(require_key)])

    @api.get("/endringer")
    def changes(etter: str = "0", antall: str | None = None) -> dict[str, Any]:
        if not etter.isdigit():
            raise Invalid(
                "Ugyldig markør", [Problem("etter", "Må være et sekvensnummer (heltall)")]
            )
        limit = config.feed_default if antall is None else _positive(antall, "antall")
        return system.changes(after=int(etter), limit=min(limit, config.feed_max))

    def add_record_routes(kind: Kind, plural: str, filter_name: str) -> None:
        @api.get(f"/{plural}", name=f"list_{kind}")
        def list_records(request: Request) -> dict[str, Any]:
            fnr = request.query_params.get(filter_name)
            if not fnr:
                raise Invalid("Mangler filter", [Problem(filter_name, "Oppgi fødselsnummer")])
            return {plural: system.find(kind=kind, fnr=fnr)}

        @api.get(f"/{plural}/{{record_id}}", name=f"get_{kind}")
        def get_record(record_id: str) -> Response:
            return _record(system.get(kind=kind, record_id=record_id))

        @api.put(f"/{plural}/{{record_id}}", name=f"put_{kind}")
        def put_record(record_id: str, body: JsonBody, if_match: IfMatch = None) -> Response:
            record = system.update(
                kind=kind, record_id=record_id, body=body, source="api", if_match=if_match
            )
            return _record(record)

    add_record_routes("barn", "barn", "fodselsnummer")
    add_record_routes("tiltak", "tiltak", "barn")
    add_record_routes("samtykke", "samtykker", "barn")

    @api.post("/tiltak")
    def post_tiltak(body: JsonBody) -> Response:
        record = system.create(kind="tiltak", body=body, source="api")
        return _record(record, 201, f"/api/v1/tiltak/{record.data['id']}")

    @api.delete("/barn/{barn_id}/deling", status_code=204)
    def stop_sharing(barn_id: str) -> Response:
        system.set_hidden(barn_id=barn_id, hidden=True, source="api")
        return Response(status_code=204)

    sim = APIRouter(prefix="/_sim", tags=["_sim"])

    @sim.get("/store")
    def whole_store() -> dict[str, Any]:
        return store.snapshot()

    def add_user_routes(kind: Kind, plural: str) -> None:
        @sim.post(f"/{plural}", name=f"user_creates_{kind}")
        def user_creates(body: JsonBody) -> Response:
            record = system.create(kind=kind, body=body, source="bruker")
            return _record(record, 201, f"/api/v1/{plural}/{record.data['id']}")

        @sim.put(f"/{plural}/{{record_id}}", name=f"user_updates_{kind}")
        def user_updates(record_id: str, body: JsonBody) -> Response:
            record = system.update(kind=kind, record_id=record_id, body=body, source="bruker")
            return _record(record)

    add_user_routes("barn", "barn")
    add_user_routes("tiltak", "tiltak")
    add_user_routes("samtykke", "samtykker")

    @sim.post("/tiltak/{tiltak_id}/evalueringer")
    def user_evaluates(tiltak_id: str, body: JsonBody) -> Response:
        return _record(system.add_evaluation(tiltak_id=tiltak_id, body=body, source="bruker"))

    @sim.post("/barn/{barn_id}/deling")
    def user_shares_again(barn_id: str) -> Response:
        return _record(system.set_hidden(barn_id=barn_id, hidden=False, source="bruker"))

    app = FastAPI(title="Barnehagesystem (simulator)", version="1")
    app.include_router(api)
    app.include_router(sim)
    app.include_router(fault_router(faults))
    app.add_middleware(
        FaultMiddleware,
        faults=faults,
        error_response=lambda: _error(500, "Intern feil i barnehagesystemet"),
    )
    _install_errors(app)
    app.state.system = system
    app.state.store = store
    app.state.faults = faults
    return app


def _positive(value: str, field: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise Invalid("Ugyldig parameter", [Problem(field, "Må være et positivt heltall")])
    return int(value)
