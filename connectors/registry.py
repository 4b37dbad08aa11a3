"""Which code runs a connector for a (system, kind) pair; imported only when used."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from connectors.config import ConnectorConfig
from connectors.runtime import TaskFactory

__all__ = ["FACTORIES", "factories"]

# (system, kind) -> "module:function"; each function takes the ConnectorConfig
FACTORIES: Mapping[tuple[str, str], str] = {
    ("kindergarten", "source"): "connectors.kindergarten:source",
    ("kindergarten", "sink"): "connectors.kindergarten:sink",
    ("school", "source"): "connectors.school:source",
    ("school", "sink"): "connectors.school:sink",
    ("school-csv", "source"): "connectors.school:csv_source",
    ("health_station", "source"): "connectors.health_station:source",
    ("health_station", "sink"): "connectors.health_station:sink",
    ("child_welfare", "source"): "connectors.child_welfare:source",
    ("child_welfare", "sink"): "connectors.child_welfare:sink",
    ("nav", "source"): "connectors.nav:source",
    ("nav", "sink"): "connectors.nav:sink",
}


def _lazy(target: str) -> TaskFactory:
    module_name, _, function = target.partition(":")

    def build(config: ConnectorConfig) -> object:
        module = importlib.import_module(module_name)
        return getattr(module, function)(config)

    return build  # type: ignore[return-value]


def factories() -> dict[tuple[str, str], TaskFactory]:
    """Return a factory per (system, kind), importing each system's package on first use."""
    return {key: _lazy(target) for key, target in FACTORIES.items()}
