"""The admin API, modelled on Kafka Connect's REST API, plus Prometheus-style metrics.

GET /admin/connectors, GET /admin/connectors/{name}/status, PUT .../pause, PUT .../resume,
POST .../restart, GET|DELETE .../offsets, GET /admin/metrics.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from connectors.runtime import ConnectorRuntime

__all__ = ["admin_app"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error_code": status, "message": message}, status_code=status)


def admin_app(runtime: ConnectorRuntime, *, token: str | None = None) -> Starlette:
    """Return the admin API for a runtime; with `token`, every call needs `Bearer <token>`."""

    def authorised(request: Request) -> bool:
        return token is None or request.headers.get("authorization") == f"Bearer {token}"

    def named(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not authorised(request):
                return _error(401, "a bearer token is required")
            name = request.path_params.get("name")
            if name is not None and name not in runtime.names():
                return _error(404, f"Connector {name} not found")
            try:
                result: Response = handler(request, name)
            except ValueError as exc:
                return _error(409, str(exc))
            return result

        return endpoint

    def list_connectors(_request: Request, _name: str | None) -> Response:
        return JSONResponse(runtime.names())

    def status(_request: Request, name: str) -> Response:
        current = runtime.status(name)
        config = runtime.config(name)
        body = asdict(current)
        body["type"] = config.kind
        body["connector"] = {"state": current.state.value}
        return JSONResponse(body)

    def pause(_request: Request, name: str) -> Response:
        runtime.pause(name)
        return Response(status_code=202)

    def resume(_request: Request, name: str) -> Response:
        runtime.resume(name)
        return Response(status_code=202)

    def restart(_request: Request, name: str) -> Response:
        runtime.restart(name)
        return Response(status_code=202)

    def offsets(request: Request, name: str) -> Response:
        if request.method == "DELETE":
            runtime.reset_offsets(name)
            return JSONResponse({"message": f"The offsets of {name} were reset"})
        return JSONResponse(runtime.offsets(name))

    def metrics(_request: Request, _name: str | None) -> Response:
        lines = [
            "# HELP stafett_connector_records_in_total Records read by the connector.",
            "# TYPE stafett_connector_records_in_total counter",
            "# HELP stafett_connector_records_out_total Records written by the connector.",
            "# TYPE stafett_connector_records_out_total counter",
            "# HELP stafett_connector_errors_total Failed attempts (retried or dead-lettered).",
            "# TYPE stafett_connector_errors_total counter",
            "# HELP stafett_connector_dead_letters_total Records sent to the dead-letter topic.",
            "# TYPE stafett_connector_dead_letters_total counter",
            "# HELP stafett_connector_lag_seconds Age of the newest record handled.",
            "# TYPE stafett_connector_lag_seconds gauge",
            "# HELP stafett_connector_running 1 when the connector is RUNNING.",
            "# TYPE stafett_connector_running gauge",
        ]
        for connector in runtime.names():
            s = runtime.status(connector)
            label = f'{{connector="{connector}",system="{s.system}",kind="{s.kind}"}}'
            lines += [
                f"stafett_connector_records_in_total{label} {s.records_in}",
                f"stafett_connector_records_out_total{label} {s.records_out}",
                f"stafett_connector_errors_total{label} {s.errors}",
                f"stafett_connector_dead_letters_total{label} {s.dead_lettered}",
                f"stafett_connector_running{label} {int(s.state.value == 'RUNNING')}",
            ]
            if s.lag_s is not None:
                lines.append(f"stafett_connector_lag_seconds{label} {s.lag_s:.3f}")
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    base = "/admin/connectors"
    return Starlette(
        routes=[
            Route(base, named(list_connectors), methods=["GET"]),
            Route(base + "/{name}/status", named(status), methods=["GET"]),
            Route(base + "/{name}/pause", named(pause), methods=["PUT"]),
            Route(base + "/{name}/resume", named(resume), methods=["PUT"]),
            Route(base + "/{name}/restart", named(restart), methods=["POST"]),
            Route(base + "/{name}/offsets", named(offsets), methods=["GET", "DELETE"]),
            Route("/admin/metrics", named(metrics), methods=["GET"]),
        ]
    )
