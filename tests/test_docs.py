"""Keep the docs true to the code: every setting documented, the README's commands real."""

from __future__ import annotations

from pathlib import Path

from service.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for name in Settings.model_fields:
        assert f"`STAFETT_{name.upper()}`" in operations, name


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Start here")
    first_section = readme[start : readme.index("\n## ", start + 1)]
    assert "make run" in first_section
    assert "make test" in first_section
    makefile = (ROOT / "Makefile").read_text()
    assert "\nrun:" in makefile
    assert "\ntest:" in makefile
