"""Fixtures of the mapping tests: one engine over the packaged specs, shared by the session."""

from __future__ import annotations

import pytest

from mapping import MappingEngine


@pytest.fixture(scope="session")
def engine() -> MappingEngine:
    """Return the engine with the packaged specs (loaded and compiled once)."""
    return MappingEngine.from_directory()
