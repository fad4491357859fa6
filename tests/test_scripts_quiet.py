"""scripts/lib.sh, shared by ./scripts/demo and ./scripts/test: the installers' own output (pip's
warnings about this machine's index settings, apt's progress) is hidden when they succeed and shown
in full when they fail. Run for real: a fresh venv and a real pip install of a small project."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

PROJECT = """\
[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "dbperf-quiet-probe"
version = "0"
dependencies = ["pyyaml"]

[project.optional-dependencies]
extra = []

[tool.setuptools]
packages = ["probe"]
"""


def lib(cwd: Path, command: str) -> subprocess.CompletedProcess:
    """``command`` in bash after sourcing scripts/lib.sh, with the scripts' ``set -euo pipefail``;
    temporary files in ``cwd/tmp``."""
    (cwd / "tmp").mkdir(exist_ok=True)
    return subprocess.run(["bash", "-c", f"set -euo pipefail; . {ROOT / 'scripts' / 'lib.sh'}; {command}"],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(cwd / "tmp")})


def test_quietly_hides_a_commands_output_unless_it_fails(tmp_path):
    done = lib(tmp_path, "quietly sh -c 'echo noise; echo WARNING: more noise >&2'; echo next")
    assert (done.returncode, done.stdout, done.stderr) == (0, "next\n", ""), done
    failed = lib(tmp_path, "quietly sh -c 'echo the reason >&2; exit 3'; echo not reached")
    assert failed.returncode == 3 and failed.stdout == "", failed
    assert failed.stderr.splitlines() == ["the reason", "failed (exit status 3): sh -c echo the reason >&2; exit 3"]
    assert not list((tmp_path / "tmp").iterdir())  # the logs are removed


def test_ensure_venv_prints_nothing_when_pip_succeeds_and_pips_error_when_it_fails(tmp_path):
    (tmp_path / "pyproject.toml").write_text(PROJECT)
    (tmp_path / "probe").mkdir()
    (tmp_path / "probe" / "__init__.py").write_text("")
    done = lib(tmp_path, 'ensure_venv ".[extra]"')
    assert (done.returncode, done.stdout, done.stderr) == (0, "", ""), done
    assert subprocess.run([tmp_path / ".venv" / "bin" / "python", "-c", "import probe, yaml"]).returncode == 0

    broken = PROJECT.replace('["pyyaml"]', '["pyyaml", "=broken requirement="]')
    (tmp_path / "pyproject.toml").write_text(broken)
    failed = lib(tmp_path, 'ensure_venv ".[extra]"; echo not reached')
    assert failed.returncode != 0 and "not reached" not in failed.stdout, failed
    assert "=broken requirement=" in failed.stderr, failed.stderr  # pip's own explanation
    assert failed.stderr.rstrip().endswith("failed (exit status 1): .venv/bin/python -m pip install -q "
                                           "--disable-pip-version-check -e .[extra]"), failed.stderr
