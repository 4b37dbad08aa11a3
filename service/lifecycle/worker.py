"""The worker's lifecycle component: deletes what is past retention, every interval."""

from __future__ import annotations

import logging
import threading

from service.config import Settings
from service.lifecycle.purge import Purger
from service.repository import RepositoryConfig

__all__ = ["run_purges"]

_log = logging.getLogger("stafett.lifecycle")


def run_purges(settings: Settings, config: RepositoryConfig, stop: threading.Event) -> None:
    """Purge every `lifecycle_interval_s` until stop is set; failures wait and retry."""
    purger = Purger(
        database=config.database,
        store=config.store,
        base_url=config.base_url,
        retention_years=settings.retention_years,
        require_archive=settings.retention_require_archive,
        actor="stafett worker (lifecycle)",
    )
    while not stop.is_set():
        try:
            report = purger.run(stop=stop)
        except Exception:
            # the database may be down: nothing was half deleted (one transaction per child)
            _log.exception("lifecycle purge failed; retrying at the next interval")
        else:
            if report.purged or report.waiting_for_archive:
                _log.info(
                    "lifecycle purge",
                    extra={
                        "purged": len(report.purged),
                        "waiting_for_archive": len(report.waiting_for_archive),
                    },
                )
        stop.wait(settings.lifecycle_interval_s)
