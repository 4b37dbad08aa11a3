"""docker/Dockerfile: hadolint, the image's shape, the build context and what the wheel ships."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deploy.conftest import DOCKER, DOCKERFILE, ROOT, clean_env, tool

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
IGNORE_FILE = DOCKER / "Dockerfile.dockerignore"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Return the global ARG defaults and the stages (instruction, arguments) of a Dockerfile."""
    logical: list[str] = []
    current = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not current):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            parts = args.split()
            stages.append(Stage(parts[0], parts[2] if len(parts) > 2 else None))
        elif not stages and keyword == "ARG":
            name, _, default = args.partition("=")
            global_args[name] = default
        else:
            stages[-1].instructions.append((keyword, args))
    return global_args, stages


GLOBAL_ARGS, STAGES = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))
RUNTIME = STAGES[-1]


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_really_checking(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n")
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image
    assert "DL3013" in result.stdout  # unpinned pip install


def test_multi_stage_with_a_slim_python_runtime() -> None:
    assert len(STAGES) >= 2, "build wheels in a builder stage"
    python = GLOBAL_ARGS["PYTHON_VERSION"]
    required = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("."))) >= tuple(map(int, required.split(".")))
    assert RUNTIME.base == "python:${PYTHON_VERSION}-slim"
    assert STAGES[0].name == "build"


def test_the_runtime_installs_the_wheels_without_build_tools_or_cache() -> None:
    runs = " ".join(RUNTIME.all("RUN"))
    for build_tool in ("apt-get", "gcc", "build-essential", "apk ", "pip wheel"):
        assert build_tool not in runs, build_tool
    installs = [r for r in RUNTIME.all("RUN") if "pip install" in r]
    assert installs, "the runtime installs the built wheels"
    for command in installs:
        assert "--no-cache-dir" in command
        assert "--no-index" in command, "install only the wheels built in the build stage"
        assert "from=build" in command
    for stage in STAGES:
        for command in stage.all("RUN"):
            if re.search(r"pip (install|wheel)", command):
                assert "--no-cache-dir" in command, command


def test_the_image_version_matches_the_project() -> None:
    args = dict(a.partition("=")[::2] for a in RUNTIME.all("ARG"))
    assert args["VERSION"] == PYPROJECT["project"]["version"]


def test_runs_as_a_fixed_unprivileged_user() -> None:
    user = RUNTIME.all("USER")[-1]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), "a numeric UID, so runAsNonRoot can verify it"
    assert int(uid) >= 10000
    assert gid.isdigit()
    assert int(gid) != 0
    created = " ".join(RUNTIME.all("RUN"))
    assert f"--uid {uid}" in created
    assert f"--gid {gid}" in created


def test_one_entrypoint_for_every_process() -> None:
    assert json.loads(RUNTIME.all("ENTRYPOINT")[-1]) == ["stafett"]
    assert json.loads(RUNTIME.all("CMD")[-1]) == [
        "serve", "--host", "0.0.0.0", "--port", "8080", "--workers", "2",
    ]  # fmt: skip
    assert "8080" in RUNTIME.all("EXPOSE")[-1].split()


def test_healthcheck_uses_python_against_healthz() -> None:
    healthcheck = RUNTIME.all("HEALTHCHECK")[-1]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert "http://127.0.0.1:8080/healthz" in command[2]
    assert "curl" not in healthcheck
    assert "wget" not in healthcheck


def test_oci_labels() -> None:
    labels = " ".join(RUNTIME.all("LABEL"))
    for key in ("title", "description", "version", "revision", "created", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert f'licenses="{PYPROJECT["project"]["license"]}"' in labels


def test_every_package_is_copied_into_the_build() -> None:
    copied = {
        part.rstrip("/")
        for args in STAGES[0].all("COPY")
        if not args.startswith("--from")
        for part in args.split()[:-1]
    }
    packages = {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, f"missing COPY for {sorted(packages - copied)}"
    assert PYPROJECT["project"]["readme"] in copied, "the build reads the readme"


# --- the build context ---------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in IGNORE_FILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**", i):
                regex += ".*"
                i += 2
                if pattern.startswith("/", i):
                    regex += "/?"  # **/x also matches x at the top
                    i += 1
                continue
            char = pattern[i]
            regex += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            if char == "[":
                end = pattern.index("]", i)
                regex = regex[: -len(re.escape(char))] + pattern[i : end + 1]
                i = end
            i += 1
        rules.append((include, re.compile(regex + r"\Z")))
    return rules


def is_sent(path: str) -> bool:
    """Whether a path (relative to the repository root) is part of the build context.

    Docker's rules: the last matching pattern decides, and a pattern that matches a parent
    folder matches everything under it.
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    sent = True
    for include, regex in _ignore_rules():
        if any(regex.match(c) for c in candidates):
            sent = include
    return sent


def test_the_ignore_file_sits_where_buildkit_reads_it() -> None:
    # `docker build -f docker/Dockerfile .` reads docker/Dockerfile.dockerignore; a
    # docker/.dockerignore would be ignored, the context being the repository root.
    assert IGNORE_FILE.is_file()
    assert not (DOCKER / ".dockerignore").exists()


@pytest.mark.parametrize(
    "path",
    [".venv/bin/python", ".git/config", ".stafett/stafett.db", "docker/.env", "tests/conftest.py",
     "service/__pycache__/cli.cpython-311.pyc", "stafett.egg-info/PKG-INFO", "k8s/base/api.yaml"],
)  # fmt: skip
def test_local_state_and_secrets_stay_out_of_the_context(path: str) -> None:
    assert not is_sent(path)


def test_everything_the_dockerfile_copies_is_in_the_context() -> None:
    sources = [
        part
        for stage in STAGES
        for args in stage.all("COPY")
        if not args.startswith("--from")
        for part in args.split()[:-1]
    ]
    assert sources
    for source in sources:
        target = ROOT / source
        files = [target] if target.is_file() else [p for p in target.rglob("*") if p.is_file()]
        files = [f for f in files if "__pycache__" not in f.parts]
        assert files, source
        for file in files:
            assert is_sent(file.relative_to(ROOT).as_posix()), file


# --- what the wheel (and so the image) ships -----------------------------------------------


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """Build the project's wheel as the build stage does, from a copy (no build/ in the repo)."""
    source = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    out = tmp_path_factory.mktemp("wheels")
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    result = subprocess.run(
        [*pip_wheel, "--no-cache-dir", "--wheel-dir", str(out), str(source)],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (built,) = out.glob("stafett-*.whl")
    return zipfile.ZipFile(built)


def _data_files(package: str) -> list[str]:
    skip_suffixes = {".py", ".pyc", ".md"}
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / package).rglob("*")
        if p.is_file() and p.suffix not in skip_suffixes and "__pycache__" not in p.parts
    )


@pytest.mark.parametrize(
    "package",
    [p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]],
)
def test_the_wheel_ships_every_data_file(wheel: zipfile.ZipFile, package: str) -> None:
    names = set(wheel.namelist())
    missing = [f for f in _data_files(package) if f not in names]
    assert not missing, f"not in the wheel (so not in the image): {missing}"
