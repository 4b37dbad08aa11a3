"""FastAPI dependencies of the simulator, each an `Annotated` alias."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Header, Request

from simulators.child_welfare.agency import Agency
from simulators.child_welfare.mailbox import MessageService

__all__ = ["AgencyDep", "CallerDep", "MailboxDep"]


def get_mailbox(request: Request) -> MessageService:
    """Return the message service built by the lifespan."""
    return cast("MessageService", request.app.state.mailbox)


def get_agency(request: Request) -> Agency:
    """Return the agency built by the lifespan."""
    return cast("Agency", request.app.state.agency)


MailboxDep = Annotated[MessageService, Depends(get_mailbox)]
AgencyDep = Annotated[Agency, Depends(get_agency)]


def get_caller(mailbox: MailboxDep, x_fiks_token: Annotated[str | None, Header()] = None) -> str:
    """Return the account whose `X-Fiks-Token` the request carries, or raise NotAuthenticated."""
    return mailbox.account_for_token(x_fiks_token)


CallerDep = Annotated[str, Depends(get_caller)]
