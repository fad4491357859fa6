"""The application library installed alone: ``pip install dbperf`` into a fresh venv brings
prometheus-client and nothing of the daemon's (psycopg, pglast, psutil, requests, PyYAML, bcrypt);
exporter.instrument serves a WSGI and an ASGI app there, ships py.typed, and the ``dbperf``
command says in one line what to install and exits 2."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT

pytestmark = pytest.mark.e2e

DAEMON_MODULES = ["psycopg", "pglast", "psutil", "requests", "yaml", "bcrypt"]
HINT = "pip install 'dbperf[server]'"


def requirement_name(requirement: str) -> str:
    """The distribution a PEP 508 requirement names, normalised: ``psycopg[binary]>=3`` -> psycopg."""
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.fast
def test_the_only_required_dependency_is_prometheus_client():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert [requirement_name(r) for r in project["dependencies"]] == ["prometheus-client"], project["dependencies"]
    server = {requirement_name(r) for r in project["optional-dependencies"]["server"]}
    assert {"psycopg", "pglast", "psutil", "requests", "pyyaml", "bcrypt"} <= server, server


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv (this interpreter's Python) with the checkout installed as the library only.
    Installed from a copy of what docker/Dockerfile copies, so the build leaves nothing in the
    checkout."""
    base = tmp_path_factory.mktemp("alone")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "exporter", src / "exporter", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    python = base / "venv" / "bin" / "python"
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(src)],
                         capture_output=True, text=True, timeout=300, env=clean_env())
    assert pip.returncode == 0, pip.stdout[-3000:] + pip.stderr[-3000:]
    return python


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH (a checkout on it would shadow the installed package)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def run(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*args], cwd=venv.parent.parent, capture_output=True, text=True, timeout=60,
                          env=clean_env())


def test_the_library_alone_serves_wsgi_and_asgi_apps_without_the_daemons_dependencies(venv):
    proc = run(venv, str(venv), str(ROOT / "tests" / "instrument_alone_app.py"))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    site = venv.parent.parent / "lib"  # venv/bin/python -> venv/lib
    assert Path(found["library"]).is_relative_to(site), found["library"]  # the installed copy, not the checkout
    assert found["importable"] == [], f"the library's install brought the daemon's modules: {found['importable']}"
    assert found["loaded"] == []
    assert set(found["distributions"]) <= {"dbperf", "prometheus-client", "pip", "setuptools"}, found["distributions"]
    required = [requirement_name(r) for r in found["requires"] or () if "extra ==" not in r]
    assert required == ["prometheus-client"], found["requires"]  # the installed metadata, as pyproject says
    assert found["py_typed"] is True
    assert found["wsgi"] == [["http_requests_total", {"handler": "/hello/{name}", "method": "GET", "status": "200"},
                              1.0]]
    assert found["asgi"] == [["http_requests_total", {"handler": "/items/{id}", "method": "GET", "status": "201"},
                              1.0]]
    assert found["server_timing"].startswith("app;dur="), found["server_timing"]


def test_dbperf_without_the_server_extra_prints_what_to_install_and_exits_2(venv):
    bin_dir = venv.parent
    for command in ([str(bin_dir / "dbperf"), "serve", "--config", "/nonexistent.yaml"],
                    [str(venv), "-m", "exporter", "version"]):
        proc = run(venv, *command)
        assert (proc.returncode, proc.stdout) == (2, ""), (command, proc)
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("dbperf: ") and lines[0].endswith(HINT), (command, lines)
        assert "Traceback" not in proc.stderr
