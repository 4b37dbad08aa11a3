"""Domain errors the simulators raise; each app turns them into its own error format."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Conflict", "Invalid", "NotFound", "PreconditionFailed", "Problem", "SimError"]


@dataclass(frozen=True)
class Problem:
    """One validation problem: the field (dotted path) and a message for people."""

    field: str
    message: str


class SimError(Exception):
    """Base of the simulators' domain errors."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SimError):
    """The record does not exist."""


class Conflict(SimError):
    """The write contradicts the record's state (duplicate, hidden, ...)."""


class PreconditionFailed(SimError):
    """If-Match named another version than the current one."""


class Invalid(SimError):
    """The body failed validation; `problems` says where and why."""

    def __init__(self, message: str, problems: list[Problem]) -> None:
        super().__init__(message)
        self.problems = problems
