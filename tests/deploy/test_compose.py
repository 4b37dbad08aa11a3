"""docker/compose.yaml: the Compose Specification schema, then what the schema cannot see."""

from __future__ import annotations

import copy
import json
import re
import subprocess
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from service.cli import _parser
from tests.deploy.conftest import (
    COMPOSE,
    DOCKER,
    ROOT,
    is_stafett_variable,
    settings_from,
    stafett_services,
    tool,
)

SIMULATORS = ("kindergarten", "school", "health-station", "child-welfare", "nav")


def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema vendored in check-jsonschema (vendor.compose-spec)."""
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    return json.loads(vendor.joinpath("compose-spec.json").read_text(encoding="utf-8"))


def without_comments(text: str) -> str:
    """Return YAML text without its comments (none of our values contains ' #')."""
    lines = (re.sub(r"(^|\s)#.*$", "", line) for line in text.splitlines())
    return "\n".join(lines)


def command_of(service: dict[str, Any]) -> list[str]:
    """Return the full command line of a Stafett-image service (entrypoint + command)."""
    entrypoint = service.get("entrypoint", ["stafett"])
    return [*entrypoint, *service.get("command", [])]


# --- schema --------------------------------------------------------------------------------


def test_check_jsonschema_accepts_the_file() -> None:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_file_is_valid_against_the_compose_specification(compose_raw: dict[str, Any]) -> None:
    schema = compose_schema()
    assert schema["title"] == "Compose Specification"
    jsonschema.validate(compose_raw, schema, cls=jsonschema.Draft202012Validator)


def test_the_schema_rejects_a_misspelt_key(compose_raw: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose_raw)
    broken["services"]["api"]["depend_on"] = ["postgres"]
    with pytest.raises(jsonschema.ValidationError, match="depend_on"):
        jsonschema.validate(broken, compose_schema(), cls=jsonschema.Draft202012Validator)


# --- dependencies and start order ----------------------------------------------------------


def test_every_dependency_exists_and_is_started_with_it(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, condition in service.get("depends_on", {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert condition["condition"] in (
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            )
            # a service of the default set must not wait for one that only a profile starts
            if not service.get("profiles"):
                assert not services[target].get("profiles"), f"{name} -> {target}"
            if condition["condition"] == "service_healthy":
                check = services[target].get("healthcheck", {})
                assert check.get("test"), f"{target} has no check"
                assert not check.get("disable"), f"{target} has its check off"


def test_the_migration_runs_once_before_api_and_worker(compose: dict[str, Any]) -> None:
    services = compose["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
    assert services["worker"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["connectors"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_kafka_runs_in_kraft_mode_on_one_node(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "PLAINTEXT://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert "zookeeper" not in json.dumps(kafka).lower()
    for service in stafett_services(compose).values():
        bootstrap = service.get("environment", {}).get("STAFETT_KAFKA_BOOTSTRAP")
        assert bootstrap in (None, "kafka:9092")


def test_postgres_is_the_official_image_with_a_volume(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-\w+)?", postgres["image"])
    assert any(v.split(":")[0] in compose["volumes"] for v in postgres["volumes"])


# --- the Stafett services and their settings -----------------------------------------------


def test_one_image_for_every_stafett_process(compose: dict[str, Any]) -> None:
    services = stafett_services(compose)
    assert {"migrate", "api", "worker", "connectors", *SIMULATORS} <= set(services)
    for service in services.values():
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER / services["api"]["build"]["context"] / "docker/Dockerfile").is_file()


# What each command reads from the environment to do its work (docs/OPERATIONS.md, BUS.md).
NEEDS = {
    ("serve",): {"STAFETT_DATABASE_URL"},
    ("db", "upgrade"): {"STAFETT_DATABASE_URL"},
    ("worker",): {"STAFETT_DATABASE_URL", "STAFETT_KAFKA_BOOTSTRAP"},
    ("connectors", "run"): {"STAFETT_KAFKA_BOOTSTRAP"},
}


@pytest.mark.parametrize("name", ["migrate", "api", "worker", "connectors"])
def test_each_stafett_service_has_the_settings_it_needs(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    env = {k: str(v) for k, v in service.get("environment", {}).items()}
    command = service["command"]
    needed = next(v for k, v in NEEDS.items() if tuple(command[: len(k)]) == k)
    assert needed <= set(env), f"{name} lacks {needed - set(env)}"
    for variable in env:
        if variable.startswith("STAFETT_"):
            assert is_stafett_variable(variable), f"{name}: {variable} is no Stafett setting"
    settings = settings_from({k: v for k, v in env.items() if k.startswith("STAFETT_")})
    if "STAFETT_DATABASE_URL" in needed:
        assert settings.effective_database_url.startswith("postgresql+psycopg://")


def test_api_worker_and_migration_share_one_database(compose: dict[str, Any]) -> None:
    urls = {
        compose["services"][n]["environment"]["STAFETT_DATABASE_URL"]
        for n in ("migrate", "api", "worker")
    }
    assert len(urls) == 1
    url = urlsplit(urls.pop())
    postgres = compose["services"]["postgres"]["environment"]
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert url.username == postgres["POSTGRES_USER"]
    assert url.password == postgres["POSTGRES_PASSWORD"]
    assert url.path == "/" + postgres["POSTGRES_DB"]


def test_every_command_is_one_stafett_understands(compose: dict[str, Any]) -> None:
    for name, service in stafett_services(compose).items():
        command = command_of(service)
        if command[0] == "stafett":
            _parser().parse_args(command[1:])  # exits (SystemExit) on an unknown option
        else:
            assert command[:2] == ["python", "-m"], name
            assert command[2].startswith("simulators."), name


def test_connectors_get_the_file_and_every_variable_it_reads(compose: dict[str, Any]) -> None:
    connectors = compose["services"]["connectors"]
    command = connectors["command"]
    config_path = command[command.index("--config") + 1]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in connectors["volumes"]}
    assert mounts[config_path] == "./connectors.yaml"
    assert (DOCKER / "connectors.yaml").is_file()
    wanted = set(
        re.findall(
            r"\$\{([A-Z0-9_]+)\}", without_comments((DOCKER / "connectors.yaml").read_text())
        )
    )
    assert wanted, "the example reads its secrets from the environment"
    assert wanted <= set(connectors["environment"])
    state_dir = command[command.index("--state-dir") + 1]
    assert any(state_dir.startswith(m) for m in mounts if mounts[m] in {"connectors-state"})
    port = command[command.index("--admin-port") + 1]
    assert command[command.index("--admin-host") + 1] == "0.0.0.0"
    assert any(p.endswith(f":{port}") for p in connectors["ports"])


def test_simulators_only_with_their_profile(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in SIMULATORS:
            assert service["profiles"] == ["simulators"], name
        else:
            assert "profiles" not in service, name


def test_simulator_credentials_match_the_connectors(compose: dict[str, Any]) -> None:
    env = compose["services"]["connectors"]["environment"]
    services = compose["services"]
    pairs = [("kindergarten", "--api-key", "BARNEHAGE_API_KEY"),
             ("school", "--client-secret", "SKOLE_CLIENT_SECRET"),
             ("health-station", "--token", "HELSESTASJON_TOKEN")]  # fmt: skip
    for simulator, option, variable in pairs:
        command = services[simulator]["command"]
        assert command[command.index(option) + 1] == env[variable], simulator


# --- ports, volumes, secrets ---------------------------------------------------------------


def test_published_ports_are_local_and_do_not_collide(compose: dict[str, Any]) -> None:
    seen: dict[str, str] = {}
    for name, service in compose["services"].items():
        for mapping in service.get("ports", []):
            host_ip, host_port, container_port = str(mapping).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {mapping} beyond this machine"
            assert host_port not in seen, f"{name} and {seen.get(host_port)} both use {host_port}"
            seen[host_port] = name
            command = service.get("command", [])
            if "--port" in command:
                assert command[command.index("--port") + 1] == container_port, name


def test_writable_folders_are_the_images_own(compose: dict[str, Any]) -> None:
    # Named volumes take the owner of the folder they are mounted on: the image's user owns
    # /var/lib/stafett only, so every Stafett-image volume and data folder must be there.
    for name, service in stafett_services(compose).items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source in compose["volumes"]:
                assert target == "/var/lib/stafett", f"{name}: {volume}"
        command = service.get("command", [])
        for option in ("--data", "--state-dir"):
            if option in command:
                assert command[command.index(option) + 1].startswith("/var/lib/stafett"), name


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$|API_KEY")
SECRET_OPTION = {"--api-key", "--client-secret", "--token"}


def test_no_hard_coded_secrets(compose_raw: dict[str, Any]) -> None:
    """Secrets come from the environment or docker/.env; fallbacks are marked local-dev."""
    found = 0
    for name, service in compose_raw["services"].items():
        values = [
            (k, str(v)) for k, v in service.get("environment", {}).items() if SECRET_NAME.search(k)
        ]
        command = service.get("command", [])
        values += [(o, str(command[i + 1])) for i, o in enumerate(command) if o in SECRET_OPTION]
        url = service.get("environment", {}).get("STAFETT_DATABASE_URL")
        if url:
            values.append(("STAFETT_DATABASE_URL", re.sub(r"^.*://[^:]+:(.*)@.*$", r"\1", url)))
        for key, value in values:
            found += 1
            match = re.fullmatch(r"\$\{([A-Z0-9_]+)(?::-(.*))?\}", value)
            assert match, f"{name}: {key} is written into the file"
            default = match.group(2)
            assert default is None or "local-dev" in default, f"{name}: {key} default {default!r}"
    assert found >= 8


def test_the_env_example_names_every_variable(compose_raw: dict[str, Any]) -> None:
    used = set(
        re.findall(r"\$\{([A-Z0-9_]+)", without_comments(COMPOSE.read_text(encoding="utf-8")))
    )
    example = (DOCKER / "env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^#?\s*([A-Z0-9_]+)=", example, flags=re.MULTILINE))
    assert used <= documented, f"not in docker/env.example: {sorted(used - documented)}"
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def test_the_compose_file_is_the_one_the_docs_describe() -> None:
    docs = (ROOT / "docs" / "DEPLOYMENT.md").read_text(encoding="utf-8")
    assert "docker compose -f docker/compose.yaml up" in docs
    assert "--profile simulators" in docs
    assert "docker build -f docker/Dockerfile" in docs
    assert yaml.safe_load(COMPOSE.read_text())["name"] == "stafett"
