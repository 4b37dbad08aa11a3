"""Errors of the mapping package: one hierarchy, so callers can catch `MappingProblem`."""

from __future__ import annotations

__all__ = ["MappingError", "MappingProblem", "SpecError"]


class MappingProblem(Exception):
    """Base class of every error raised by the mapping package."""


class SpecError(MappingProblem):
    """A spec file is broken; the message names the file and the problem."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"{file}: {problem}")
        self.file = file
        self.problem = problem


class MappingError(MappingProblem, ValueError):
    """One record could not be mapped: which system, spec, record and field, and why.

    `path` is a FHIRPath-like location (`Task.status`) on the FHIR side or a JSON path
    (`evalueringer[0].dato`) on the vendor side; it is None when no single field is to blame.
    """

    def __init__(
        self,
        message: str,
        *,
        system: str,
        spec: str | None = None,
        record_id: str | None = None,
        path: str | None = None,
        index: int | None = None,
    ) -> None:
        self.message = message
        self.system = system
        self.spec = spec
        self.record_id = record_id
        self.path = path
        self.index = index
        super().__init__(self._render())

    def _render(self) -> str:
        where = [self.system]
        if self.spec:
            where.append(self.spec)
        if self.record_id is not None:
            where.append(f"record {self.record_id}")
        elif self.index is not None:
            where.append(f"record #{self.index}")
        head = " ".join(where)
        return f"{head}: {self.path}: {self.message}" if self.path else f"{head}: {self.message}"

    def with_index(self, index: int) -> MappingError:
        """Return a copy that also names the record's position in its batch."""
        return MappingError(
            self.message,
            system=self.system,
            spec=self.spec,
            record_id=self.record_id,
            path=self.path,
            index=index,
        )

    def as_dict(self) -> dict[str, str | int | None]:
        """Return the error as a JSON-ready dict (for dead letters and logs)."""
        return {
            "system": self.system,
            "spec": self.spec,
            "record_id": self.record_id,
            "path": self.path,
            "message": self.message,
            "index": self.index,
        }
