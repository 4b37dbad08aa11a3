"""The child-welfare simulator as a FastAPI app: the message service plus the agency's system."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.fiks import crypto
from simulators.child_welfare.agency import Agency, AgencyLoop
from simulators.child_welfare.cases import initial_data
from simulators.child_welfare.errors import (
    AccountConflict,
    CryptoError,
    FiksError,
    Forbidden,
    NotAuthenticated,
    NotLeased,
    PayloadInvalid,
    RecordNotFound,
    RequestInvalid,
    UnknownAccount,
)
from simulators.child_welfare.mailbox import Faults, MessageService, new_account_store
from simulators.child_welfare.routes import router as fiks_router
from simulators.child_welfare.settings import Settings
from simulators.child_welfare.sim_routes import router as sim_router
from simulators.common.store import JsonStore

__all__ = ["build", "create_app"]

log = logging.getLogger(__name__)

# first match wins: subclasses before their bases
_STATUS: tuple[tuple[type[FiksError], int], ...] = (
    (NotAuthenticated, 401),
    (Forbidden, 403),
    (UnknownAccount, 404),
    (NotLeased, 404),
    (RecordNotFound, 404),
    (AccountConflict, 409),
    (PayloadInvalid, 422),
    (RequestInvalid, 400),
    (CryptoError, 400),
)


def build(settings: Settings) -> tuple[MessageService, Agency]:
    """Build the message service and the agency (registered, not yet running)."""
    data_dir = settings.data_dir
    accounts = new_account_store(None if data_dir is None else data_dir / "kontoer.json")
    mailbox = MessageService(
        accounts=accounts,
        lease_s=settings.lease_s,
        max_ttl_s=settings.max_ttl_s,
        faults=Faults(settings.drop_rate, settings.duplicate_rate),
        seed=settings.fault_seed,
    )
    key = (
        crypto.generate_private_key()
        if data_dir is None
        else crypto.load_or_create_private_key(data_dir / "barnevern-privat-nokkel.pem")
    )
    store_path = None if data_dir is None else data_dir / "barnevern.json"
    store = JsonStore(store_path, initial=initial_data)
    agency = Agency(
        mailbox=mailbox,
        store=store,
        account=settings.agency_account,
        private_key=key,
        stafett_account=settings.stafett_account,
        ttl_s=settings.ttl_s,
        resend_interval_s=settings.resend_interval_s,
    )
    agency.register()
    if settings.seed_demo and agency.is_empty():
        _seed(agency)
    return mailbox, agency


def _seed(agency: Agency) -> None:
    """Record a demo log, measure and consent (docs/vendor-formats.md's example child)."""
    fnr = "15832151200"
    agency.record(
        "logg",
        {"fnr": fnr, "niva": "2", "saksbehandler": {"id": "BV-17", "navn": "Siv Saksbehandler"}},
    )
    agency.record(
        "tiltak",
        {
            "fnr": fnr,
            "beskrivelse": "Foreldreveiledning (ICDP) hver tirsdag",
            "status": "iverksatt",
            "oppstart": "2026-09-07",
            "evalueres": "2026-11-02",
        },
    )
    agency.record(
        "samtykke",
        {
            "fnr": fnr,
            "foresatte": ["04868941214"],
            "gyldigTil": "2027-11-01",
            "mottakere": ["974760673", "936451284"],
        },
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Return the simulator app; the lifespan builds its state and runs the agency loop."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        mailbox, agency = build(settings)
        app.state.mailbox = mailbox
        app.state.agency = agency
        loop = AgencyLoop(agency, settings.agency_interval_s)
        if settings.agency_interval_s > 0:
            loop.start()
        try:
            yield
        finally:
            if settings.agency_interval_s > 0:
                loop.stop()

    app = FastAPI(
        title="Child-welfare (barnevern) simulator: Fiks IO-style messaging",
        lifespan=lifespan,
    )
    app.include_router(fiks_router)
    app.include_router(sim_router)

    @app.exception_handler(FiksError)
    async def fiks_error(request: Request, exc: FiksError) -> JSONResponse:
        status = next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)
        if status == 500:
            log.error("unmapped error on %s: %r", request.url.path, exc)
        return JSONResponse({"detail": str(exc), "feil": type(exc).__name__}, status_code=status)

    return app
