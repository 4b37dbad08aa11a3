"""`stafett audit`: the data protection officer's questions, answered from the audit trail.

who-saw: who read or wrote a child's log (by fødselsnummer), when, on which consent.
denied: refused attempts across all children since a date.
export: the family's access report as CSV or JSON.
The CLI reads through the repository as a data protection officer, so each look is audited.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from service.access import RequestContext
from service.audit.report import AccessRow, row_from_event, rows_to_csv, rows_to_json, rows_to_table
from service.auth import Principal, PrincipalKind, ScopeSet
from service.auth.principal import DPO_ROLE
from service.config import Settings
from service.errors import FhirError
from service.identifiers import is_valid_fnr
from service.repository import FhirRepository
from service.storage.schema import search_token

__all__ = ["add_audit_parser", "run_audit"]

_FNR_SYSTEMS = ("urn:oid:2.16.578.1.12.4.1.4.1", "urn:oid:2.16.578.1.12.4.1.4.2")
_PAGE = 200


def add_audit_parser(subparsers: Any) -> None:
    """Add `stafett audit ...` to the command line."""
    audit = subparsers.add_parser("audit", help="the data protection officer's audit questions")
    sub = audit.add_subparsers(dest="audit_command", required=True)
    who = sub.add_parser("who-saw", help="who read or wrote a child's log")
    who.add_argument("--patient", required=True, metavar="FNR", help="the child's fødselsnummer")
    who.add_argument("--since", metavar="DATE", help="only from this date (YYYY-MM-DD)")
    who.add_argument("--format", choices=("table", "csv", "json"), default="table")
    denied = sub.add_parser("denied", help="refused attempts across all children")
    denied.add_argument("--since", metavar="DATE", required=True)
    denied.add_argument("--format", choices=("table", "csv", "json"), default="table")
    export = sub.add_parser("export", help="the family's access report")
    export.add_argument("--patient", required=True, metavar="FNR")
    export.add_argument("--format", choices=("csv", "json"), required=True)
    export.add_argument("--output", type=Path, help="file to write (default: standard output)")


def _dpo_principal() -> Principal:
    return Principal(
        kind=PrincipalKind.PRACTITIONER,
        issuer="urn:stafett:cli",
        subject=f"cli:{getpass.getuser()}",
        scopes=ScopeSet.parse("user/AuditEvent.rs user/Consent.rs"),
        expires_at=int(time.time()) + 600,
        display=f"Personvernombud via CLI ({getpass.getuser()})",
        client_id="stafett-cli",
        roles=frozenset({DPO_ROLE}),
    )


def _patient_ids(repo: FhirRepository, fnr: str) -> list[str]:
    # The DPO never reads the log's content, the Patient included: find the child's id in
    # the search index only.
    with repo.config.database.read() as conn:
        rows = conn.execute(
            select(search_token.c.resource_id).where(
                search_token.c.resource_type == "Patient",
                search_token.c.param == "identifier",
                search_token.c.system.in_(_FNR_SYSTEMS),
                search_token.c.code == fnr,
            )
        )
        return sorted({row[0] for row in rows})


def _events(repo: FhirRepository, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    offset = 0
    while True:
        query = repo.parse_search(
            "AuditEvent",
            [*params, ("_sort", "date"), ("_count", str(_PAGE)), ("_offset", str(offset))],
            strict=True,
        )
        result = repo.search(query)
        events.extend(stored.data for stored in result.matches)
        if len(result.matches) < _PAGE:
            return events
        offset += _PAGE


def run_audit(args: argparse.Namespace, settings: Settings) -> int:
    """Answer one DPO question; return the exit code."""
    from service.api.app import build_services  # noqa: PLC0415  (keeps `stafett token` fast)

    services = build_services(settings)
    try:
        repo = FhirRepository(
            services.repository, RequestContext(principal=_dpo_principal(), request_id="cli")
        )
        rows = _rows(repo, args)
        if rows is None:
            return 2
    except FhirError as exc:
        print(f"stafett audit: error: {exc.diagnostics}", file=sys.stderr)
        return 1
    finally:
        if services.repository.audit is not None:
            services.repository.audit.close()
        services.database.dispose()
    fmt = args.format
    text = (
        rows_to_csv(rows)
        if fmt == "csv"
        else rows_to_json(rows)
        if fmt == "json"
        else rows_to_table(rows)
    )
    output: Path | None = getattr(args, "output", None)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        print(f"wrote {len(rows)} rows to {output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def _rows(repo: FhirRepository, args: argparse.Namespace) -> list[AccessRow] | None:
    params: list[tuple[str, str]] = []
    if getattr(args, "since", None):
        params.append(("date", f"ge{args.since}"))
    if args.audit_command == "denied":
        params.append(("outcome", "8"))
    else:
        if not is_valid_fnr(args.patient):
            print(
                "stafett audit: error: --patient must be a fødselsnummer or D-nummer "
                "(11 digits with valid check digits)",
                file=sys.stderr,
            )
            return None
        patients = _patient_ids(repo, args.patient)
        if not patients:
            print("stafett audit: no child with that fødselsnummer is known", file=sys.stderr)
            return []
        params.append(("patient", ",".join(patients)))
    return [row_from_event(event) for event in _events(repo, params)]
