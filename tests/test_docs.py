"""The README stays true: its settings table and its test command match the code and CI."""

from __future__ import annotations

from pathlib import Path

from core.config import environment_table

ROOT = Path(__file__).resolve().parents[1]


def test_readme_settings_table_matches_config():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- settings-table")
    end = readme.index("<!-- /settings-table -->")
    table = readme[start:end].split("\n", 1)[1].strip()
    assert table == environment_table()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    assert "make test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "\nmake test\n" in ci


def test_streamlit_config_is_locked_down():
    config = (ROOT / ".streamlit" / "config.toml").read_text()
    for line in (
        'address = "127.0.0.1"',
        "enableXsrfProtection = true",
        "maxUploadSize = 500",
        "gatherUsageStats = false",
        'showErrorDetails = "none"',
    ):
        assert line in config
