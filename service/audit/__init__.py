"""The audit trail: every consent decision, permit and deny, as an IHE BALP-shaped AuditEvent.

The trail is tamper-evident: a sealer chains and signs every stored AuditEvent (chain.py),
`stafett audit verify` checks it (verify.py) and `redact` records a lawful deletion.
"""

from service.audit.chain import AuditSealer, redact
from service.audit.events import AuditRecord, build_audit_event
from service.audit.trail import AuditTrail, AuditTrailStats, AuditUnavailable

__all__ = [
    "AuditRecord",
    "AuditSealer",
    "AuditTrail",
    "AuditTrailStats",
    "AuditUnavailable",
    "build_audit_event",
    "redact",
]
