"""The app factory: builds engines, verifier and policy in the lifespan; nothing at import."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from service import __version__, tracing
from service.access import AccessPolicy, ScopeAccessPolicy
from service.api.capability import capability_statement
from service.api.deps import Services
from service.api.fhir_routes import routes as fhir_routes
from service.api.headers import SecurityHeadersMiddleware, with_cors
from service.api.middleware import RequestContextMiddleware
from service.api.openapi import openapi_document
from service.api.outcomes import error_response
from service.api.ratelimit import RateLimiter, RateLimitMiddleware
from service.audit import AuditTrail
from service.auth import DevIssuer, TokenVerifier
from service.config import Settings
from service.crypto import build_sealer, verify_keys
from service.enforcement import ConsentAccessPolicy
from service.errors import (
    BadRequest,
    FhirError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
)
from service.metrics import CONTENT_TYPE_LATEST as METRICS_CONTENT_TYPE
from service.metrics import render as render_metrics
from service.outbox import Outbox, backlog
from service.repository import RepositoryConfig
from service.search.extract import ResourceIndexer
from service.storage.database import Database
from service.storage.migrations import upgrade_database
from service.storage.store import SqlStore
from service.web import install as install_web_pages

__all__ = ["create_app"]

_log = logging.getLogger("stafett.api")


def default_policy(settings: Settings) -> AccessPolicy:
    """Return the access policy the settings ask for (consent unless told otherwise)."""
    if settings.access_policy == "scopes-only":
        return ScopeAccessPolicy()
    return ConsentAccessPolicy(policy=settings.consent_policy(), base_url=settings.fhir_base)


def build_services(settings: Settings, *, policy: AccessPolicy | None = None) -> Services:
    """Build every long-lived object of the service from settings."""
    database = Database(settings.effective_database_url, pool_size=settings.database_pool_size)
    indexer = ResourceIndexer(base_url=settings.fhir_base)
    sealer = build_sealer(settings)  # encryption at rest (docs/security/encryption-at-rest.md)
    store = SqlStore(indexer=indexer, sealer=sealer)
    audit = AuditTrail(
        database=database,
        store=store,
        max_batch=settings.audit_batch_size,
        max_wait_ms=settings.audit_batch_wait_ms,
        server_url=settings.fhir_base,
    )
    repository = RepositoryConfig(
        database=database,
        store=store,
        audit=audit,
        policy=policy or default_policy(settings),
        base_url=settings.fhir_base,
        default_page_size=settings.default_page_size,
        max_page_size=settings.max_page_size,
        outbox=Outbox(database, envelope=sealer.envelope) if settings.outbox else None,
    )
    dev_issuer = DevIssuer.load_or_create(settings.data_dir) if settings.dev_auth else None
    verifier = TokenVerifier(
        trusted_issuers=settings.trusted_issuers,
        audience=settings.audience,
        dev_issuer=dev_issuer,
        jwks_cache_seconds=settings.jwks_cache_seconds,
        jwks_min_refresh_seconds=settings.jwks_min_refresh_seconds,
        leeway_seconds=settings.auth_leeway_seconds,
        scope_aliases=settings.scope_aliases,
        role_claim=settings.role_claim,
    )
    return Services(
        settings=settings,
        database=database,
        repository=repository,
        verifier=verifier,
        capability=capability_statement(
            fhir_base=settings.fhir_base, search_params=repository.search_params()
        ),
    )


class FhirDispatch:
    """The ASGI entry point: /fhir goes straight to its router, the rest to FastAPI.

    The FHIR endpoints parse their own input, so FastAPI's middleware layers and router
    would only add CPU to every FHIR request; health checks and the lifespan stay in FastAPI.
    """

    def __init__(self, app: FastAPI, fhir: Router) -> None:
        self.app = app
        self.fhir = fhir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route one ASGI call."""
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/fhir" or path.startswith("/fhir/")):
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app  # endpoints find the services on the FastAPI app's state
        try:
            await self.fhir(scope, receive, send)
        except Exception as exc:
            await _error_for(exc, scope)(scope, receive, send)


def _error_for(exc: Exception, scope: Scope) -> Response:
    path, method = scope.get("path", ""), scope.get("method", "")
    if isinstance(exc, FhirError):
        if exc.status >= 500:
            # the cause (driver message) is for operators' logs, never for the client
            _log.error("request failed: %s; cause: %r", exc.diagnostics, exc.__cause__)
        return error_response(exc)
    if isinstance(exc, StarletteHTTPException):
        if exc.status_code == 405:
            return error_response(MethodNotAllowed(f"{method} is not supported on {path}"))
        if exc.status_code == 404:
            return error_response(NotFound(f"No such endpoint: {path}"))
        return error_response(BadRequest(str(exc.detail)))
    _log.exception("unexpected error", exc_info=exc)
    return error_response(FhirError("An unexpected error occurred; it has been logged"))


