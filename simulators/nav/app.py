"""NAV's own system: its store, a consumer of `nav.bti.v1` and an advisor's admin surface.

Events from others (`@kilde` other than `nav`) that a river accepts are applied to the store;
an advisor's change through `POST /_sim/...` is stored and published as a `bti_*` event with
`@kilde: "nav"`, which NAV's own consumer then ignores.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from simulators.nav.events import (
    KINDS,
    OppfolgingInn,
    SamtykkeEndring,
    SamtykkeNy,
    TiltakEndring,
    TiltakNy,
    kind_of,
)
from simulators.nav.kafka_rapid import KafkaRapid, RapidUnavailable
from simulators.nav.rapids import parse
from simulators.nav.settings import Settings
from simulators.nav.store import InvalidRecord, NavStore, RecordNotFound

__all__ = ["create_app", "handle_record"]

log = logging.getLogger(__name__)


def handle_record(store: NavStore, value: bytes | None) -> None:
    """Apply one record from the topic if a river accepts it; count it as ignored otherwise."""
    message = parse(value)
    if message is None:
        store.note_ignored(None, "not a JSON object", invalid=True)
        return
    kind = kind_of(message.get("@event_name"))
    if kind is None:
        store.note_ignored(message, "no river for this @event_name", invalid=False)
        return
    reason = kind.river.reason_to_ignore(message)
    if reason is not None:
        store.note_ignored(message, reason, invalid=False)
        return
    try:
        outcome = store.apply(kind, message)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        store.note_ignored(message, f"invalid fields: {problems}", invalid=True)
        return
    log.info("%s %s: %s", kind.event_name, message["@id"], outcome.value)


class _State:
    """What the lifespan builds: the store and the Kafka connection."""

    def __init__(self, settings: Settings) -> None:
        path = None if settings.data_dir is None else settings.data_dir / "nav.json"
        self.settings = settings
        self.store = NavStore(path)
        self.rapid = KafkaRapid(settings, lambda value: handle_record(self.store, value))

    def save(
        self, kind_name: str, changes: dict[str, Any], business_id: str | None = None
    ) -> dict[str, Any]:
        """Store an advisor's change, publish its event and return both."""
        record, event = self.store.save(
            KINDS[kind_name], changes, business_id=business_id, publish=self.rapid.publish
        )
        return {"post": record, "hendelse": event}


def _state(request: Request) -> _State:
    return cast("_State", request.app.state.nav)


StateDep = Annotated[_State, Depends(_state)]
router = APIRouter(prefix="/_sim", tags=["simulator"])


@router.get("/store")
def store(state: StateDep) -> dict[str, Any]:
    """Return NAV's records, handled event ids, counters and the consumer's status."""
    return {**state.store.snapshot(), "kafka": state.rapid.status()}


@router.post("/oppfolging")
def save_follow_up(body: OppfolgingInn, state: StateDep) -> dict[str, Any]:
    """Start or change the follow-up of a youth and publish `bti_oppfolging`."""
    changes = body.wire()
    changes["kontor"] = changes["kontor"] or state.settings.kontor
    return state.save("oppfolging", changes)


@router.post("/tiltak", status_code=201)
def create_measure(body: TiltakNy, state: StateDep) -> dict[str, Any]:
    """Record a measure with NAV's own id and publish `bti_tiltak`."""
    return state.save("tiltak", body.wire())


@router.post("/tiltak/{tiltaks_id}")
def update_measure(tiltaks_id: str, body: TiltakEndring, state: StateDep) -> dict[str, Any]:
    """Change the given fields of a measure and publish `bti_tiltak`."""
    return state.save("tiltak", body.changes(), business_id=tiltaks_id)


@router.post("/samtykke", status_code=201)
def create_consent(body: SamtykkeNy, state: StateDep) -> dict[str, Any]:
    """Record a consent with NAV's own id and publish `bti_samtykke`."""
    return state.save("samtykke", body.wire())


@router.post("/samtykke/{samtykke_id}")
def update_consent(samtykke_id: str, body: SamtykkeEndring, state: StateDep) -> dict[str, Any]:
    """Change the given fields of a consent (e.g. withdraw it) and publish `bti_samtykke`."""
    return state.save("samtykke", body.changes(), business_id=samtykke_id)


def _seed(state: _State) -> None:
    """Add a demo follow-up, measure and consent (docs/vendor-formats.md) to an empty store."""
    fnr = "15832151200"
    state.save(
        "oppfolging",
        {
            "fodselsnummer": fnr,
            "nivaa": "1",
            "veileder": {"navIdent": "Z990123", "navn": "Vera Veileder"},
            "kontor": state.settings.kontor,
            "aktiv": True,
        },
    )
    state.save(
        "tiltak",
        {
            "fodselsnummer": fnr,
            "beskrivelse": "Samtale med veileder annenhver uke",
            "status": "GJENNOMFORES",
            "fraOgMed": "2026-09-07",
            "evalueringsdato": "2026-11-30",
        },
    )
    state.save(
        "samtykke",
        {
            "fodselsnummer": fnr,
            "mottakere": [state.settings.kontor, "936451284"],
            "gyldigTilOgMed": "2027-11-01",
            "trukket": False,
        },
    )


def create_app(settings: Settings) -> FastAPI:
    """Return the NAV simulator; the lifespan connects to Kafka and starts the consumer."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = _State(settings)
        state.rapid.start()
        app.state.nav = state
        try:
            if settings.seed_demo and state.store.is_empty():
                _seed(state)
            yield
        finally:
            state.rapid.stop()

    app = FastAPI(title="NAV simulator: Rapids & Rivers on Kafka", lifespan=lifespan)
    app.include_router(router)

    @app.exception_handler(RecordNotFound)
    async def not_found(request: Request, exc: RecordNotFound) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(InvalidRecord)
    async def invalid(request: Request, exc: InvalidRecord) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RapidUnavailable)
    async def unavailable(request: Request, exc: RapidUnavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    return app
