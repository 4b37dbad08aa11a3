"""The audit trail: every consent decision, permit and deny, as an IHE BALP-shaped AuditEvent."""

from service.audit.events import AuditRecord, build_audit_event
from service.audit.trail import AuditTrail, AuditTrailStats, AuditUnavailable

__all__ = [
    "AuditRecord",
    "AuditTrail",
    "AuditTrailStats",
    "AuditUnavailable",
    "build_audit_event",
]
