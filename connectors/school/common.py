"""Helpers the school and health-station connectors share: engine, contexts, ids, settings.

Nothing here is specific to one vendor; it lives in this package because the connectors'
common modules (`connectors/provenance.py`, `connectors/stafett.py`) are not ours to extend.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from connectors.config import ConnectorConfig
from mapping import MappingEngine

__all__ = [
    "FNR_SYSTEM",
    "ORGNR_SYSTEM",
    "event_id",
    "identifier_value",
    "mapping_context",
    "mappings",
    "newer",
    "record_system",
    "required_setting",
]

FNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.1"
ORGNR_SYSTEM = "urn:oid:2.16.578.1.12.4.1.4.101"
_NAMESPACE = uuid.UUID("6a1f3c2e-9b4d-4e07-8f35-2c9d7b1e0a64")
_engine: MappingEngine | None = None
_engine_lock = threading.Lock()


def mappings() -> MappingEngine:
    """Return the mapping engine, compiled once per process and shared by the connectors."""
    global _engine  # noqa: PLW0603 - one compiled engine per process
    with _engine_lock:
        if _engine is None:
            _engine = MappingEngine.from_directory()
        return _engine


def mapping_context(config: ConnectorConfig, **extra: Any) -> dict[str, Any]:
    """Return the mapping context every call of this connector starts from."""
    return {
        "operator_orgnr": config.operator,
        "source_system": config.source_system,
        "unit_orgnr": config.organization,
        **{k: v for k, v in extra.items() if v is not None},
    }


def record_system(config: ConnectorConfig, kind: str) -> str:
    """Return the §2 identifier system of this vendor's records of one kind."""
    return f"https://stafett.no/fhir/sid/{config.operator}/{config.source_system}/{kind}"


def event_id(config: ConnectorConfig, *parts: object) -> str:
    """Return a deterministic event id for one version of one vendor record."""
    key = "|".join([config.name, *(str(p) for p in parts)])
    return str(uuid.uuid5(_NAMESPACE, key))


def identifier_value(identifiers: Iterable[Mapping[str, Any]] | None, system: str) -> str | None:
    """Return the value of the first identifier with this system."""
    for item in identifiers or ():
        if isinstance(item, Mapping) and item.get("system") == system and item.get("value"):
            return str(item["value"])
    return None


def newer(candidate: str | None, than: str | None) -> bool:
    """Return whether ISO time `candidate` is later than `than` (a missing `than`: yes)."""
    if not than:
        return True
    if not candidate:
        return False
    try:
        return _instant(candidate) > _instant(than)
    except ValueError:
        return candidate > than


def _instant(text: str) -> datetime:
    parsed = datetime.fromisoformat(text.strip().replace(" ", "+").replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.astimezone()


def required_setting(config: ConnectorConfig, *names: str) -> list[Any]:
    """Return the settings, or raise ValueError naming the first that is missing."""
    missing = [n for n in names if config.settings.get(n) in (None, "")]
    if missing:
        raise ValueError(f"connector {config.name}: settings.{missing[0]} is missing")
    return [config.settings[n] for n in names]
