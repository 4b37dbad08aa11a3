"""`stafett token`: prints only a verifiable token; bad input exits 2 naming the problem."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from auth_support import HPR, ORGNR_UNIT, PID

from service.auth import DevIssuer, Interaction, Principal, PrincipalKind, TokenVerifier
from service.auth.cli import add_token_parser, run_token
from service.config import Settings


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stafett")
    add_token_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", dev_auth=True)


def run(
    argv: list[str], settings: Settings, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    code = run_token(parse(["token", *argv]), settings)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def verify(
    make_verifier: Callable[..., TokenVerifier], settings: Settings
) -> Callable[[str], Principal]:
    def _verify(stdout: str) -> Principal:
        verifier = make_verifier(
            trusted_issuers={},
            dev_issuer=DevIssuer.load_or_create(settings.data_dir),
            clock=time.time,
        )
        return verifier.verify(stdout.strip())

    return _verify


def test_practitioner_token(
    settings: Settings, capsys: pytest.CaptureFixture[str], verify: Callable[[str], Principal]
) -> None:
    code, out, err = run(
        ["--practitioner", HPR, "--org", ORGNR_UNIT, "--pid", PID, "--lifetime", "600"],
        settings,
        capsys,
    )
    assert (code, err) == (0, "")
    assert out.count("\n") == 1  # only the token
    assert out.count(".") == 2
    principal = verify(out)
    assert principal.kind is PrincipalKind.PRACTITIONER
    assert principal.hpr == HPR


def test_teacher_token_without_hpr(
    settings: Settings, capsys: pytest.CaptureFixture[str], verify: Callable[[str], Principal]
) -> None:
    code, out, _ = run(["--practitioner", "--pid", PID, "--org", ORGNR_UNIT], settings, capsys)
    assert code == 0
    assert verify(out).hpr is None


def test_citizen_token(
    settings: Settings, capsys: pytest.CaptureFixture[str], verify: Callable[[str], Principal]
) -> None:
    code, out, _ = run(["--citizen", PID, "--scope", "patient/*.rs"], settings, capsys)
    assert code == 0
    principal = verify(out)
    assert principal.kind is PrincipalKind.CITIZEN
    assert not principal.may(Interaction.CREATE, "CarePlan")


def test_system_token(
    settings: Settings, capsys: pytest.CaptureFixture[str], verify: Callable[[str], Principal]
) -> None:
    code, out, _ = run(["--system", ORGNR_UNIT, "--scope", "system/*.cruds"], settings, capsys)
    assert code == 0
    assert verify(out).organization == ORGNR_UNIT


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--practitioner", HPR, "--org", "123456789"],
            "--org '123456789' is not a valid organisation",
        ),
        (["--practitioner", HPR], "--practitioner needs --org"),
        (["--practitioner", "--org", ORGNR_UNIT], "needs --pid"),
        (["--practitioner", "12ab", "--org", ORGNR_UNIT], "--practitioner HPR must be"),
        (
            ["--practitioner", HPR, "--org", ORGNR_UNIT, "--pid", "15031510013"],
            "--pid is not a valid",
        ),
        (["--citizen", "15031510013"], "--citizen is not a valid fødselsnummer"),
        (["--citizen", PID, "--org", ORGNR_UNIT], "--org is only for --practitioner"),
        (
            ["--system", "974760674", "--scope", "system/*.rs"],
            "--system '974760674' is not a valid",
        ),
        (["--system", ORGNR_UNIT], "--system needs --scope"),
        (["--system", ORGNR_UNIT, "--scope", "user/*.rs"], "no system/ SMART scopes"),
        (["--citizen", PID, "--lifetime", "0"], "--lifetime must be a positive"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    argv: list[str], message: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, settings, capsys)
    assert code == 2
    assert out == ""
    assert message in err
    assert "15031510013" not in err  # an fnr-like value is not echoed


def test_no_kind_is_an_argparse_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parse(["token", "--org", ORGNR_UNIT])
    assert caught.value.code == 2
    assert (
        "one of the arguments --practitioner --citizen --system --dpo is required"
        in capsys.readouterr().err
    )


def test_unreadable_key_file_exits_1(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    DevIssuer.load_or_create(settings.data_dir)
    (settings.data_dir / "dev-issuer-key.json").chmod(0o640)
    code, out, err = run(["--citizen", PID], settings, capsys)
    assert (code, out) == (1, "")
    assert "chmod 600" in err


def test_note_on_stderr_when_dev_auth_is_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["--citizen", PID], Settings(data_dir=tmp_path), capsys)
    assert code == 0
    assert out.count(".") == 2
    assert "STAFETT_DEV_AUTH" in err
