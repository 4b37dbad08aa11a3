"""`stafett lifecycle archive | purge`: the municipality's archive export and deletion."""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from datetime import UTC, date, datetime
from datetime import time as day_time
from pathlib import Path
from typing import Any

import orjson

from service.auth import Principal, PrincipalKind, ScopeSet
from service.config import Settings

__all__ = ["add_lifecycle_parser", "run_lifecycle"]


def add_lifecycle_parser(subparsers: Any) -> None:
    """Add the `lifecycle` command."""
    lifecycle = subparsers.add_parser(
        "lifecycle", help="archive a child's log; delete what is past retention"
    )
    sub = lifecycle.add_subparsers(dest="lifecycle_command", required=True)
    archive = sub.add_parser(
        "archive", help="export a child's log (FHIR Bundle, PDF, SHA-256 manifest)"
    )
    archive.add_argument(
        "--patient", required=True, metavar="ID|FNR", help="Patient id or fødselsnummer"
    )
    archive.add_argument("--out", required=True, type=Path, metavar="DIR")
    purge = sub.add_parser("purge", help="delete everything about children past retention")
    purge.add_argument(
        "--dry-run", action="store_true", help="report what would go; change nothing"
    )
    purge.add_argument(
        "--as-of",
        type=date.fromisoformat,
        metavar="YYYY-MM-DD",
        help="with --dry-run: what would go on this date",
    )
    purge.add_argument("--format", choices=("text", "json"), default="text")


def _operator(action: str) -> Principal:
    user = getpass.getuser()
    return Principal(
        kind=PrincipalKind.SYSTEM,
        issuer="urn:stafett:cli",
        subject=f"cli:{user}",
        scopes=ScopeSet.parse(""),
        expires_at=int(time.time()) + 600,
        display=f"{action} via CLI ({user})",
        client_id="stafett-cli",
    )


def run_lifecycle(args: argparse.Namespace, settings: Settings) -> int:
    """Run one lifecycle command; return the exit code."""
    from service.api.app import build_services  # noqa: PLC0415  (keeps `stafett token` fast)
    from service.storage.migrations import upgrade_database  # noqa: PLC0415

    if args.lifecycle_command == "purge" and args.as_of is not None and not args.dry_run:
        print("stafett lifecycle: error: --as-of needs --dry-run", file=sys.stderr)
        return 2
    services = build_services(settings)
    try:
        if services.database.is_sqlite or settings.auto_migrate:
            upgrade_database(services.database.engine)
        if args.lifecycle_command == "archive":
            return _archive(services.repository, args)
        return _purge(services.repository, settings, args)
    finally:
        if services.repository.audit is not None:
            services.repository.audit.close()
        services.database.dispose()


def _archive(config: Any, args: argparse.Namespace) -> int:
    from service.lifecycle.archive import archive_child, find_patient  # noqa: PLC0415

    with config.database.read() as conn:
        patient_id = find_patient(conn, args.patient)
    if patient_id is None:
        print(f"stafett lifecycle: error: no child {args.patient!r} is known", file=sys.stderr)
        return 1
    result = archive_child(
        config=config,
        patient_id=patient_id,
        out_dir=args.out,
        principal=_operator("Arkivuttrekk"),
    )
    print(f"archived Patient/{patient_id} to {result.directory}")
    print(f"  {result.resources} resources, {result.versions} versions")
    print(f"  manifest sha256 {result.manifest_sha256}")
    if not result.log_closed:
        print(
            "  note: the child has an open log; archive again after it closes, or the purge "
            "will wait for an export made after the close",
            file=sys.stderr,
        )
    return 0


def _purge(config: Any, settings: Settings, args: argparse.Namespace) -> int:
    from service.lifecycle.purge import Purger  # noqa: PLC0415

    as_of = args.as_of

    def clock() -> datetime:
        if as_of is None:
            return datetime.now(UTC)
        return datetime.combine(as_of, day_time(12, 0), tzinfo=UTC)

    purger = Purger(
        database=config.database,
        store=config.store,
        base_url=config.base_url,
        retention_years=settings.retention_years,
        require_archive=settings.retention_require_archive,
        clock=clock,
        actor=f"stafett lifecycle purge (cli:{getpass.getuser()})",
    )
    report = purger.run(dry_run=args.dry_run)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{report.checked} children with every log closed")
    for entry in report.purged:
        resources = sum(entry["resources"].values())
        print(
            f"  {verb} Patient/{entry['patient']} ({entry['reason']}): {resources} resources, "
            f"{entry['versions']} versions, {entry['auditEvents']} audit events, "
            f"{entry['outboxRows']} outbox rows, {entry['keptShared']} kept (shared)"
            + (
                f"; deletion record AuditEvent/{entry['deletionRecord']}"
                if not args.dry_run
                else ""
            )
        )
    for patient_id in report.waiting_for_archive:
        print(f"  waiting for an archive export: Patient/{patient_id}")
    return 0
