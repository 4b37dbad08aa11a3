"""Topic names of the Stafett bus, in one place.

Every message is keyed by the child's Patient id (the log's subject), so one child's events
stay in order within a topic. Outbound topics are per receiving organisation, named by its
organisation number (Enhetsregisteret), e.g. `stafett.out.974760673`.
"""

from __future__ import annotations

__all__ = [
    "ALL_FIXED",
    "CHANGES",
    "DEAD_LETTER",
    "EVENTS",
    "FAMILY",
    "INBOUND",
    "OUTBOUND_PREFIX",
    "is_outbound",
    "outbound",
    "validate_orgnr",
]

INBOUND = "stafett.inbound"
"""Messages from source connectors and vendor systems, waiting for the ingest worker."""

CHANGES = "stafett.changes"
"""Change events relayed from the outbox after the resource's transaction committed."""

EVENTS = "stafett.events"
"""Time-based events, such as a measure's evaluation date falling due."""

FAMILY = "stafett.family"
"""Events for the family's notification services (SMS, e-mail, Helsenorge-style inbox)."""

DEAD_LETTER = "stafett.dlq"
"""Messages that could not be processed, with the reason in a header."""

OUTBOUND_PREFIX = "stafett.out."

ALL_FIXED: tuple[str, ...] = (INBOUND, CHANGES, EVENTS, FAMILY, DEAD_LETTER)
"""The topics every deployment has; outbound topics come and go with organisations."""

_ORGNR_WEIGHTS = (3, 2, 7, 6, 5, 4, 3, 2)


def validate_orgnr(orgnr: str) -> str:
    """Return `orgnr` if it is a valid Norwegian organisation number, else raise ValueError."""
    if len(orgnr) != 9 or not orgnr.isascii() or not orgnr.isdigit():
        raise ValueError(f"organisation number must be 9 digits, got {orgnr!r}")
    remainder = sum(int(d) * w for d, w in zip(orgnr, _ORGNR_WEIGHTS, strict=False)) % 11
    check = 0 if remainder == 0 else 11 - remainder
    # a remainder of 1 gives check digit 10: Brønnøysund never issues such numbers
    if check == 10 or check != int(orgnr[8]):
        raise ValueError(f"organisation number {orgnr!r} has a wrong mod-11 check digit")
    return orgnr


def outbound(orgnr: str) -> str:
    """Return the outbound topic of the organisation with number `orgnr`."""
    return OUTBOUND_PREFIX + validate_orgnr(orgnr)


def is_outbound(topic: str) -> str | None:
    """Return the organisation number if `topic` is a valid outbound topic, else None."""
    if not topic.startswith(OUTBOUND_PREFIX):
        return None
    orgnr = topic[len(OUTBOUND_PREFIX) :]
    try:
        return validate_orgnr(orgnr)
    except ValueError:
        return None
