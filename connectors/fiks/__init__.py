"""A client of a Fiks IO-style message service: signed, encrypted envelopes with receipts.

`FiksClient` sends and receives as one account; `crypto` and `envelope` hold the hybrid
encryption and signatures (docs/vendor-formats.md, "Child welfare"). The child-welfare
connector uses it, and so does the simulator of the message service (`simulators.child_welfare`).
"""

from connectors.fiks.client import (
    DecryptedMessage,
    FiksClient,
    ReceivedBatch,
    RejectedMessage,
    register_account,
)
from connectors.fiks.crypto import (
    generate_private_key,
    load_or_create_private_key,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_pem,
)
from connectors.fiks.envelope import (
    FEILET,
    LOGG,
    MOTTATT,
    RECEIPT_TYPES,
    SAMTYKKE,
    TILTAK,
    Envelope,
)
from connectors.fiks.errors import FiksError, FiksRequestFailed

__all__ = [
    "FEILET",
    "LOGG",
    "MOTTATT",
    "RECEIPT_TYPES",
    "SAMTYKKE",
    "TILTAK",
    "DecryptedMessage",
    "Envelope",
    "FiksClient",
    "FiksError",
    "FiksRequestFailed",
    "ReceivedBatch",
    "RejectedMessage",
    "generate_private_key",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "register_account",
]
