"""The README says what the code does: its settings table and its test command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.server import ServerSettings
from pipeline import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("settings", [Settings, ServerSettings])
def test_settings_tables_match_the_code(settings):
    assert settings.markdown_table() in README, (
        f"regenerate with: python -c 'from {settings.__module__} import {settings.__name__}; "
        f"print({settings.__name__}.markdown_table())'")


def test_readme_screenshot_is_a_png():
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (ROOT / target).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", target


def test_ci_runs_the_readmes_test_command():
    assert "bash scripts/test.sh" in README
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^exec bash scripts/test\.sh\s*$", ci, re.M)


def test_readme_starts_with_space_front_matter():
    front = README.split("---")[1]
    assert re.search(r"^sdk: docker$", front, re.M) and re.search(r"^app_port: 7860$", front, re.M)
