"""The message service's API under `/fiks`: accounts, send, inbox and acknowledgement."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from connectors.fiks.envelope import Envelope
from simulators.child_welfare.deps import CallerDep, MailboxDep
from simulators.child_welfare.errors import Forbidden

__all__ = ["router"]

router = APIRouter(prefix="/fiks", tags=["fiks"])


class AccountIn(BaseModel):
    """`POST /fiks/kontoer`: an account id, its public key and optionally a chosen token."""

    model_config = ConfigDict(validate_by_name=True)

    konto: str
    offentlig_nokkel: str = Field(alias="offentligNokkel")
    token: str | None = None


@router.post("/kontoer", status_code=201)
def register_account(
    body: AccountIn,
    mailbox: MailboxDep,
    response: Response,
    x_fiks_token: Annotated[str | None, Header()] = None,
) -> dict[str, str]:
    """Register an account (201), or replace its key with its token presented (200)."""
    token, created = mailbox.register(
        account=body.konto,
        public_key_pem=body.offentlig_nokkel,
        token=body.token,
        presented_token=x_fiks_token,
    )
    if not created:
        response.status_code = 200
    return {"konto": body.konto, "token": token}


@router.get("/kontoer/{konto}/offentlig-nokkel")
def public_key(konto: str, mailbox: MailboxDep) -> dict[str, str]:
    """Return an account's public key as PEM."""
    return {"konto": konto, "offentligNokkel": mailbox.public_key_pem(konto)}


@router.post("/send")
def send(
    envelope: Annotated[Any, Body()], caller: CallerDep, mailbox: MailboxDep
) -> dict[str, str]:
    """Accept a signed, encrypted envelope; a dropped message gets the same answer."""
    parsed = Envelope.from_json(envelope)
    outcome = mailbox.send(sender=caller, envelope=parsed)
    return {"meldingId": outcome.melding_id}


@router.get("/innboks/{konto}")
def inbox(
    konto: str,
    caller: CallerDep,
    mailbox: MailboxDep,
    maks: Annotated[int, Query(ge=1, le=100)] = 10,
) -> dict[str, list[dict[str, Any]]]:
    """Lease and return up to `maks` of the account's messages."""
    _same(konto, caller)
    messages = mailbox.receive(account=konto, max_messages=maks)
    return {"meldinger": [message.to_json() for message in messages]}


@router.post("/innboks/{konto}/{melding_id}/ack")
def ack(konto: str, melding_id: str, caller: CallerDep, mailbox: MailboxDep) -> dict[str, Any]:
    """Remove a received message (every received copy) from the inbox."""
    _same(konto, caller)
    removed = mailbox.ack(account=konto, melding_id=melding_id)
    return {"meldingId": melding_id, "fjernet": removed}


def _same(konto: str, caller: str) -> None:
    if konto != caller:
        raise Forbidden(f"the token belongs to {caller!r}, not {konto!r}")
