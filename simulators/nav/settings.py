"""Settings of the NAV simulator: one frozen dataclass, checked when built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from simulators.common.ids import is_valid_orgnr

__all__ = ["Settings"]


@dataclass(frozen=True, slots=True)
class Settings:
    """Where NAV's topic is and how its consumer behaves.

    The consumer-group timeouts default to Kafka's production values; on Tansu a group join
    takes about half of `session_timeout_ms`, so tests pass the short values of
    docs/ENVIRONMENT.md (`session_timeout_ms=6000, heartbeat_interval_ms=1000,
    max_poll_interval_ms=5000`). With `data_dir` the store is kept in `nav.json` there.
    """

    bootstrap: str
    data_dir: Path | None = None
    topic: str = "nav.bti.v1"
    group_id: str = "nav-bti-simulator"
    client_id: str = "nav-bti-simulator"
    partitions: int = 1
    kontor: str = "961728398"
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    fetch_max_wait_ms: int = 100
    poll_timeout_s: float = 0.2
    connect_timeout_s: float = 10.0
    seed_demo: bool = False

    def __post_init__(self) -> None:
        if not self.bootstrap.strip():
            raise ValueError("bootstrap must name at least one host:port")
        if self.partitions < 1:
            raise ValueError("partitions must be at least 1")
        if not is_valid_orgnr(self.kontor):
            raise ValueError("kontor must be an organisasjonsnummer")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("heartbeat_interval_ms must be below session_timeout_ms")

    @property
    def servers(self) -> list[str]:
        """Return the bootstrap servers as a list."""
        return [server.strip() for server in self.bootstrap.split(",") if server.strip()]
