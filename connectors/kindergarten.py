"""The kindergarten system (barnehagesystem): REST/JSON with an API key and a change feed.

Source: reads the change feed (`/api/v1/endringer?etter=<sekvens>`), skips the connector's
own writes (`kilde: "api"`), fetches each changed child, measure or consent, maps it and sends
it to Stafett as one transaction (conditional updates on the vendor record id, plus a
Provenance). The checkpoint is the last feed sequence number. With Stafett read access
(`stafett_url`, `stafett_token`) the CareTeam is merged into Stafett's, so a new
stafettholder ends the previous one's participation instead of replacing it (§9).

Sink: writes measures (Task) and consents delivered by Stafett back as `tiltak` and
`samtykker`; a revocation notice marks the child's consents withdrawn and hides the child
(`DELETE /api/v1/barn/{id}/deling`). Children's logs themselves are written by staff in the
kindergarten system, so CarePlans are not pushed.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date
from typing import Any

import httpx

from bus import Envelope, EventType
from connectors.base import DeadRecord, PermanentError, SourceBatch, SourceRecord
from connectors.config import ConnectorConfig
from connectors.provenance import with_provenance
from connectors.school.lookup import StafettLookup
from connectors.school.merge import merge_careteam
from connectors.stafett import StafettClient, references_in
from connectors.state import LinkState, link_state
from mapping import MappedResource, MappingEngine, MappingError, transaction_bundle

__all__ = ["KindergartenSink", "KindergartenSource", "sink", "source"]

SYSTEM = "barnehagesystem"
_NAMESPACE = uuid.UUID("d2c7b0a4-3f1e-4e8b-9c55-7a1f0e6b2d31")
_KINDS = {"barn": "barn", "tiltak": "tiltak", "samtykke": "samtykker"}
_FNR = "urn:oid:2.16.578.1.12.4.1.4.1"
_engine: MappingEngine | None = None


def _mappings() -> MappingEngine:
    global _engine  # noqa: PLW0603 - compiled once per process, shared by the connectors
    if _engine is None:
        _engine = MappingEngine.from_directory()
    return _engine


class KindergartenClient:
    """The kindergarten system's REST API."""

    def __init__(self, base_url: str, api_key: str, *, timeout_s: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/api/v1",
            headers={"X-Api-Key": api_key},
            timeout=timeout_s,
        )

    def changes(self, after: int, limit: int = 100) -> dict[str, Any]:
        """Return one page of the change feed after sequence `after`."""
        return self._json(self._http.get("/endringer", params={"etter": after, "antall": limit}))

    def get(self, kind: str, record_id: str) -> dict[str, Any] | None:
        """Return a record, None if it is gone."""
        response = self._http.get(f"/{_KINDS[kind]}/{record_id}")
        if response.status_code == 404:
            return None
        return self._json(response)

    def put(self, kind: str, record_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
        """Replace a record (idempotent)."""
        return self._json(self._http.put(f"/{_KINDS[kind]}/{record_id}", json=dict(record)))

    def create_measure(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Create a measure and return it with its new id."""
        return self._json(self._http.post("/tiltak", json=dict(record)))

    def find(self, kind: str, fnr: str) -> list[dict[str, Any]]:
        """Return the records of a child by fødselsnummer."""
        key = "fodselsnummer" if kind == "barn" else "barn"
        data = self._json(self._http.get(f"/{_KINDS[kind]}", params={key: fnr}))
        items = data.get(_KINDS[kind], data.get("items"))
        return [item for item in items or [] if isinstance(item, dict)]

    def hide(self, child_id: str) -> None:
        """Stop sharing a child's log (the record stays, hidden)."""
        self._json(self._http.delete(f"/barn/{child_id}/deling"), empty_ok=True)

    @staticmethod
    def _json(response: httpx.Response, *, empty_ok: bool = False) -> dict[str, Any]:
        if response.status_code in (400, 409, 422):
            # the system will never take this record as it is
            raise PermanentError(f"{response.status_code} {response.text[:300]}")
        response.raise_for_status()
        if empty_ok and not response.content:
            return {}
        data = response.json()
        return data if isinstance(data, dict) else {"items": data}

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


def _context(config: ConnectorConfig) -> dict[str, Any]:
    return {
        "operator_orgnr": config.operator,
        "source_system": config.source_system,
        "unit_orgnr": config.organization,
    }


def _record_system(config: ConnectorConfig, kind: str) -> str:
    return f"https://stafett.no/fhir/sid/{config.operator}/{config.source_system}/{kind}"


class KindergartenSource:
    """Reads the change feed and maps each change to a transaction Bundle."""

    def __init__(
        self,
        config: ConnectorConfig,
        client: KindergartenClient,
        links: LinkState,
        lookup: StafettLookup | None = None,
    ) -> None:
        self._config = config
        self._client = client
        self._links = links
        self._lookup = lookup
        self._page = int(config.settings.get("page_size", 100))

    def poll(self, checkpoint: Mapping[str, Any] | None) -> SourceBatch:
        """Return the changes after the checkpoint's sequence number."""
        after = int((checkpoint or {}).get("after", 0))
        page = self._client.changes(after, self._page)
        records: list[SourceRecord] = []
        dead: list[DeadRecord] = []
        for change in page.get("endringer", []):
            if change.get("kilde") == "api":
                continue  # our own write, echoed by the feed
            kind, record_id = str(change["type"]), str(change["id"])
            raw = self._client.get(kind, record_id)
            if raw is None:
                continue
            fnr = str(raw.get("fodselsnummer") or raw.get("barn") or "")
            try:
                results = self._map(kind, raw, fnr)
            except MappingError as exc:
                dead.append(DeadRecord(f"{kind}/{record_id}", str(exc), raw, fnr))
                continue
            if all(result.is_skipped for result in results):
                continue
            bundle = with_provenance(
                transaction_bundle(self._keep_team_history(results)),
                unit_orgnr=self._config.organization,
                record_system=_record_system(self._config, kind),
                record_id=record_id,
                display=f"{kind} {record_id} i barnehagesystemet",
                occurred=change.get("endret"),
            )
            records.append(
                SourceRecord(
                    # one id per feed entry: re-reading the same entry gives the same id
                    event_id=str(
                        uuid.uuid5(_NAMESPACE, f"{self._config.name}|{change['sekvens']}")
                    ),
                    subject=fnr,
                    payload=bundle,
                    record_id=f"{kind}/{record_id}",
                )
            )
        return SourceBatch(
            records=records,
            dead=dead,
            checkpoint={"after": int(page.get("neste", after))},
            more=bool(page.get("flere")),
        )

    def _map(self, kind: str, raw: Mapping[str, Any], fnr: str) -> list[Any]:
        # A child's log and the family's consents travel together: a log can only be opened
        # in Stafett by a transaction that carries the consent naming the kindergarten, and
        # a consent needs the child and the guardians who signed it.
        context: dict[str, Any] = _context(self._config)
        if kind == "tiltak":
            # a measure the sink created from a Stafett Task updates that Task (and gives it
            # the kindergarten's identifier) instead of becoming a second one
            known = self._links.key_of("tiltak", str(raw.get("id")))
            if known is not None:
                context["ids"] = {"Task": known}
            return [_mappings().map(SYSTEM, "inbound", "tiltak", raw, context)]
        children = [raw] if kind == "barn" else self._client.find("barn", fnr)
        consents = self._client.find("samtykke", fnr)
        return [
            *(_mappings().map(SYSTEM, "inbound", "barn", child, context) for child in children),
            *(_mappings().map(SYSTEM, "inbound", "samtykke", c, context) for c in consents),
        ]

    def _keep_team_history(self, results: list[Any]) -> list[MappedResource]:
        # The conditional update of the CareTeam replaces its participant list: merged into
        # what Stafett holds, an earlier stafettholder keeps the participation with an end
        # date (hand-over, stafettlogg-fhir.md §9) and other services' participants stay.
        entries = [entry for result in results for entry in result.entries]
        if self._lookup is None:
            return entries
        out: list[MappedResource] = []
        for entry in entries:
            current = self._lookup.matching(entry) if entry.resource_type == "CareTeam" else None
            if current is None:
                out.append(entry)
                continue
            merged = merge_careteam(
                current, entry.resource, ours=self._employee, today=date.today().isoformat()
            )
            out.append(MappedResource(merged, entry.spec, entry.match, entry.create_only))
        return out

    def _employee(self, member: Any) -> str | None:
        """Return the kindergarten's employee id of a CareTeam member, None for others."""
        system = _record_system(self._config, "ansatt")
        reference = member.get("reference") if isinstance(member, Mapping) else None
        if not isinstance(reference, str):
            return None
        prefix = f"PractitionerRole?identifier={system}|"
        if reference.startswith(prefix):
            return reference.removeprefix(prefix)
        if self._lookup is None or "?" in reference:
            return None
        found = self._lookup.identifiers([reference]).get(reference) or []
        return next((str(i["value"]) for i in found if i.get("system") == system), None)

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()
        if self._lookup is not None:
            self._lookup.close()


class KindergartenSink:
    """Writes Stafett's deliveries for this kindergarten into its system."""

    def __init__(
        self,
        config: ConnectorConfig,
        client: KindergartenClient,
        stafett: StafettClient,
        links: LinkState,
    ) -> None:
        self._config = config
        self._client = client
        self._stafett = stafett
        self._links = links

    def put(self, envelope: Envelope) -> None:
        """Apply one delivery or notice."""
        if envelope.event_type == EventType.CONSENT_REVOKED:
            self._revoke(envelope.subject_key)
            return
        if envelope.event_type != EventType.DELIVERY or not envelope.payload:
            return  # grants, deletions and reminders need no write here
        resource = envelope.payload
        if resource.get("resourceType") == "Patient":
            # remember the child's fødselsnummer: later deliveries refer to Patient/<id>
            self._stafett.remember(
                f"Patient/{resource['id']}", list(resource.get("identifier") or [])
            )
            return
        kind = {"Task": "tiltak", "Consent": "samtykke"}.get(str(resource.get("resourceType")))
        if kind is None:
            return
        context = {
            **_context(self._config),
            "identifiers": self._stafett.identifiers(references_in(resource)),
        }
        try:
            result = _mappings().map(
                SYSTEM, "outbound", resource["resourceType"], resource, context
            )
        except MappingError as exc:
            raise PermanentError(str(exc)) from exc
        if result.record is None:
            return  # not for this system (e.g. a level Task)
        record = result.record
        record_id = record.get("id") or self._links.get(kind, str(resource.get("id")))
        if record_id:
            current = self._client.get(kind, str(record_id))
            if current is not None:
                # what Stafett could not tell (e.g. a guardian the kindergarten may no longer
                # read after a withdrawal) keeps the value the system already has
                record = {
                    **current,
                    **{k: v for k, v in record.items() if v not in (None, [], "", {})},
                }
                record.pop("skjult", None)
            self._client.put(kind, str(record_id), record)
        elif kind == "tiltak":
            created = self._client.create_measure(record)
            # remembered before anything else, so a redelivery updates instead of creating
            self._links.put("tiltak", str(resource["id"]), str(created["id"]))
        # consents are created by staff in the system; only known ones are updated

    def _revoke(self, patient_id: str) -> None:
        identifiers = self._stafett.identifiers([f"Patient/{patient_id}"]).get(
            f"Patient/{patient_id}", []
        )
        fnr = next((i.get("value") for i in identifiers if i.get("system") == _FNR), None)
        if fnr is None:
            return  # the child was never known here
        for consent in self._client.find("samtykke", fnr):
            if consent.get("status") == "gyldig":
                self._client.put("samtykke", consent["id"], {**consent, "status": "trukket"})
        for child in self._client.find("barn", fnr):
            self._client.hide(str(child["id"]))

    def close(self) -> None:
        """Close the HTTP connections."""
        self._client.close()


def _client(config: ConnectorConfig) -> KindergartenClient:
    settings = config.settings
    try:
        return KindergartenClient(
            str(settings["base_url"]),
            str(settings["api_key"]),
            timeout_s=float(settings.get("timeout_s", 10)),
        )
    except KeyError as exc:
        raise ValueError(f"connector {config.name}: settings.{exc.args[0]} is missing") from exc


def _links(config: ConnectorConfig) -> LinkState:
    # shared by the kindergarten's source and sink: the sink's links tell the source which
    # Stafett Task a measure it created belongs to
    return link_state(config.settings.get("state_file"), shared_key=f"{SYSTEM}:{config.operator}")


def source(config: ConnectorConfig) -> KindergartenSource:
    """Build the source task (with Stafett read access, it keeps the CareTeam's history)."""
    settings = config.settings
    lookup = (
        StafettLookup(str(settings["stafett_url"]), str(settings["stafett_token"]))
        if settings.get("stafett_url") and settings.get("stafett_token")
        else None
    )
    return KindergartenSource(config, _client(config), _links(config), lookup)


def sink(config: ConnectorConfig) -> KindergartenSink:
    """Build the sink task."""
    settings = config.settings
    if "stafett_url" not in settings or "stafett_token" not in settings:
        raise ValueError(
            f"connector {config.name}: settings.stafett_url and settings.stafett_token are "
            "needed to look up the child and services of a delivery"
        )
    return KindergartenSink(
        config,
        _client(config),
        StafettClient(settings["stafett_url"], settings["stafett_token"]),
        _links(config),
    )
