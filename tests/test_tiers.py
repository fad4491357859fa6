"""The tier mechanism itself (tests/tiers.py) and the tool lookup the real-parts tiers rely on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tiers
from conftest import require_tool

pytestmark = pytest.mark.fast


def test_wanted_tiers_parses_lists_and_rejects_unknown_names():
    assert tiers.wanted_tiers("") == set(tiers.TIERS)
    assert tiers.wanted_tiers("fast") == {"fast"}
    assert tiers.wanted_tiers(" pg , prom ") == {"pg", "prom"}
    with pytest.raises(pytest.UsageError, match="unknown tier.*slow"):
        tiers.wanted_tiers("fast,slow")


def test_fast_tests_cannot_start_other_programs():
    with pytest.raises(AssertionError, match="fast-tier test started 'true'"):
        subprocess.run(["true"], check=False)


def test_fast_tests_may_run_dbperfs_own_command():
    proc = subprocess.run([sys.executable, "-m", "exporter", "version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip()


@pytest.mark.parametrize("tool", ["gunicorn", "uvicorn"])
def test_tools_of_the_venv_are_found_without_the_venv_on_path(tool, monkeypatch, tmp_path):
    """`.venv/bin/python -m pytest` with a PATH that lacks `.venv/bin` (a fresh machine has no
    system-wide gunicorn) still finds the venv's own tools."""
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: nothing on PATH
    found = Path(require_tool(tool))
    assert found.parent == Path(sys.executable).parent
    assert os.access(found, os.X_OK)
