"""Settings of the child-welfare simulator: one frozen dataclass, checked when built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connectors.fiks.envelope import valid_account_id

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """How the message service and the agency behave; the defaults suit a demo.

    `agency_interval_s` is the pause between the agency's ticks (0 turns the loop off; then
    `POST /_sim/tick` drives it). `ttl_s` is the ttl of the agency's own messages;
    `max_ttl_s` the most the service accepts. `fault_seed` seeds the drop/duplicate RNG;
    `seed_demo` lets a caseworker record a demo log, measure and consent at start if the
    agency's store is empty. With `data_dir` the accounts, the agency's store and its
    private key are kept in files there; queued messages never are.
    """

    data_dir: Path | None = None
    agency_account: str = "barnevern"
    stafett_account: str = "stafett"
    lease_s: float = 30.0
    ttl_s: int = 86_400
    max_ttl_s: int = 7 * 86_400
    resend_interval_s: float = 10.0
    agency_interval_s: float = 0.5
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    fault_seed: int | None = None
    seed_demo: bool = False

    def __post_init__(self) -> None:
        for name in ("agency_account", "stafett_account"):
            if not valid_account_id(getattr(self, name)):
                raise ValueError(f"{name} must be 1-64 of letters, digits, '.', '_', '-'")
        if self.agency_account == self.stafett_account:
            raise ValueError("agency_account and stafett_account must differ")
        if self.lease_s <= 0 or self.resend_interval_s <= 0 or self.agency_interval_s < 0:
            raise ValueError("lease_s and resend_interval_s must be > 0, agency_interval_s >= 0")
        if not 1 <= self.ttl_s <= self.max_ttl_s:
            raise ValueError("ttl_s must be between 1 and max_ttl_s")
