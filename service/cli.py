"""The `stafett` command: serve, demo, worker, bus, token, audit, db, keys, seed."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from service.config import Settings

__all__ = ["main"]

_DEMO_BUNDLE = Path("examples/stafettlogg/demo-transaction.json")


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"STAFETT_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        print(f"stafett: error: invalid settings: {problems}", file=sys.stderr)
        raise SystemExit(2) from exc


def _parser() -> argparse.ArgumentParser:
    from connectors.cli import add_connectors_parser
    from service.audit.cli import add_audit_parser
    from service.auth.cli import add_token_parser
    from service.bus_cli import add_bus_parsers
    from service.crypto.cli import add_keys_parser
    from service.demo import add_demo_parser
    from service.lifecycle.cli import add_lifecycle_parser

    parser = argparse.ArgumentParser(
        prog="stafett", description="Stafett: FHIR R4 system of record for the BTI stafettlogg"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the FHIR API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--demo", action="store_true", help="load the demo child's log first (idempotent)"
    )
    add_demo_parser(sub)
    add_token_parser(sub)
    add_audit_parser(sub)
    add_bus_parsers(sub)
    add_connectors_parser(sub)
    add_lifecycle_parser(sub)
    add_keys_parser(sub)
    db = sub.add_parser("db", help="database schema")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("upgrade", help="migrate the database to the latest schema")
    db_sub.add_parser("current", help="show the schema revision of the database")
    seed = sub.add_parser("seed", help="load a batch/transaction Bundle file")
    seed.add_argument("file", nargs="?", type=Path, default=_DEMO_BUNDLE)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the stafett command line."""
    args = _parser().parse_args(argv)
    settings = _settings()
    if args.command == "token":
        from service.auth.cli import run_token

        return run_token(args, settings)
    if args.command == "audit":
        from service.audit.cli import run_audit

        return run_audit(args, settings)
    if args.command == "db":
        return _db(args, settings)
    if args.command == "lifecycle":
        from service.lifecycle.cli import run_lifecycle

        _configure_logs(settings)
        return run_lifecycle(args, settings)
    if args.command == "keys":
        from service.crypto.cli import run_keys

        return run_keys(args, settings)
    if args.command == "connectors":
        from connectors.cli import run_connectors
        from service.worker import open_configured_bus

        _configure_logs(settings)
        token = settings.connectors_admin_token
        return run_connectors(
            args,
            open_bus=(lambda: open_configured_bus(settings)) if settings.kafka_bootstrap else None,
            admin_token=token.get_secret_value() if token is not None else None,
        )
    if args.command in ("worker", "bus"):
        from service.bus_cli import run_bus, run_worker

        _configure_logs(settings)

        return run_worker(args, settings) if args.command == "worker" else run_bus(args, settings)
    if args.command == "seed":
        return _seed(args.file, settings)
    if args.command == "demo":
        from service.demo import run_demo

        _configure_logs(settings)
        return run_demo(args, settings, seed=lambda: _seed(_DEMO_BUNDLE, settings))
    return _serve(args, settings)


def _configure_logs(settings: Settings) -> None:
    from service.logs import configure_logging

    configure_logging(level=settings.log_level, json_lines=settings.log_json)


def _db(args: argparse.Namespace, settings: Settings) -> int:
    from alembic import command

    from service.storage.database import Database
    from service.storage.migrations import alembic_config, upgrade_database

    database = Database(settings.effective_database_url)
    if args.db_command == "upgrade":
        upgrade_database(database.engine)
        print(f"database at {database.engine.url.render_as_string(hide_password=True)} upgraded")
    else:
        config = alembic_config()
        with database.engine.connect() as conn:
            config.attributes["connection"] = conn
            command.current(config)
    database.dispose()
    return 0


def _seed(path: Path, settings: Settings) -> int:
    from service.api.app import build_services
    from service.crypto import CryptoError, verify_keys
    from service.errors import FhirError
    from service.seed import load_bundle
    from service.storage.migrations import upgrade_database

    if not path.is_file():
        print(f"stafett: error: no such file: {path}", file=sys.stderr)
        return 2
    try:
        services = build_services(settings)
    except CryptoError as exc:
        print(f"stafett: error: {exc}", file=sys.stderr)
        return 2
    try:
        if services.database.is_sqlite or settings.auto_migrate:
            upgrade_database(services.database.engine)
        verify_keys(services.database, services.repository.store.sealer.envelope)
        loaded = load_bundle(services, path)
    except FhirError as exc:
        print(f"stafett: error: {path} was not loaded: {exc.diagnostics}", file=sys.stderr)
        return 1
    except CryptoError as exc:
        print(f"stafett: error: {path} was not loaded: {exc}", file=sys.stderr)
        return 1
    finally:
        services.database.dispose()
    print(f"loaded {path}" if loaded is not None else f"{path} is loaded already; skipped")
    return 0


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from service.logs import configure_logging

    configure_logging(level=settings.log_level, json_lines=settings.log_json)
    if args.demo:
        code = _seed(_DEMO_BUNDLE, settings)
        if code:
            return code
        _print_welcome(args.host, args.port)
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # /metrics then adds up the worker processes' values (prometheus_client multiprocess)
        metrics_dir = settings.data_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "service.api.asgi:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        proxy_headers=True,
        lifespan="on",
    )
    return 0


def _print_welcome(host: str, port: int) -> None:
    base = f"http://{host}:{port}/fhir"
    print(
        f"""
Stafett is starting on {base} (embedded SQLite, dev auth on) with one demo child's log.

  Get a token (Ingrid, kindergarten teacher and stafettholder at Solsikken barnehage):
    TOKEN=$(.venv/bin/stafett token --practitioner --pid 12898522405 --org 912837467)

  Try:
    curl -s {base}/metadata | head -c 300
    curl -s -H "Authorization: Bearer $TOKEN" "{base}/CarePlan?_include=CarePlan:subject"
    curl -s -H "Authorization: Bearer $TOKEN" \\
      "{base}/Task?subject.identifier=urn:oid:2.16.578.1.12.4.1.4.1|15832151200&_sort=period"
    curl -s -H "Authorization: Bearer $TOKEN" "{base}/Communication?category=lysglimt"

  The family decides who sees the log (docs/CONSENT.md):
    the school has no consent:  .venv/bin/stafett token --system 927364514 --scope "system/*.rs"
    the mother (a guardian):    .venv/bin/stafett token --citizen 04868941214
    who looked at the log:      .venv/bin/stafett audit who-saw --patient 15832151200
""",
        flush=True,
    )


if __name__ == "__main__":
    raise SystemExit(main())
