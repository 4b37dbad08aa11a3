"""The simulator's control surface under `/_sim`: store, faults and the agency's caseworker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from simulators.child_welfare.deps import AgencyDep, MailboxDep
from simulators.child_welfare.mailbox import Faults
from simulators.child_welfare.payloads import (
    LoggMelding,
    SamtykkeEndring,
    SamtykkeNy,
    TiltakEndring,
    TiltakNy,
)

__all__ = ["router"]

router = APIRouter(prefix="/_sim", tags=["simulator"])


class FaultsIn(BaseModel):
    """`POST /_sim/faults`: shares to drop and duplicate; a seed restarts the RNG."""

    drop_rate: float = Field(0.0, ge=0.0, le=1.0)
    duplicate_rate: float = Field(0.0, ge=0.0, le=1.0)
    seed: int | None = None


@router.get("/store")
def store(mailbox: MailboxDep) -> dict[str, Any]:
    """Return the message service's accounts, queues, counters and faults."""
    return mailbox.snapshot()


@router.get("/faults")
def get_faults(mailbox: MailboxDep) -> dict[str, float]:
    """Return the fault settings in force."""
    return {"drop_rate": mailbox.faults.drop_rate, "duplicate_rate": mailbox.faults.duplicate_rate}


@router.post("/faults")
def set_faults(body: FaultsIn, mailbox: MailboxDep) -> dict[str, float]:
    """Set the drop and duplicate rates of messages accepted from now on."""
    mailbox.set_faults(Faults(body.drop_rate, body.duplicate_rate), seed=body.seed)
    return get_faults(mailbox)


@router.post("/tick")
def tick(agency: AgencyDep) -> dict[str, Any]:
    """Run one round of the agency (inbox, then due sends) and return its store."""
    agency.tick()
    return agency.snapshot()


@router.get("/sak")
def cases(agency: AgencyDep) -> dict[str, Any]:
    """Return the agency's store: logs, measures, consents, outbox and handled messages."""
    return agency.snapshot()


@router.post("/sak/logg")
def save_log(body: LoggMelding, agency: AgencyDep) -> dict[str, Any]:
    """Create or update the log of a child (keyed by fnr) and send it to Stafett."""
    return agency.record("logg", body.wire())


@router.post("/sak/tiltak", status_code=201)
def create_measure(body: TiltakNy, agency: AgencyDep) -> dict[str, Any]:
    """Create a measure with the agency's own id and send it to Stafett."""
    return agency.record("tiltak", body.wire())


@router.post("/sak/tiltak/{tiltak_id}")
def update_measure(tiltak_id: str, body: TiltakEndring, agency: AgencyDep) -> dict[str, Any]:
    """Change the given fields of a measure and send the new version to Stafett."""
    return agency.record("tiltak", body.changes(), business_id=tiltak_id)


@router.post("/sak/samtykke", status_code=201)
def create_consent(body: SamtykkeNy, agency: AgencyDep) -> dict[str, Any]:
    """Record a consent with the agency's own id and send it to Stafett."""
    return agency.record("samtykke", body.wire())


@router.post("/sak/samtykke/{samtykke_id}")
def update_consent(samtykke_id: str, body: SamtykkeEndring, agency: AgencyDep) -> dict[str, Any]:
    """Change the given fields of a consent (e.g. withdraw it) and send it to Stafett."""
    return agency.record("samtykke", body.changes(), business_id=samtykke_id)