def create_app(settings: Settings | None = None, *, policy: AccessPolicy | None = None) -> ASGIApp:
    """Create the Stafett ASGI application."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, policy=policy)
        if services.database.is_sqlite or settings.auto_migrate:
            upgrade_database(services.database.engine)
        # a missing or wrong encryption key stops the start, before anything is served
        verify_keys(services.database, services.repository.store.sealer.envelope)
        app.state.services = services
        if settings.dev_auth:
            _log.warning("development token issuer is trusted (STAFETT_DEV_AUTH=1)")
        if settings.access_policy != "consent":
            _log.warning("consent enforcement is OFF (STAFETT_ACCESS_POLICY=scopes-only)")
        _log.info(
            "stafett started",
            extra={"database": services.database.engine.url.render_as_string(hide_password=True)},
        )
        try:
            yield
        finally:
            if services.repository.audit is not None:
                services.repository.audit.close()
            services.database.dispose()

    app = FastAPI(
        title="Stafett",
        version=__version__,
        description="FHIR R4 system of record for the BTI stafettlogg",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(FhirError)
    async def fhir_error(request: Request, exc: FhirError) -> Response:
        if exc.status >= 500:
            # the cause (driver message) is for operators' logs, never for the client
            _log.error("request failed: %s; cause: %r", exc.diagnostics, exc.__cause__)
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return error_response(
                MethodNotAllowed(f"{request.method} is not supported on {request.url.path}")
            )
        if exc.status_code == 404:
            return error_response(NotFound(f"No such endpoint: {request.url.path}"))
        return error_response(BadRequest(str(exc.detail)))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        return error_response(BadRequest(f"The request is malformed: {exc.errors()[:3]}"))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        _log.exception("unexpected error")
        error = FhirError("An unexpected error occurred; it has been logged")
        return error_response(error)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> Response:
        return JSONResponse({"status": "ok"})

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        services: Services = request.app.state.services

        def backlog_now() -> int:
            with services.database.read() as conn:
                return backlog(conn)

        return Response(render_metrics(backlog_now), media_type=METRICS_CONTENT_TYPE)

    @app.get("/readyz", include_in_schema=False)
    def readyz(request: Request) -> Response:
        services: Services = request.app.state.services
        try:
            services.database.ping()
        except ServiceUnavailable as exc:
            return JSONResponse({"status": "unavailable", "reason": exc.diagnostics}, 503)
        return JSONResponse({"status": "ready"})

    install_web_pages(app)  # /dpo/ and /familie/ pages (service/web)

    def fhir_openapi() -> dict[str, Any]:
        # /openapi.json describes /fhir, whose plain routes FastAPI's generator cannot see
        if app.openapi_schema is None:
            services: Services = app.state.services
            app.openapi_schema = openapi_document(services.repository.search_params())
        return app.openapi_schema

    app.openapi = fhir_openapi  # type: ignore[method-assign]

    # the base URL takes batch/transaction Bundles with or without the trailing slash
    bundle_route = next(route for route in fhir_routes if route.name == "bundle")
    fhir = Router(
        routes=[
            Route("/fhir", bundle_route.endpoint, methods=["POST"]),
            Mount("/fhir", routes=fhir_routes),
        ],
        redirect_slashes=False,
    )
    tracing.configure(settings, service_name="stafett-api")  # only with STAFETT_OTEL_ENDPOINT
    inner: ASGIApp = FhirDispatch(app, fhir)
    if settings.rate_limit:
        limiter = RateLimiter(
            rate=settings.rate_limit_per_second,
            burst=settings.rate_limit_burst,
            anonymous_rate=settings.rate_limit_anonymous_per_second,
            anonymous_burst=settings.rate_limit_anonymous_burst,
        )
        inner = RateLimitMiddleware(inner, limiter=limiter, state=app.state)
    inner = with_cors(inner, allow_origins=settings.cors_allow_origins)  # none: no CORS at all
    return tracing.instrument(
        SecurityHeadersMiddleware(
            RequestContextMiddleware(inner, max_body_bytes=settings.max_request_bytes),
            hsts_seconds=settings.hsts_seconds,
        )
    )
