"""The school system (skolesystem): REST/JSON behind OAuth2 client credentials, plus CSV.

Source (`school`): `GET /api/elever|samtykker|tiltak?endretEtter=<cursor>`, pupils first; a
pupil travels with all the pupil's consents in one transaction (a log opens in Stafett only
with the consent naming the school); measures name the pupil by `elevId`, so the pupil is
looked up for the fødselsnummer. Own writes (`endretAv` = the OAuth client id) are skipped.
With Stafett read access the changes are merged into what Stafett holds (earlier
evaluations, other systems' identifiers, the CareTeam's hand-over history are kept).

Source (`school-csv`): the nightly export folder (csv_source.py).

Sink (`school`): measures and consents into the school system, withdrawals as `trukket`
(sink.py). What the school's format cannot carry is listed in the mapping specs
(mapping/specs/skolesystem/).

Settings: `base_url`, `client_id`, `client_secret`, optional `timeout_s`, `page_max` (500),
`state_file` (links between school and Stafett ids, shared by the source and sink), and
`stafett_url` + `stafett_token` (`system/*.rs`; required by the sink, optional for sources).
"""

from __future__ import annotations

from connectors.config import ConnectorConfig
from connectors.school.client import SchoolClient
from connectors.school.common import required_setting
from connectors.school.csv_source import SchoolCsvSource
from connectors.school.lookup import StafettLookup
from connectors.school.sink import SchoolSink
from connectors.school.source import SchoolSource
from connectors.state import LinkState, link_state

__all__ = [
    "SchoolClient",
    "SchoolCsvSource",
    "SchoolSink",
    "SchoolSource",
    "csv_source",
    "sink",
    "source",
]


def _client(config: ConnectorConfig) -> SchoolClient:
    base_url, client_id, secret = required_setting(config, "base_url", "client_id", "client_secret")
    return SchoolClient(
        str(base_url),
        str(client_id),
        str(secret),
        timeout_s=float(config.settings.get("timeout_s", 10)),
    )


def _lookup(config: ConnectorConfig, *, required: bool = False) -> StafettLookup | None:
    settings = config.settings
    if required:
        required_setting(config, "stafett_url", "stafett_token")
    elif not settings.get("stafett_url") or not settings.get("stafett_token"):
        return None
    return StafettLookup(str(settings["stafett_url"]), str(settings["stafett_token"]))


def _links(config: ConnectorConfig) -> LinkState:
    return link_state(
        config.settings.get("state_file"),
        shared_key=f"school/{config.operator}/{config.source_system}",
    )


def source(config: ConnectorConfig) -> SchoolSource:
    """Build the REST source task."""
    return SchoolSource(config, _client(config), _links(config), _lookup(config))


def sink(config: ConnectorConfig) -> SchoolSink:
    """Build the sink task (it needs Stafett read access to name the child and services)."""
    lookup = _lookup(config, required=True)
    assert lookup is not None
    return SchoolSink(config, _client(config), lookup, _links(config))


def csv_source(config: ConnectorConfig) -> SchoolCsvSource:
    """Build the CSV export source task."""
    required_setting(config, "folder")
    return SchoolCsvSource(config, _links(config), _lookup(config))
