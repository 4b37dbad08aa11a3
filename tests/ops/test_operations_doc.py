"""The operator guide and the runbook stay true to the code.

OPERATIONS.md has the sections the operators asked for and a settings table generated from
`Settings`; RUNBOOK.md explains every metric the code exports and its alerts use only those;
every `stafett` command the two pages show is one the CLI accepts.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from service.cli import _parser
from service.config import Settings
from tests.ops.settings_table import BEGIN, END, render_table

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = (ROOT / "docs" / "OPERATIONS.md").read_text()
RUNBOOK = (ROOT / "docs" / "RUNBOOK.md").read_text()
ENV_ONLY = {"STAFETT_WEB_LOGIN_URL"}  # read from the environment directly, not a setting


def _headings(text: str) -> list[str]:
    return [line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.parametrize(
    "topic",
    [
        "install",
        "migrations",
        "upgrades",
        "backup",
        "restore",
        "scaling",
        "rotating keys",
        "trusted issuers",
        "HelseID",
        "ID-porten",
        "Maskinporten",
        "scope aliases",
        "settings",
    ],
)
def test_the_operator_guide_has_a_section_on(topic: str) -> None:
    assert any(topic.lower() in heading.lower() for heading in _headings(OPERATIONS)), topic


def test_the_settings_table_is_generated_from_the_settings() -> None:
    start = OPERATIONS.index(BEGIN) + len(BEGIN)
    table = OPERATIONS[start : OPERATIONS.index(END)].strip()
    assert table == render_table(), "run `python -m tests.ops.settings_table` and commit"


def test_the_guide_names_the_test_environments_of_the_identity_providers() -> None:
    for issuer, jwks in (
        ("https://helseid-sts.test.nhn.no", "/.well-known/openid-configuration/jwks"),
        ("https://test.idporten.no", "/jwks.json"),
        ("https://test.maskinporten.no/", "jwk"),
    ):
        assert f'"{issuer}": "{issuer.rstrip("/")}/{jwks.lstrip("/")}"' in OPERATIONS, issuer
    for claim in (
        "helseid://claims/hpr/hpr_number",
        "helseid://claims/identity/pid",
        "orgnr_child",
        "orgnr_parent",
        "`pid`",
        "`consumer`",
        "`supplier`",
        "`acr`",
        "STAFETT_ROLE_CLAIM",
        "STAFETT_SCOPE_ALIASES",
    ):
        assert claim in OPERATIONS, claim


def test_every_variable_the_docs_name_exists() -> None:
    settings = {f"STAFETT_{name.upper()}" for name in Settings.model_fields}
    for text in (OPERATIONS, RUNBOOK):
        for variable in set(re.findall(r"STAFETT_[A-Z_]+[A-Z]", text)):
            assert variable in settings | ENV_ONLY, variable


def _exported_metrics() -> set[str]:
    metrics = set(re.findall(r'"(stafett_[a-z_]+)"', (ROOT / "service/metrics.py").read_text()))
    admin = (ROOT / "connectors/admin.py").read_text()
    metrics |= set(re.findall(r"(stafett_connector_[a-z_]+)\{", admin))
    return metrics


def test_the_runbook_explains_every_metric() -> None:
    exported = _exported_metrics()
    assert len(exported) >= 14
    for metric in exported:
        assert f"`{metric}`" in RUNBOOK, metric


def test_the_runbooks_alerts_use_only_exported_metrics() -> None:
    exported = _exported_metrics()
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for block in _blocks(RUNBOOK, "promql")
        for name in re.findall(r"\b(stafett_[a-z_]+)", block)
    }
    assert used
    assert used <= exported, used - exported


@pytest.mark.parametrize(
    "alert",
    [
        "5xx",
        "latency",
        "deny",
        "outbox backlog",
        "lag",
        "dead letters",
        "connector",
        "audit trail",
        "database unavailable",
    ],
)
def test_the_runbook_has_an_alert_for(alert: str) -> None:
    alerts = RUNBOOK[RUNBOOK.index("## Alerts worth having") :]
    headings = [h for h in _headings(alerts) if h != "Alerts worth having"]
    assert any(alert.lower() in heading.lower() for heading in headings), alert


def _commands() -> list[str]:
    found = []
    for text in (OPERATIONS, RUNBOOK):
        for block in _blocks(text, "sh"):
            for line in block.splitlines():
                match = re.match(r"^\s*(?:[A-Z_]+=\S+\s+)*stafett\s+(.*)$", line)
                if match:
                    found.append(match.group(1))
    return found


def test_every_stafett_command_in_the_docs_is_accepted_by_the_cli() -> None:
    commands = _commands()
    assert len(commands) >= 8
    parser = _parser()
    for command in commands:
        try:
            parser.parse_args(shlex.split(command, comments=True))
        except SystemExit as exc:  # argparse exits on what it does not accept
            pytest.fail(f"`stafett {command}` is not a valid command ({exc})")
