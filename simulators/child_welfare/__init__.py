"""Child welfare (barnevern): a Fiks IO-style message service and the agency's system.

See docs/vendor-formats.md ("Child welfare") and this package's README.md. Run it with
`python -m simulators.child_welfare --port 8104`. The client (and the crypto both sides use)
lives in `connectors.fiks`; it is re-exported here for the simulator's users and tests.
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
from connectors.fiks.envelope import FEILET, LOGG, MOTTATT, SAMTYKKE, TILTAK, Envelope
from simulators.child_welfare.errors import FiksError
from simulators.child_welfare.service import create_app
from simulators.child_welfare.settings import Settings

__all__ = [
    "FEILET",
    "LOGG",
    "MOTTATT",
    "SAMTYKKE",
    "TILTAK",
    "DecryptedMessage",
    "Envelope",
    "FiksClient",
    "FiksError",
    "ReceivedBatch",
    "RejectedMessage",
    "Settings",
    "create_app",
    "generate_private_key",
    "load_or_create_private_key",
    "load_private_key",
    "load_public_key",
    "private_key_to_pem",
    "public_key_to_pem",
    "register_account",
]
