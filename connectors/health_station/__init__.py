"""The health station (helsestasjon-fhir): its own FHIR R4 server, with its own ids and codes.

Source: CarePlan, Consent and Task changes by `_lastUpdated`, re-coded to Stafett's model and
merged into what Stafett holds (source.py). Sink: Stafett's logs, measures and consents
re-coded into the station's server, withdrawals as inactive Consents (sink.py). What the
station's format cannot carry is listed in mapping/specs/helsestasjon-fhir/.

Settings: `base_url` (the server or its FHIR base `.../fhir`), `token`, optional `timeout_s`,
`page_size` (50), `max_pages` (10), `source_uri` (the `meta.source` of the sink's writes;
default `https://stafett.no/connectors/<operator>/<source_system>`), `state_file` (known
children, shared by source and sink), and `stafett_url` + `stafett_token` (`system/*.rs`;
required by the sink, optional for the source, which then replaces instead of merging).
"""

from __future__ import annotations

from connectors.config import ConnectorConfig
from connectors.health_station.client import StationClient
from connectors.health_station.sink import StationSink
from connectors.health_station.source import StationSource
from connectors.school.common import required_setting
from connectors.school.lookup import StafettLookup
from connectors.state import link_state

__all__ = ["StationClient", "StationSink", "StationSource", "sink", "source"]


def _client(config: ConnectorConfig) -> StationClient:
    base_url, token = required_setting(config, "base_url", "token")
    return StationClient(
        str(base_url), str(token), timeout_s=float(config.settings.get("timeout_s", 10))
    )


def _lookup(config: ConnectorConfig) -> StafettLookup | None:
    settings = config.settings
    if not settings.get("stafett_url") or not settings.get("stafett_token"):
        return None
    return StafettLookup(str(settings["stafett_url"]), str(settings["stafett_token"]))


def source(config: ConnectorConfig) -> StationSource:
    """Build the source task."""
    return StationSource(config, _client(config), _lookup(config))


def sink(config: ConnectorConfig) -> StationSink:
    """Build the sink task (it needs Stafett read access to name the child and services)."""
    required_setting(config, "stafett_url", "stafett_token")
    lookup = _lookup(config)
    assert lookup is not None
    links = link_state(
        config.settings.get("state_file"),
        shared_key=f"health_station/{config.operator}/{config.source_system}",
    )
    return StationSink(config, _client(config), lookup, links)
