"""The payloads inside messages (docs/vendor-formats.md, "Child welfare") as pydantic models."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from connectors.fiks.envelope import LOGG, SAMTYKKE, TILTAK
from simulators.child_welfare.errors import PayloadInvalid, UnknownMessageType
from simulators.common.ids import is_valid_fnr, is_valid_orgnr

__all__ = [
    "KINDS",
    "Evaluering",
    "Kind",
    "LoggMelding",
    "Saksbehandler",
    "SamtykkeEndring",
    "SamtykkeMelding",
    "SamtykkeNy",
    "TiltakEndring",
    "TiltakMelding",
    "TiltakNy",
    "kind_of",
    "parse_payload",
]


def _fnr(value: str) -> str:
    if not is_valid_fnr(value):
        raise ValueError("not a valid fødselsnummer")
    return value


def _orgnr(value: str) -> str:
    if not is_valid_orgnr(value):
        raise ValueError("not a valid organisasjonsnummer")
    return value


Fnr = Annotated[str, AfterValidator(_fnr)]
Orgnr = Annotated[str, AfterValidator(_orgnr)]
Text = Annotated[str, Field(min_length=1)]
Niva = Literal["0", "1", "2", "3"]
LoggStatus = Literal["apen", "lukket"]
TiltakStatus = Literal["planlagt", "iverksatt", "avsluttet"]


class _Model(BaseModel):
    """Norwegian camelCase on the wire; unknown fields are ignored (tolerant reader)."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, extra="ignore", frozen=True
    )

    def wire(self) -> dict[str, Any]:
        """Return the JSON object as sent in a message."""
        return self.model_dump(mode="json", by_alias=True)

    def changes(self) -> dict[str, Any]:
        """Return only the fields the caller set, as wire JSON."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Saksbehandler(_Model):
    """The caseworker responsible for the case."""

    id: Text
    navn: Text


class Evaluering(_Model):
    """An evaluation of a measure."""

    dato: date
    tekst: Text


class LoggMelding(_Model):
    """`no.ks.fiks.bti.logg.v1`: a child and its log; the child's fnr is the business id."""

    fnr: Fnr
    niva: Niva
    saksbehandler: Saksbehandler
    status: LoggStatus = "apen"


class TiltakMelding(_Model):
    """`no.ks.fiks.bti.tiltak.v1`: a measure, identified by `tiltakId`."""

    tiltak_id: Text
    fnr: Fnr
    beskrivelse: Text
    status: TiltakStatus
    oppstart: date | None = None
    evalueres: date | None = None
    evaluering: Evaluering | None = None


class SamtykkeMelding(_Model):
    """`no.ks.fiks.bti.samtykke.v1`: a consent, identified by `samtykkeId`."""

    samtykke_id: Text
    fnr: Fnr
    foresatte: list[Fnr]
    gyldig_til: date
    mottakere: list[Orgnr]
    trukket: bool = False


class TiltakNy(_Model):
    """A measure a caseworker records; the case system assigns `tiltakId`."""

    fnr: Fnr
    beskrivelse: Text
    status: TiltakStatus = "planlagt"
    oppstart: date | None = None
    evalueres: date | None = None
    evaluering: Evaluering | None = None


class TiltakEndring(_Model):
    """A caseworker's change to a measure: only the fields given change."""

    beskrivelse: Text | None = None
    status: TiltakStatus | None = None
    oppstart: date | None = None
    evalueres: date | None = None
    evaluering: Evaluering | None = None


class SamtykkeNy(_Model):
    """A consent a caseworker records; the case system assigns `samtykkeId`."""

    fnr: Fnr
    foresatte: list[Fnr]
    gyldig_til: date
    mottakere: list[Orgnr]
    trukket: bool = False


class SamtykkeEndring(_Model):
    """A caseworker's change to a consent (e.g. `{"trukket": true}`)."""

    foresatte: list[Fnr] | None = None
    gyldig_til: date | None = None
    mottakere: list[Orgnr] | None = None
    trukket: bool | None = None


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of record: its message type, model, business-id field and own-id prefix."""

    name: str
    melding_type: str
    model: type[_Model]
    id_field: str
    prefix: str


KINDS: dict[str, Kind] = {
    "logg": Kind("logg", LOGG, LoggMelding, "fnr", "BV-SAK"),
    "tiltak": Kind("tiltak", TILTAK, TiltakMelding, "tiltakId", "BV-TILTAK"),
    "samtykke": Kind("samtykke", SAMTYKKE, SamtykkeMelding, "samtykkeId", "BV-SAMTYKKE"),
}
_BY_TYPE = {kind.melding_type: kind for kind in KINDS.values()}


def kind_of(melding_type: str) -> Kind:
    """Return the record kind a message type carries, or raise UnknownMessageType."""
    try:
        return _BY_TYPE[melding_type]
    except KeyError:
        raise UnknownMessageType(f"message type {melding_type!r} is not handled") from None


def parse_payload(kind: Kind, data: object) -> dict[str, Any]:
    """Validate a payload of `kind` and return it normalised, or raise PayloadInvalid."""
    try:
        return kind.model.model_validate(data).wire()
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
        raise PayloadInvalid(f"invalid {kind.name} payload: {problems}") from exc
