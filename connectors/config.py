"""`connectors.yaml`: which connectors run, against which systems, with which secrets."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bus import topics

__all__ = ["ConnectorConfig", "ConnectorsFile", "RetryPolicy", "load_config"]

_ENV = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class RetryPolicy(BaseModel):
    """How often and how patiently a failed record or poll is retried."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(default=6, ge=1, description="Tries per record before the DLQ.")
    backoff_s: float = Field(default=0.5, gt=0, description="First wait; doubles each try.")
    max_backoff_s: float = Field(default=30.0, gt=0, description="Longest wait between tries.")


class ConnectorConfig(BaseModel):
    """One connector: a source (vendor → Stafett) or sink (Stafett → vendor)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    kind: Literal["source", "sink"]
    system: Literal[
        "kindergarten", "school", "school-csv", "health_station", "child_welfare", "nav"
    ]
    organization: str = Field(description="Org.nr of the service whose system this is.")
    operator: str = Field(description="Org.nr of the legal entity operating the system.")
    source_system: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Record-id slug.")
    poll_interval_s: float = Field(default=5.0, gt=0)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("organization", "operator")
    @classmethod
    def _orgnr(cls, value: str) -> str:
        return topics.validate_orgnr(value)


class ConnectorsFile(BaseModel):
    """The whole file."""

    model_config = ConfigDict(extra="forbid")

    connectors: list[ConnectorConfig]

    @field_validator("connectors")
    @classmethod
    def _unique(cls, value: list[ConnectorConfig]) -> list[ConnectorConfig]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"connector names must be unique: {', '.join(twice)}")
        return value


def _expand(value: Any) -> Any:
    # ${VAR} or ${VAR:-default}: secrets stay in the environment, not in the file
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name, default)
            if found is None:
                raise ValueError(f"environment variable {name} is not set")
            return found

        return _ENV.sub(replace, value)
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v) for v in value]
    return value


def load_config(path: Path) -> ConnectorsFile:
    """Read and check connectors.yaml; raise ValueError naming the file and the problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({exc})") from exc
    try:
        return ConnectorsFile.model_validate(_expand(raw))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{path}: {problems}") from exc
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
