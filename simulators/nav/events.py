"""NAV's BTI events (docs/vendor-formats.md, "NAV"): payload models, kinds and rivers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from simulators.common.ids import is_valid_fnr, is_valid_orgnr
from simulators.nav.rapids import River

__all__ = [
    "KILDE",
    "KINDS",
    "EventKind",
    "Oppfolging",
    "OppfolgingInn",
    "Samtykke",
    "SamtykkeEndring",
    "SamtykkeNy",
    "Tiltak",
    "TiltakEndring",
    "TiltakNy",
    "Veileder",
    "kind_of",
]

KILDE = "nav"
"""`@kilde` of NAV's own events, which NAV's rivers ignore."""


def _fnr(value: str) -> str:
    if not is_valid_fnr(value):
        raise ValueError("not a valid fødselsnummer")
    return value


def _orgnr(value: str) -> str:
    if not is_valid_orgnr(value):
        raise ValueError("not a valid organisasjonsnummer")
    return value


def _level(value: object) -> object:
    # levels are "0".."3" (common rules); a producer that sends the number is understood
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


Fnr = Annotated[str, AfterValidator(_fnr)]
Orgnr = Annotated[str, AfterValidator(_orgnr)]
Text = Annotated[str, Field(min_length=1)]
Nivaa = Annotated[Literal["0", "1", "2", "3"], BeforeValidator(_level)]
TiltakStatus = Literal["PLANLAGT", "GJENNOMFORES", "AVSLUTTET"]


class _Model(BaseModel):
    """camelCase on the wire; unknown fields are ignored, as R&R consumers do."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, extra="ignore", frozen=True
    )

    def wire(self) -> dict[str, Any]:
        """Return the event fields as published."""
        return self.model_dump(mode="json", by_alias=True)

    def changes(self) -> dict[str, Any]:
        """Return only the fields the caller set, as wire JSON."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Veileder(_Model):
    """The NAV advisor following the youth up."""

    nav_ident: Annotated[str, Field(pattern=r"^[A-Z][0-9]{6}$")]
    navn: Text


class Evaluering(_Model):
    """An evaluation of a measure (the format leaves it open; the school's shape is used)."""

    dato: date
    tekst: Text


class Oppfolging(_Model):
    """`bti_oppfolging`: NAV follows a youth up; the fødselsnummer is the business id."""

    fodselsnummer: Fnr
    nivaa: Nivaa
    veileder: Veileder
    kontor: Orgnr
    aktiv: bool


class Tiltak(_Model):
    """`bti_tiltak`: a measure, identified by `tiltaksId`."""

    tiltaks_id: Text
    fodselsnummer: Fnr
    beskrivelse: Text
    status: TiltakStatus
    fra_og_med: date | None = None
    evalueringsdato: date | None = None
    evaluering: Evaluering | None = None


class Samtykke(_Model):
    """`bti_samtykke`: a consent, identified by `samtykkeId`."""

    samtykke_id: Text
    fodselsnummer: Fnr
    mottakere: list[Orgnr]
    gyldig_til_og_med: date
    trukket: bool


class OppfolgingInn(_Model):
    """An advisor starts or changes the follow-up of a youth; `kontor` defaults to the office."""

    fodselsnummer: Fnr
    nivaa: Nivaa
    veileder: Veileder
    kontor: Orgnr | None = None
    aktiv: bool = True


class TiltakNy(_Model):
    """An advisor records a measure; NAV assigns `tiltaksId`."""

    fodselsnummer: Fnr
    beskrivelse: Text
    status: TiltakStatus = "PLANLAGT"
    fra_og_med: date | None = None
    evalueringsdato: date | None = None
    evaluering: Evaluering | None = None


class TiltakEndring(_Model):
    """An advisor changes the given fields of a measure."""

    beskrivelse: Text | None = None
    status: TiltakStatus | None = None
    fra_og_med: date | None = None
    evalueringsdato: date | None = None
    evaluering: Evaluering | None = None


class SamtykkeNy(_Model):
    """An advisor records a consent; NAV assigns `samtykkeId`."""

    fodselsnummer: Fnr
    mottakere: list[Orgnr]
    gyldig_til_og_med: date
    trukket: bool = False


class SamtykkeEndring(_Model):
    """An advisor changes the given fields of a consent (e.g. `{"trukket": true}`)."""

    mottakere: list[Orgnr] | None = None
    gyldig_til_og_med: date | None = None
    trukket: bool | None = None


@dataclass(frozen=True)
class EventKind:
    """One kind of record: its event, model, business-id field, collection and id prefix."""

    name: str
    event_name: str
    model: type[_Model]
    id_field: str
    collection: str
    prefix: str
    river: River


def _kind(
    name: str, *, event: str, model: type[_Model], id_field: str, collection: str, prefix: str
) -> EventKind:
    # the keys without which the record cannot be stored; the rest may be absent or null
    required = tuple(
        info.alias or key for key, info in model.model_fields.items() if info.is_required()
    )
    river = River(event, required_keys=required, rejected_values={"@kilde": KILDE})
    return EventKind(name, event, model, id_field, collection, prefix, river)


KINDS: dict[str, EventKind] = {
    "oppfolging": _kind(
        "oppfolging",
        event="bti_oppfolging",
        model=Oppfolging,
        id_field="fodselsnummer",
        collection="oppfolging",
        prefix="NAV-OPF",
    ),
    "tiltak": _kind(
        "tiltak",
        event="bti_tiltak",
        model=Tiltak,
        id_field="tiltaksId",
        collection="tiltak",
        prefix="NAV-TILTAK",
    ),
    "samtykke": _kind(
        "samtykke",
        event="bti_samtykke",
        model=Samtykke,
        id_field="samtykkeId",
        collection="samtykker",
        prefix="NAV-SAMTYKKE",
    ),
}
_BY_EVENT = {kind.event_name: kind for kind in KINDS.values()}


def kind_of(event_name: object) -> EventKind | None:
    """Return the kind an `@event_name` carries, or None if NAV does not handle it."""
    return _BY_EVENT.get(event_name) if isinstance(event_name, str) else None
