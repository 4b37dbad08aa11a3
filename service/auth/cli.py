"""`stafett token`: print a development bearer token from the local dev issuer."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from service.auth.dev_issuer import DevIssuer
from service.auth.scopes import ScopeContext, ScopeSet
from service.identifiers import is_valid_fnr, is_valid_hpr, is_valid_orgnr

if TYPE_CHECKING:
    from service.config import Settings

__all__ = ["add_token_parser", "run_token"]

EXIT_USAGE = 2
EXIT_FAILURE = 1
_PROG = "stafett token"
_DEFAULT_SCOPES = {
    "practitioner": "user/*.cruds",
    "citizen": "patient/*.cruds",
}


_DEV_DPO_PID = "01817010055"


class _UsageError(Exception):
    """Bad command-line input; the message names the option and what is wrong."""


def add_token_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the `token` subcommand to subparsers and return its parser."""
    parser = subparsers.add_parser(
        "token",
        help="print a dev bearer token (the server must run with STAFETT_DEV_AUTH=1)",
        description=(
            "Print a bearer token signed by the local dev issuer, for use as "
            'TOKEN=$(stafett token ...); curl -H "Authorization: Bearer $TOKEN" ...'
        ),
    )
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument(
        "--practitioner",
        metavar="HPR",
        nargs="?",
        const="",
        help="an employee (HelseID-shaped token); HPR may be omitted for staff without one",
    )
    who.add_argument("--citizen", metavar="PID", help="a citizen (ID-porten-shaped token)")
    who.add_argument("--system", metavar="ORGNR", help="a system (Maskinporten-shaped token)")
    who.add_argument(
        "--dpo",
        action="store_true",
        help="a data protection officer (practitioner token with the dpo role); needs --org",
    )
    parser.add_argument("--org", metavar="ORGNR", help="the practitioner's organisation (unit)")
    parser.add_argument("--pid", metavar="PID", help="the practitioner's fødselsnummer")
    parser.add_argument("--name", help="display name of the person")
    parser.add_argument(
        "--scope",
        metavar="SCOPES",
        help="space-separated SMART scopes (default: user/*.cruds or patient/*.cruds)",
    )
    parser.add_argument(
        "--lifetime", metavar="SECONDS", type=int, default=3600, help="default: 3600"
    )
    return parser


def run_token(args: argparse.Namespace, settings: Settings) -> int:
    """Print one dev token on stdout; return 0, or 2 after naming the bad input on stderr."""
    try:
        _check_args(args)
        issuer = DevIssuer.load_or_create(settings.data_dir)
    except _UsageError as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, ValueError) as error:
        print(f"{_PROG}: error: cannot load the dev issuer key: {error}", file=sys.stderr)
        return EXIT_FAILURE
    try:
        token = _issue(issuer, args, audience=settings.audience)
    except ValueError as error:  # the issuer's own checks; _check_args should catch them first
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not settings.dev_auth:
        # stderr, so `TOKEN=$(stafett token ...)` still captures only the token.
        print(
            f"{_PROG}: note: STAFETT_DEV_AUTH is off here; a server trusts this token only "
            "with STAFETT_DEV_AUTH=1",
            file=sys.stderr,
        )
    sys.stdout.write(token + "\n")
    return 0


def _kind(args: argparse.Namespace) -> str:
    if args.dpo:
        return "dpo"
    if args.practitioner is not None:
        return "practitioner"
    return "citizen" if args.citizen is not None else "system"


def _check_args(args: argparse.Namespace) -> None:
    kind = _kind(args)
    if args.lifetime <= 0:
        raise _UsageError(f"--lifetime must be a positive number of seconds, got {args.lifetime}")
    if kind == "dpo":
        if args.org is None:
            raise _UsageError("--dpo needs --org ORGNR (the municipality's organisation number)")
        _check_orgnr(args.org, "--org")
        if args.pid is not None and not is_valid_fnr(args.pid):
            raise _UsageError(_bad_pid("--pid"))
        return
    if kind == "practitioner":
        if args.org is None:
            raise _UsageError("--practitioner needs --org ORGNR (the 9-digit organisation number)")
        _check_orgnr(args.org, "--org")
        if args.practitioner and not is_valid_hpr(args.practitioner):
            raise _UsageError(f"--practitioner HPR must be 1-9 digits, got {args.practitioner!r}")
        if not args.practitioner and args.pid is None:
            raise _UsageError("--practitioner without an HPR number needs --pid PID")
        if args.pid is not None and not is_valid_fnr(args.pid):
            raise _UsageError(_bad_pid("--pid"))
    else:
        for option, value in (("--org", args.org), ("--pid", args.pid)):
            if value is not None:
                raise _UsageError(f"{option} is only for --practitioner")
    if kind == "citizen" and not is_valid_fnr(args.citizen):
        raise _UsageError(_bad_pid("--citizen"))
    if kind == "system":
        _check_orgnr(args.system, "--system")
        if args.scope is None:
            raise _UsageError('--system needs --scope, e.g. --scope "system/*.rs"')
    scopes = args.scope if args.scope is not None else _DEFAULT_SCOPES[kind]
    context = {
        "practitioner": ScopeContext.USER,
        "citizen": ScopeContext.PATIENT,
        "system": ScopeContext.SYSTEM,
    }[kind]
    if not ScopeSet.parse(scopes).in_context(context):
        # Principal.may only honours the caller's own context; catch the mistake here.
        raise _UsageError(
            f"--scope {scopes!r} has no {context}/ SMART scopes, so a {kind} token would grant "
            f"nothing (e.g. {context}/*.rs)"
        )


def _check_orgnr(value: str, option: str) -> None:
    if not is_valid_orgnr(value):
        raise _UsageError(
            f"{option} {value!r} is not a valid organisation number "
            "(9 digits with a mod-11 check digit)"
        )


def _bad_pid(option: str) -> str:
    # The value itself is not echoed: it may be a real person's national identity number.
    return (
        f"{option} is not a valid fødselsnummer or D-nummer "
        "(11 digits with two mod-11 check digits)"
    )


def _issue(issuer: DevIssuer, args: argparse.Namespace, *, audience: str) -> str:
    kind = _kind(args)
    scopes: str = args.scope if args.scope is not None else _DEFAULT_SCOPES.get(kind, "")
    if kind == "dpo":
        return issuer.issue_practitioner(
            hpr=None,
            # a synthetic person (month + 80) unless one is given
            pid=args.pid or _DEV_DPO_PID,
            organization=args.org,
            scopes=args.scope if args.scope is not None else "user/*.rs",
            name=args.name or "Personvernombud (dev)",
            lifetime_seconds=args.lifetime,
            audience=audience,
            roles=("dpo",),
        )
    if kind == "practitioner":
        return issuer.issue_practitioner(
            hpr=args.practitioner or None,
            pid=args.pid,
            organization=args.org,
            scopes=scopes,
            name=args.name,
            lifetime_seconds=args.lifetime,
            audience=audience,
        )
    if kind == "citizen":
        return issuer.issue_citizen(
            pid=args.citizen,
            scopes=scopes,
            name=args.name,
            lifetime_seconds=args.lifetime,
            audience=audience,
        )
    return issuer.issue_system(
        organization=args.system, scopes=scopes, lifetime_seconds=args.lifetime, audience=audience
    )
