"""DevIssuer: persisted key, file mode, and tokens the real claim mapping understands."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
from auth_support import HPR, ORGNR_KOMMUNE, ORGNR_UNIT, PID, FakeClock, b64url_decode_json

from service.auth import AuthError, DevIssuer, Interaction, PrincipalKind, TokenVerifier
from service.auth.dev_issuer import DEV_ISSUER, KEY_FILE_NAME


def test_key_file_is_created_owner_only_and_reused(tmp_path: Path) -> None:
    data_dir = tmp_path / "not" / "there" / "yet"
    first = DevIssuer.load_or_create(data_dir)
    key_file = data_dir / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert DevIssuer.load_or_create(data_dir).key_id == first.key_id
    assert not [p for p in data_dir.iterdir() if p.name != KEY_FILE_NAME]  # no temp files left


def test_key_file_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        DevIssuer.load_or_create(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / KEY_FILE_NAME).stat().st_mode) == 0o600


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    DevIssuer.load_or_create(tmp_path)
    (tmp_path / KEY_FILE_NAME).chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        DevIssuer.load_or_create(tmp_path)


def test_corrupt_key_file_is_reported(tmp_path: Path) -> None:
    key_file = tmp_path / KEY_FILE_NAME
    key_file.write_text("{not json")
    key_file.chmod(0o600)
    with pytest.raises(ValueError, match="delete it"):
        DevIssuer.load_or_create(tmp_path)


def test_public_jwks_has_no_private_part(dev_issuer: DevIssuer) -> None:
    (key,) = dev_issuer.public_jwks()["keys"]
    assert "d" not in key
    assert key["kid"] == dev_issuer.key_id


@pytest.fixture
def dev_verifier(
    make_verifier: Callable[..., TokenVerifier], dev_issuer: DevIssuer
) -> TokenVerifier:
    return make_verifier(dev_issuer=dev_issuer)


def test_practitioner_round_trip(dev_issuer: DevIssuer, dev_verifier: TokenVerifier) -> None:
    token = dev_issuer.issue_practitioner(
        hpr=HPR, pid=PID, organization=ORGNR_UNIT, parent_organization=ORGNR_KOMMUNE, name="Kari"
    )
    header = b64url_decode_json(token.split(".")[0])
    assert header == {"alg": "ES256", "kid": dev_issuer.key_id, "typ": "at+jwt"}
    principal = dev_verifier.verify(token)
    assert principal.kind is PrincipalKind.PRACTITIONER
    assert principal.issuer == DEV_ISSUER
    assert (principal.hpr, principal.pid, principal.organization) == (HPR, PID, ORGNR_UNIT)
    assert principal.parent_organization == ORGNR_KOMMUNE
    assert principal.display == "Kari"
    assert principal.may(Interaction.DELETE, "CarePlan")
    assert not principal.subject.startswith(PID)  # a pseudonym, as at HelseID


def test_teacher_without_hpr_round_trip(dev_issuer: DevIssuer, dev_verifier: TokenVerifier) -> None:
    token = dev_issuer.issue_practitioner(hpr=None, pid=PID, organization=ORGNR_UNIT)
    principal = dev_verifier.verify(token)
    assert principal.kind is PrincipalKind.PRACTITIONER
    assert principal.organization == ORGNR_UNIT


def test_citizen_round_trip(dev_issuer: DevIssuer, dev_verifier: TokenVerifier) -> None:
    principal = dev_verifier.verify(dev_issuer.issue_citizen(pid=PID, scopes="patient/*.rs"))
    assert principal.kind is PrincipalKind.CITIZEN
    assert principal.pid == PID
    assert principal.acr == "idporten-loa-high"
    assert principal.may(Interaction.READ, "CarePlan")
    assert not principal.may(Interaction.UPDATE, "CarePlan")


def test_system_round_trip(dev_issuer: DevIssuer, dev_verifier: TokenVerifier) -> None:
    token = dev_issuer.issue_system(
        organization=ORGNR_UNIT, scopes="system/*.cruds", supplier=ORGNR_KOMMUNE
    )
    principal = dev_verifier.verify(token)
    assert principal.kind is PrincipalKind.SYSTEM
    assert principal.organization == ORGNR_UNIT
    assert principal.supplier_organization == ORGNR_KOMMUNE
    assert principal.may(Interaction.CREATE, "Task")


def test_dev_token_expires(
    dev_issuer: DevIssuer, dev_verifier: TokenVerifier, clock: FakeClock
) -> None:
    token = dev_issuer.issue_citizen(pid=PID, lifetime_seconds=60)
    clock.advance(60 + 31)
    with pytest.raises(AuthError, match="expired"):
        dev_verifier.verify(token)


def test_token_from_another_dev_key_is_refused(dev_verifier: TokenVerifier) -> None:
    other = DevIssuer.generate()
    with pytest.raises(AuthError, match="does not publish"):
        dev_verifier.verify(other.issue_citizen(pid=PID))


@pytest.mark.parametrize(
    ("issue", "message"),
    [
        (lambda d: d.issue_practitioner(hpr=HPR, pid=None, organization="123"), "organization"),
        (lambda d: d.issue_practitioner(hpr=None, pid=None, organization=ORGNR_UNIT), "HPR"),
        (lambda d: d.issue_practitioner(hpr="x1", pid=None, organization=ORGNR_UNIT), "HPR"),
        (lambda d: d.issue_citizen(pid="15031510013"), "fødselsnummer"),
        (lambda d: d.issue_system(organization="974760674", scopes="system/*.rs"), "organization"),
        (lambda d: d.issue_citizen(pid=PID, lifetime_seconds=0), "lifetime"),
    ],
)
def test_issuer_refuses_what_the_verifier_would(
    dev_issuer: DevIssuer, issue: Callable[[DevIssuer], str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        issue(dev_issuer)
