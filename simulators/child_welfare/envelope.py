"""The message envelope (shape, sealing, opening): moved to `connectors.fiks.envelope`.

Re-exported here so that `simulators.child_welfare.envelope` keeps working with the very
code Stafett's connector uses.
"""

from __future__ import annotations

from connectors.fiks.envelope import (
    FEILET,
    LOGG,
    MOTTATT,
    RECEIPT_TYPES,
    SAMTYKKE,
    TILTAK,
    Envelope,
    open_envelope,
    seal,
    valid_account_id,
    verify_envelope,
)

__all__ = [
    "FEILET",
    "LOGG",
    "MOTTATT",
    "RECEIPT_TYPES",
    "SAMTYKKE",
    "TILTAK",
    "Envelope",
    "open_envelope",
    "seal",
    "valid_account_id",
    "verify_envelope",
]
