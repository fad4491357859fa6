"""The ``dbperf`` command's entry point (exporter/entry.py): it checks the daemon's dependencies
(pyproject's ``server`` extra) before importing exporter.cli; without them, one line and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

import pytest

from conftest import ROOT
from exporter import entry
from test_instrument_alone import requirement_name

pytestmark = pytest.mark.fast


def test_the_checked_modules_are_the_server_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    server = sorted(requirement_name(r) for r in project["optional-dependencies"]["server"])
    assert sorted(name.lower() for _, name in entry.SERVER_MODULES) == server
    scripts = project["scripts"]
    assert scripts == {"dbperf": "exporter.entry:main"}


def test_with_the_server_extra_the_command_runs(capsys):
    assert entry.missing_server_modules() == []
    assert entry.main(["version"]) == 0
    assert capsys.readouterr().out.strip()


def test_without_the_daemons_dependencies_one_line_and_exit_2():
    # -S: no site-packages, so none of the daemon's dependencies can be imported (the checkout only)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-S", "-m", "exporter", "serve", "--config", "x.yaml"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env=env)
    assert (proc.returncode, proc.stdout) == (2, ""), proc
    assert proc.stderr == ("dbperf: the daemon's dependencies are not installed (missing: bcrypt, psycopg, psutil, "
                           "pglast, PyMySQL, PyYAML, requests); install them with: pip install 'dbperf[server]'\n")
