"""The message service's domain: accounts, inboxes with leases and TTL, and lossy delivery.

Accounts (id, public key, token) are kept in a `JsonStore` and survive a restart; queued
messages live in memory only, which the contract allows: the service guarantees no delivery.
"""

from __future__ import annotations

import hmac
import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.fiks import crypto
from connectors.fiks.envelope import Envelope, valid_account_id, verify_envelope
from simulators.child_welfare.errors import (
    AccountConflict,
    EnvelopeInvalid,
    Forbidden,
    NotAuthenticated,
    NotLeased,
    RequestInvalid,
    UnknownAccount,
)
from simulators.common.store import JsonStore

__all__ = ["Faults", "MessageService", "SendOutcome", "new_account_store"]

_MIN_TOKEN = 16


@dataclass(frozen=True, slots=True)
class Faults:
    """Shares of accepted messages the service drops or delivers twice (0.0-1.0)."""

    drop_rate: float = 0.0
    duplicate_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("drop_rate", "duplicate_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """What the service did with an accepted message: 0 (dropped), 1 or 2 copies queued."""

    melding_id: str
    copies: int


@dataclass(slots=True)
class _Delivery:
    seq: int
    envelope: Envelope
    expires_at: float
    leased_until: float = 0.0
    handed_out: int = 0


@dataclass(slots=True)
class _Stats:
    accepted: int = 0
    dropped: int = 0
    duplicated: int = 0
    delivered: int = 0
    redelivered: int = 0
    acked: int = 0
    expired: int = 0
    rejected: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def new_account_store(path: Any = None) -> JsonStore:
    """Return the store of accounts, saved at `path` (a Path) or kept in memory (None)."""
    return JsonStore(path, initial=lambda: {"kontoer": {}})


class MessageService:
    """Accounts, inboxes and the lossy transport between them. Thread-safe.

    `send` verifies the signature against the sender's registered key, then draws twice from
    the seeded RNG: below `drop_rate` the message is accepted but never queued; otherwise,
    below `duplicate_rate` it is queued twice. `receive` leases up to `max_messages` of the
    oldest unexpired, unleased messages for `lease_s` seconds; unacknowledged ones come back
    when the lease ends. A message expires `ttl` seconds after the service accepted it.
    """

    def __init__(
        self,
        *,
        accounts: JsonStore,
        lease_s: float = 30.0,
        max_ttl_s: int = 7 * 86_400,
        faults: Faults | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._accounts = accounts
        self._lease_s = lease_s
        self._max_ttl_s = max_ttl_s
        self._faults = faults or Faults()
        # faults are simulated, not security: a seeded, reproducible RNG is the point
        self._rng = random.Random(seed)  # noqa: S311
        self._clock = clock
        self._lock = threading.Lock()
        self._inboxes: dict[str, list[_Delivery]] = {}
        self._keys: dict[str, tuple[str, rsa.RSAPublicKey]] = {}
        self._seq = itertools.count(1)
        self._stats = _Stats()

    @property
    def faults(self) -> Faults:
        """Return the fault settings in force."""
        return self._faults

    def set_faults(self, faults: Faults, *, seed: int | None = None) -> None:
        """Change the fault settings; a seed restarts the RNG for a reproducible sequence."""
        with self._lock:
            self._faults = faults
            if seed is not None:
                self._rng = random.Random(seed)  # noqa: S311

    def register(
        self,
        *,
        account: str,
        public_key_pem: str,
        token: str | None = None,
        presented_token: str | None = None,
    ) -> tuple[str, bool]:
        """Create an account, or re-key it if its token is presented; return (token, created)."""
        if not valid_account_id(account):
            raise RequestInvalid("konto must be 1-64 of letters, digits, '.', '_', '-'")
        crypto.load_public_key(public_key_pem)
        if token is not None and len(token) < _MIN_TOKEN:
            raise RequestInvalid(f"a chosen token must have at least {_MIN_TOKEN} characters")
        with self._accounts.transaction() as data:
            accounts: dict[str, dict[str, str]] = data["kontoer"]
            existing = accounts.get(account)
            if existing is not None:
                if presented_token is None or not hmac.compare_digest(
                    presented_token, existing["token"]
                ):
                    raise AccountConflict(
                        f"account {account!r} exists; present its X-Fiks-Token to change its key"
                    )
                token = token or existing["token"]
            else:
                token = token or secrets.token_urlsafe(24)
            if any(
                other != account and hmac.compare_digest(entry["token"], token)
                for other, entry in accounts.items()
            ):
                raise AccountConflict("that token belongs to another account")
            accounts[account] = {"offentligNokkel": public_key_pem, "token": token}
        with self._lock:
            self._keys.pop(account, None)
        return token, existing is None

    def account_for_token(self, token: str | None) -> str:
        """Return the account a token belongs to, or raise NotAuthenticated."""
        if token:
            for account, entry in self._accounts.snapshot()["kontoer"].items():
                if hmac.compare_digest(entry["token"], token):
                    return str(account)
        raise NotAuthenticated("missing or unknown X-Fiks-Token")

    def public_key_pem(self, account: str) -> str:
        """Return an account's registered public key (PEM), or raise UnknownAccount."""
        entry = self._accounts.snapshot()["kontoer"].get(account)
        if entry is None:
            raise UnknownAccount(f"no account {account!r}")
        return str(entry["offentligNokkel"])

    def public_key(self, account: str) -> rsa.RSAPublicKey:
        """Return an account's public key, loaded once per registration."""
        pem = self.public_key_pem(account)
        with self._lock:
            cached = self._keys.get(account)
            if cached is not None and cached[0] == pem:
                return cached[1]
        key = crypto.load_public_key(pem)
        with self._lock:
            self._keys[account] = (pem, key)
        return key

    def send(self, *, sender: str, envelope: Envelope) -> SendOutcome:
        """Accept a signed envelope from `sender` and queue 0, 1 or 2 copies for the recipient."""
        if envelope.avsender != sender:
            raise Forbidden(f"avsender {envelope.avsender!r} is not the caller {sender!r}")
        if envelope.ttl > self._max_ttl_s:
            raise EnvelopeInvalid(f"ttl must be at most {self._max_ttl_s} seconds")
        self.public_key_pem(envelope.mottaker)
        try:
            verify_envelope(envelope, self.public_key(sender))
        except Exception:
            with self._lock:
                self._stats.rejected += 1
            raise
        with self._lock:
            self._stats.accepted += 1
            self._stats.by_type[envelope.melding_type] = (
                self._stats.by_type.get(envelope.melding_type, 0) + 1
            )
            # two draws per message whatever the first says, so a seed gives one sequence
            drop = self._rng.random() < self._faults.drop_rate
            duplicate = self._rng.random() < self._faults.duplicate_rate
            if drop:
                self._stats.dropped += 1
                return SendOutcome(envelope.melding_id, 0)
            copies = 2 if duplicate else 1
            self._stats.duplicated += copies - 1
            inbox = self._inboxes.setdefault(envelope.mottaker, [])
            expires_at = self._clock() + envelope.ttl
            inbox.extend(_Delivery(next(self._seq), envelope, expires_at) for _ in range(copies))
            return SendOutcome(envelope.melding_id, copies)

    def receive(self, *, account: str, max_messages: int) -> list[Envelope]:
        """Lease and return up to `max_messages` of the account's oldest available messages."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.public_key_pem(account)
        with self._lock:
            now = self._clock()
            inbox = self._purge(account, now)
            batch: list[Envelope] = []
            for delivery in inbox:
                if len(batch) >= max_messages:
                    break
                if delivery.leased_until > now:
                    continue
                delivery.leased_until = now + self._lease_s
                delivery.handed_out += 1
                self._stats.delivered += 1
                if delivery.handed_out > 1:
                    self._stats.redelivered += 1
                batch.append(delivery.envelope)
            return batch

    def ack(self, *, account: str, melding_id: str) -> int:
        """Remove every copy of a message the account has received; raise NotLeased if none."""
        with self._lock:
            inbox = self._inboxes.get(account, [])
            keep = [d for d in inbox if d.envelope.melding_id != melding_id or d.handed_out == 0]
            removed = len(inbox) - len(keep)
            if removed == 0:
                raise NotLeased(f"account {account!r} holds no received message {melding_id}")
            self._inboxes[account] = keep
            self._stats.acked += removed
            return removed

    def snapshot(self) -> dict[str, Any]:
        """Return accounts (without tokens), queued messages and counters, for `/_sim/store`."""
        accounts = self._accounts.snapshot()["kontoer"]
        with self._lock:
            now = self._clock()
            inboxes = {
                account: [
                    {
                        "meldingId": d.envelope.melding_id,
                        "meldingType": d.envelope.melding_type,
                        "avsender": d.envelope.avsender,
                        "svarPaMelding": d.envelope.svar_pa_melding,
                        "utloperOmSekunder": round(d.expires_at - now, 3),
                        "leietidIgjenSekunder": round(max(0.0, d.leased_until - now), 3),
                        "utlevert": d.handed_out,
                    }
                    for d in self._purge(account, now)
                ]
                for account in sorted(self._inboxes)
            }
            stats = {
                name: getattr(self._stats, name)
                for name in (
                    "accepted",
                    "dropped",
                    "duplicated",
                    "delivered",
                    "redelivered",
                    "acked",
                    "expired",
                    "rejected",
                )
            }
            stats["by_type"] = dict(self._stats.by_type)
            faults = {
                "drop_rate": self._faults.drop_rate,
                "duplicate_rate": self._faults.duplicate_rate,
            }
        return {
            "kontoer": sorted(accounts),
            "innbokser": inboxes,
            "statistikk": stats,
            "feil": faults,
        }

    def _purge(self, account: str, now: float) -> list[_Delivery]:
        inbox = self._inboxes.get(account, [])
        live = [d for d in inbox if d.expires_at > now]
        if len(live) != len(inbox):
            self._stats.expired += len(inbox) - len(live)
            self._inboxes[account] = live
        return live
