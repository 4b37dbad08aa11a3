"""What a request needs: the services container and the caller's repository.

These are plain functions, not FastAPI dependencies: FastAPI's dependency solving cost more
CPU per request than reading the resource, and the FHIR routes take no other parameters
that would need it.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from service.access import RequestContext
from service.auth import AuthError, TokenVerifier
from service.config import Settings
from service.errors import Unauthorized
from service.repository import FhirRepository, RepositoryConfig
from service.storage.database import Database

__all__ = ["Services", "authenticate", "repository_for", "services_of"]


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a request may use, built once by the app factory's lifespan."""

    settings: Settings
    database: Database
    repository: RepositoryConfig
    verifier: TokenVerifier
    capability: bytes


def services_of(request: Request) -> Services:
    """Return the app's services."""
    services: Services = request.app.state.services
    return services


def authenticate(request: Request, services: Services) -> RequestContext:
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


def repository_for(request: Request, services: Services) -> FhirRepository:
    """Authenticate the caller and return their repository."""
    return FhirRepository(services.repository, authenticate(request, services))
