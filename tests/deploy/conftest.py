"""Shared fixtures of the deployment checks: the parsed Dockerfile, compose file and manifests."""

from __future__ import annotations

import copy
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings
from tests.deploy.kustomize import render

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
COMPOSE = DOCKER / "compose.yaml"
K8S = ROOT / "k8s"
OVERLAY = K8S / "overlays" / "example"
SCHEMAS = Path(__file__).resolve().parent / "schemas"

# Read with os.environ by `stafett connectors run` (connectors/cli.py), not a Settings field.
EXTRA_STAFETT_VARIABLES: frozenset[str] = frozenset()  # every variable is a Settings field

# Stand-ins for what the Secrets hold, to check that the settings are accepted as a whole.
SECRET_PLACEHOLDERS = {
    "STAFETT_DATABASE_URL": "postgresql://stafett:placeholder@db.example.no:5432/stafett",
    "STAFETT_KAFKA_CLIENT_CONFIG": '{"security_protocol": "SASL_SSL"}',
}


def tool(name: str) -> str:
    """Return the path of a console script installed with the test extra."""
    found = shutil.which(
        name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    )
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """Return this process's environment without STAFETT_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STAFETT_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


@contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set exactly these STAFETT_* variables (and no others) for the block."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("STAFETT_")]:
            del os.environ[key]
        os.environ.update(variables)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def is_stafett_variable(name: str) -> bool:
    """Whether a STAFETT_* variable is one Stafett reads."""
    field = name.removeprefix("STAFETT_").lower()
    return name.startswith("STAFETT_") and (
        field in Settings.model_fields or name in EXTRA_STAFETT_VARIABLES
    )


def settings_from(variables: Mapping[str, str]) -> Settings:
    """Build Settings the way a process with exactly these variables would."""
    with environment(variables):
        return Settings()


# --- docker compose ------------------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Resolve ${VAR}, ${VAR:-default}, ${VAR-default} and $$ as docker compose does."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$$":
                return "$"
            name = match.group(1) or match.group(4)
            operator, default = match.group(2), match.group(3)
            if operator == ":-":
                return env.get(name) or default
            if operator == "-":
                return env.get(name, default)
            return env.get(name, "")

        return _INTERPOLATION.sub(replace, value)
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


@pytest.fixture(scope="session")
def compose_raw() -> dict[str, Any]:
    """The compose file as written (YAML anchors and merge keys resolved)."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def compose(compose_raw: dict[str, Any]) -> dict[str, Any]:
    """The compose file as docker compose runs it with no docker/.env: the local dev defaults."""
    return interpolate(copy.deepcopy(compose_raw), {})


def stafett_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Return the services that run the Stafett image."""
    image = compose["services"]["api"]["image"]
    return {name: s for name, s in compose["services"].items() if s.get("image") == image}


# --- kubernetes ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rendered_overlay() -> list[dict[str, Any]]:
    """The example overlay as `kustomize build k8s/overlays/example` prints it."""
    return render(OVERLAY)


@pytest.fixture(scope="session")
def rendered_base() -> list[dict[str, Any]]:
    """The base as `kustomize build k8s/base` prints it."""
    return render(K8S / "base")


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """Return the resources of one kind."""
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """Return the one resource of this kind and name."""
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    """Return the pod spec of a Deployment or Job."""
    return doc["spec"]["template"]["spec"]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return every Deployment and Job."""
    return [d for d in docs if d["kind"] in ("Deployment", "Job")]


def container_env(docs: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """Return a container's environment: ConfigMaps (envFrom), values, stand-ins for secrets."""
    env: dict[str, str] = {}
    configmaps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(docs, "ConfigMap")}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"{container['name']}: envFrom only from ConfigMaps"
        env.update(configmaps[source["configMapRef"]["name"]])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            env[item["name"]] = configmaps[ref["configMapKeyRef"]["name"]][
                ref["configMapKeyRef"]["key"]
            ]
        elif "secretKeyRef" in ref:
            env[item["name"]] = SECRET_PLACEHOLDERS.get(item["name"], "secret-placeholder")
    return env
