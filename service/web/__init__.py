"""Server-rendered pages for data protection officers (/dpo/) and families (/familie/).

Plain HTML forms, no JavaScript, Norwegian bokmål by default and English on request. Every
look goes through the FHIR repository as the logged-in person, so the consent policy decides
it and the audit trail records it. See docs/DPO-AND-FAMILY.md.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from service.web import auth_routes, dpo_routes, family_routes
from service.web.pages import PageError, guarded

__all__ = ["install", "web_routes"]


@guarded
async def _not_found(request: Request) -> Response:
    """Answer unknown page addresses with an HTML 404 page."""
    raise PageError(404, "error.404")


def web_routes() -> list[BaseRoute]:
    """Return every route of the pages, the catch-all 404s last."""
    return [
        *auth_routes.routes,
        *dpo_routes.routes,
        *family_routes.routes,
        Route("/dpo/{rest:path}", _not_found, methods=["GET", "POST"]),
        Route("/familie/{rest:path}", _not_found, methods=["GET", "POST"]),
    ]


def install(app: FastAPI) -> None:
    """Add the pages to the FastAPI app (beside /fhir, which has its own router)."""
    app.router.routes.extend(web_routes())
