"""Encryption at rest from the settings: the key provider, the sealer and the start-up check."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from service.crypto.envelope import Envelope
from service.crypto.errors import KeyringInvalid, KeyUnavailable, SealBroken
from service.crypto.fields import FieldSealer
from service.crypto.keys import (
    DEV_KEYRING_NAME,
    Keyring,
    LocalKeyProvider,
    generate_key,
    generate_key_id,
    parse_env_keys,
    write_keyring,
)
from service.search.values import now_micros
from service.storage.schema import encryption_keys

if TYPE_CHECKING:
    from service.config import Settings
    from service.storage.database import Database

__all__ = ["build_envelope", "build_sealer", "probe_context", "register_key", "verify_keys"]

_log = logging.getLogger("stafett.crypto")
_PROBE = b"stafett key probe"


def probe_context(key_id: str) -> str:
    """Return the encryption context of a key's probe in the registry."""
    return f"encryption_keys/{key_id}"


def build_envelope(settings: Settings) -> Envelope | None:
    """Return the envelope the settings configure, or None when encryption at rest is off.

    Without configured keys outside production, a keyring is created under the data folder
    (like the dev token issuer's key); in production a missing key is an error, so the
    API and the worker refuse to start rather than store children's notes in clear.
    """
    if not settings.encryption_at_rest:
        return None
    env_keys = {}
    if settings.encryption_keys is not None:
        env_keys = parse_env_keys(settings.encryption_keys.get_secret_value())
    keyring_file = settings.encryption_keyring
    if keyring_file is None and not env_keys:
        if settings.environment == "production":
            raise KeyringInvalid(
                "production needs STAFETT_ENCRYPTION_KEYS or STAFETT_ENCRYPTION_KEYRING "
                "(or STAFETT_ENCRYPTION_AT_REST=false, on purpose)"
            )
        keyring_file = settings.data_dir / DEV_KEYRING_NAME
        if not keyring_file.exists():
            key_id = generate_key_id()
            write_keyring(keyring_file, Keyring(keys={key_id: generate_key()}, active=key_id))
            _log.warning("created a development encryption keyring at %s", keyring_file)
    provider = LocalKeyProvider(
        env_keys=env_keys, keyring_file=keyring_file, active=settings.encryption_active_key
    )
    return Envelope(provider)


def build_sealer(settings: Settings) -> FieldSealer:
    """Return the field sealer for these settings (sealing nothing when encryption is off)."""
    return FieldSealer(build_envelope(settings))


def register_key(conn: Connection, envelope: Envelope, key_id: str) -> None:
    """Record that the database holds (or will hold) data under this key, with its probe."""
    probe = envelope.seal(_PROBE, context=probe_context(key_id), key_id=key_id)
    existing = conn.execute(
        select(encryption_keys.c.retired_at).where(encryption_keys.c.key_id == key_id)
    ).first()
    if existing is not None:
        if existing[0] is not None:  # a retired key made active again
            conn.execute(
                update(encryption_keys)
                .where(encryption_keys.c.key_id == key_id)
                .values(retired_at=None, probe=probe)
            )
        return
    try:
        with conn.begin_nested():
            conn.execute(
                insert(encryption_keys),
                {"key_id": key_id, "probe": probe, "created_at": now_micros()},
            )
    except IntegrityError:
        pass  # another process registered it at the same moment


def verify_keys(database: Database, envelope: Envelope | None) -> None:
    """Refuse to run unless every key the database uses is configured and is the right key.

    Opens each unretired key's probe, then registers the active key. Raises KeyUnavailable,
    SealBroken or KeyringInvalid with what the operator has to fix.
    """
    with database.write() as conn:
        try:
            rows = conn.execute(
                select(encryption_keys.c.key_id, encryption_keys.c.probe).where(
                    encryption_keys.c.retired_at.is_(None)
                )
            ).all()
        except (OperationalError, ProgrammingError) as exc:
            raise KeyringInvalid(
                "the database has no encryption key registry: run `stafett db upgrade`"
            ) from exc
        if envelope is None:
            if rows:
                used = ", ".join(sorted(row[0] for row in rows))
                raise KeyringInvalid(
                    f"the database holds data encrypted with keys {used}, but encryption at "
                    "rest is off (STAFETT_ENCRYPTION_AT_REST=false): configure the keys"
                )
            _log.warning("encryption at rest is OFF (STAFETT_ENCRYPTION_AT_REST=false)")
            return
        for key_id, probe in rows:
            try:
                envelope.open(bytes(probe), context=probe_context(key_id))
            except KeyUnavailable as exc:
                raise KeyUnavailable(
                    f"the database holds data encrypted with key {key_id!r}, which is not "
                    "configured: add it to STAFETT_ENCRYPTION_KEYS or the keyring "
                    "(`stafett keys status` shows what uses it)"
                ) from exc
            except SealBroken as exc:
                raise SealBroken(
                    f"the configured key {key_id!r} is not the key the database's data was "
                    "encrypted with: check STAFETT_ENCRYPTION_KEYS or the keyring"
                ) from exc
        register_key(conn, envelope, envelope.active_key_id())
