"""Request dependencies as Annotated aliases: the services container and the caller's context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.access import RequestContext
from service.auth import AuthError, TokenVerifier
from service.config import Settings
from service.errors import Unauthorized
from service.repository import FhirRepository, RepositoryConfig
from service.storage.database import Database

__all__ = ["Repo", "Services", "ServicesDep"]


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request may use, built once by the app factory's lifespan."""

    settings: Settings
    database: Database
    repository: RepositoryConfig
    verifier: TokenVerifier
    capability: bytes


async def get_services(request: Request) -> Services:
    """Return the app's services."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def authenticate(request: Request, services: ServicesDep) -> RequestContext:
    """Verify the bearer token and return the request's context."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("A bearer token is required (Authorization: Bearer <JWT>)")
    try:
        principal = services.verifier.verify(token.strip())
    except AuthError as exc:
        raise Unauthorized(f"The bearer token was refused: {exc}") from exc
    return RequestContext(
        principal=principal,
        request_id=request.scope.get("state", {}).get("request_id", ""),
        correlation_id=request.headers.get("x-correlation-id"),
    )


async def get_repository(
    services: ServicesDep, ctx: Annotated[RequestContext, Depends(authenticate)]
) -> FhirRepository:
    """Return the caller's repository."""
    return FhirRepository(services.repository, ctx)


Repo = Annotated[FhirRepository, Depends(get_repository)]
