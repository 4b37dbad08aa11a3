"""The data lifecycle of a child's log: closing, archiving, deletion after retention, access.

- `closing`: `CarePlan/{id}/$close`, BTI outcome a as one transaction; starts the retention clock.
- `archive`: the self-contained export (FHIR Bundle, PDF summary, SHA-256 manifest).
- `purge`: deletion of everything about a child past retention, with a deletion record.
- `everything`: `Patient/{id}/$everything`, the family's right of access, through the repository.
See docs/security/data-lifecycle.md.
"""

from service.lifecycle.archive import ArchiveResult, archive_child, find_patient
from service.lifecycle.closing import close_log
from service.lifecycle.everything import EverythingPage, everything, everything_bundle
from service.lifecycle.purge import Purger, PurgeReport

__all__ = [
    "ArchiveResult",
    "EverythingPage",
    "PurgeReport",
    "Purger",
    "archive_child",
    "close_log",
    "everything",
    "everything_bundle",
    "find_patient",
]
