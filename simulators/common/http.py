"""Small HTTP helpers shared by the simulators' FastAPI apps."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from simulators.common.errors import Invalid, Problem

__all__ = ["json_body"]


async def json_body(request: Request) -> Any:
    """Parse the request body as JSON (a FastAPI dependency); raise Invalid when it is not."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = Problem("", f"Innholdet er ikke gyldig JSON: {exc}")
        raise Invalid("Ugyldig JSON", [problem]) from exc
