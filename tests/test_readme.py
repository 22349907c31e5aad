"""The README says what the code does: its settings table and its test command."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.settings import markdown_table

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_settings_table_matches_the_code():
    assert markdown_table() in README, "regenerate with: python -c 'from pipeline.settings import markdown_table; print(markdown_table())'"


def test_serving_settings_table_matches_the_code():
    import demo

    assert demo.AppSettings.markdown_table() in README, "regenerate with: python -c 'import demo; print(demo.AppSettings.markdown_table())'"


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
