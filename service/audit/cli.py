"""`stafett audit`: the data protection officer's questions, answered from the audit trail.

who-saw: who read or wrote a child's log (by fødselsnummer), when, on which consent.
denied: refused attempts across all children since a date.
export: the family's access report as CSV or JSON.
The CLI reads through the repository as a data protection officer, so each look is audited.
verify, seal, public-key: the tamper-evident chain (service/audit/chain.py); these read ids and
hashes only, never the content of the log.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import time
from pathlib import Path
from typing import Any

import orjson
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
    verify = sub.add_parser(
        "verify", help="check the audit chain: name every changed, deleted or inserted record"
    )
    verify.add_argument(
        "--public-key",
        action="append",
        type=Path,
        metavar="PEM",
        help="accept checkpoints signed by this Ed25519 public key (repeat); default: the "
        "configured signing key's and STAFETT_AUDIT_VERIFY_KEYS",
    )
    verify.add_argument("--json", action="store_true", help="print the report as JSON")
    verify.add_argument(
        "--grace",
        type=float,
        metavar="SECONDS",
        help="unsealed AuditEvents older than this are suspect "
        "(default: STAFETT_AUDIT_SEAL_GRACE_S)",
    )
    verify.add_argument(
        "--expect",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="a checkpoint recorded outside the database (the sealer logs them); repeat",
    )
    verify.add_argument("--strict", action="store_true", help="warnings fail too")
    sub.add_parser("seal", help="chain every unsealed AuditEvent now and sign a checkpoint")
    sub.add_parser("public-key", help="print the public key of the audit signing key (PEM)")


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
    if args.audit_command in ("verify", "seal", "public-key"):
        return _run_chain(args, settings)
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


def _run_chain(args: argparse.Namespace, settings: Settings) -> int:
    """Run `stafett audit verify | seal | public-key`; return the exit code."""
    # imported here: `stafett audit who-saw` need not load the chain and its crypto
    from service.audit.chain import AuditSealer, SealerLeadership  # noqa: PLC0415
    from service.audit.keys import (  # noqa: PLC0415
        AuditKeyError,
        load_signing_key,
        public_pem,
        verification_keys,
    )
    from service.audit.verify import verify_chain  # noqa: PLC0415
    from service.storage.database import Database  # noqa: PLC0415
    from service.storage.migrations import upgrade_database  # noqa: PLC0415

    try:
        if args.audit_command == "public-key":
            sys.stdout.write(public_pem(load_signing_key(settings).public_key()))
            return 0
        expect = _expectations(args.expect) if args.audit_command == "verify" else {}
        keys = (
            verification_keys(settings, args.public_key or ())
            if args.audit_command == "verify"
            else {}
        )
        signing_key = load_signing_key(settings) if args.audit_command == "seal" else None
    except (AuditKeyError, ValueError) as exc:
        print(f"stafett audit: error: {exc}", file=sys.stderr)
        return 2
    database = Database(settings.effective_database_url)
    try:
        if database.is_sqlite:
            upgrade_database(database.engine)
        if signing_key is not None:
            with SealerLeadership(database) as leader:
                if not leader.held:
                    print("stafett audit: a worker's sealer is running; it seals continuously")
                    return 0
                sealer = AuditSealer(
                    database=database,
                    signing_key=signing_key,
                    lookback_s=settings.audit_seal_lookback_s,
                )
                result = sealer.seal_pending()
            print(
                f"sealed {result.sealed} AuditEvents and {result.redactions} redactions; "
                f"chain head seq {result.head_seq}, signed by key {sealer.key_id}"
            )
            return 0
        report = verify_chain(
            database,
            keys=keys,
            grace_s=settings.audit_seal_grace_s if args.grace is None else args.grace,
            expect=expect,
        )
    except FhirError as exc:
        print(f"stafett audit: error: {exc.diagnostics}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    if args.json:
        sys.stdout.write(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(report.lines()) + "\n")
    return 0 if report.ok and not (args.strict and report.warnings) else 1


def _expectations(values: list[str]) -> dict[int, bytes]:
    expect: dict[int, bytes] = {}
    for value in values:
        seq, _, digest = value.partition(":")
        try:
            expect[int(seq)] = bytes.fromhex(digest)
        except ValueError as exc:
            raise ValueError(f"--expect {value!r}: want SEQ:HEXHASH") from exc
    return expect
