"""`stafett keys`: status, generate, rotate and retire the key encryption keys."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from sqlalchemy import select

from service.config import Settings
from service.crypto.errors import CryptoError
from service.crypto.fields import FieldSealer
from service.crypto.keys import (
    Keyring,
    LocalKeyProvider,
    generate_key,
    generate_key_id,
    read_keyring,
    write_keyring,
)
from service.crypto.rotation import key_usage, retire_key, rotate
from service.crypto.runtime import build_envelope, register_key, verify_keys
from service.storage.database import Database
from service.storage.schema import encryption_keys

__all__ = ["add_keys_parser", "run_keys"]


def add_keys_parser(sub: Any) -> None:
    """Add `stafett keys ...` to the command line."""
    keys = sub.add_parser("keys", help="encryption at rest: key status and rotation")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_sub.add_parser("status", help="the active key and how many rows each key protects")
    keys_sub.add_parser("generate", help="print a new kid:base64 key for STAFETT_ENCRYPTION_KEYS")
    rotate_cmd = keys_sub.add_parser(
        "rotate",
        help="add and activate a new key (keyring file), then bring every row under it online",
    )
    rotate_cmd.add_argument(
        "--keep-key",
        action="store_true",
        help="do not add a key: bring rows under the already active key (and encrypt rows "
        "still in clear)",
    )
    rotate_cmd.add_argument(
        "--reencrypt",
        action="store_true",
        help="give every value a new data key too (default: re-wrap the data keys only)",
    )
    rotate_cmd.add_argument("--batch-size", type=int, default=500)
    rotate_cmd.add_argument(
        "--pause-ms", type=int, default=0, help="pause between batches, to spare the database"
    )
    retire = keys_sub.add_parser("retire", help="retire a key no row uses any more")
    retire.add_argument("key_id")


def run_keys(args: argparse.Namespace, settings: Settings) -> int:
    """Run one `stafett keys` command."""
    if args.keys_command == "generate":
        key = base64.b64encode(generate_key()).decode()
        print(f"{generate_key_id()}:{key}")
        return 0
    database = Database(settings.effective_database_url)
    try:
        envelope = build_envelope(settings)
        if envelope is None:
            print("stafett: error: encryption at rest is off", file=sys.stderr)
            return 2
        provider = envelope.provider
        if args.keys_command == "status":
            return _status(database, provider.active_key_id(), provider.key_ids())
        if args.keys_command == "retire":
            return _retire(database, args.key_id, provider)
        verify_keys(database, envelope)
        if not args.keep_key:
            if not isinstance(provider, LocalKeyProvider) or provider.keyring_file is None:
                print(
                    "stafett: error: the keys come from STAFETT_ENCRYPTION_KEYS: add a new key "
                    "there (`stafett keys generate`) on every process, then set "
                    "STAFETT_ENCRYPTION_ACTIVE_KEY to it, restart, and run "
                    "`stafett keys rotate --keep-key`",
                    file=sys.stderr,
                )
                return 2
            new_id = _add_key(database, provider, FieldSealer(envelope))
            print(f"added and activated key {new_id} in {provider.keyring_file}")
        report = rotate(
            database,
            FieldSealer(envelope),
            reencrypt=args.reencrypt,
            batch_size=args.batch_size,
            pause_s=args.pause_ms / 1000,
            progress=print,
        )
        how = "re-encrypted" if args.reencrypt else "re-wrapped"
        print(
            f"done: active key {envelope.active_key_id()}; {how} {report.rewrapped}, "
            f"encrypted from clear {report.encrypted}, "
            f"skipped (rewritten meanwhile) {report.skipped}"
        )
        return 0
    except CryptoError as exc:
        print(f"stafett: error: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()


def _add_key(database: Database, provider: LocalKeyProvider, sealer: FieldSealer) -> str:
    """Add a key to the keyring file, register it, then make it the active one."""
    path = provider.keyring_file
    assert path is not None
    assert sealer.envelope is not None
    keyring = read_keyring(path)
    new_id = generate_key_id()
    keys = {**keyring.keys, new_id: generate_key()}
    # known everywhere before it is used anywhere: processes re-read the file on unknown ids
    write_keyring(path, Keyring(keys=keys, active=keyring.active))
    provider.reload()
    with database.write() as conn:
        register_key(conn, sealer.envelope, new_id)
    write_keyring(path, Keyring(keys=keys, active=new_id))
    provider.reload()
    return new_id


def _status(database: Database, active: str, configured: tuple[str, ...]) -> int:
    with database.read() as conn:
        usage = key_usage(conn)
        registered = conn.execute(
            select(
                encryption_keys.c.key_id, encryption_keys.c.created_at, encryption_keys.c.retired_at
            ).order_by(encryption_keys.c.created_at)
        ).all()
    print(f"active key: {active}")
    print(f"configured keys: {', '.join(configured)}")
    for key_id, _created, retired in registered:
        state = "retired" if retired else "configured" if key_id in configured else "NOT CONFIGURED"
        print(f"registered key {key_id}: {state}")
    for table, counts in usage.items():
        listed = ", ".join(f"{key} {n}" for key, n in sorted(counts.items())) or "empty"
        print(f"{table}: {listed}")
    return 0


def _retire(database: Database, key_id: str, provider: Any) -> int:
    uses = retire_key(database, key_id, active=provider.active_key_id())
    if uses:
        listed = ", ".join(f"{table} {n}" for table, n in uses.items())
        print(
            f"stafett: error: key {key_id} is still used ({listed}); run `stafett keys rotate "
            "--keep-key` first",
            file=sys.stderr,
        )
        return 1
    if isinstance(provider, LocalKeyProvider) and provider.keyring_file is not None:
        keyring = read_keyring(provider.keyring_file)
        if key_id in keyring.keys:
            keys = {k: v for k, v in keyring.keys.items() if k != key_id}
            write_keyring(provider.keyring_file, Keyring(keys=keys, active=keyring.active))
            print(f"key {key_id} retired and removed from {provider.keyring_file}")
            return 0
    print(f"key {key_id} retired: no row uses it; remove it from STAFETT_ENCRYPTION_KEYS")
    return 0
