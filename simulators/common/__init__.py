"""Helpers shared by the simulators: JSON store, fault injection, clock, ids, running."""

from simulators.common.clock import OSLO, Clock
from simulators.common.errors import (
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    Problem,
    SimError,
)
from simulators.common.faults import FaultConfig, FaultMiddleware, Faults, fault_router
from simulators.common.ids import is_valid_fnr, is_valid_orgnr
from simulators.common.server import base_parser, free_port, run, running
from simulators.common.store import JsonStore
from simulators.common.validation import Checker

__all__ = [
    "OSLO",
    "Checker",
    "Clock",
    "Conflict",
    "FaultConfig",
    "FaultMiddleware",
    "Faults",
    "Invalid",
    "JsonStore",
    "NotFound",
    "PreconditionFailed",
    "Problem",
    "SimError",
    "base_parser",
    "fault_router",
    "free_port",
    "is_valid_fnr",
    "is_valid_orgnr",
    "run",
    "running",
]
