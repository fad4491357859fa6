"""The application library stands alone: importing every exporter.instrument module loads no dbperf
daemon module and no web framework or database driver until it is used."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT
import pytest

pytestmark = pytest.mark.fast

MODULES = ["exporter.instrument", "exporter.instrument.asgi", "exporter.instrument.wsgi",
           "exporter.instrument.core", "exporter.instrument.fingerprint", "exporter.instrument.pool",
           "exporter.instrument.psycopg", "exporter.instrument.sqlalchemy", "exporter.instrument.slowlog",
           "exporter.instrument.exposition", "exporter.instrument.multiprocess",
           "exporter.instrument.applog"]


def test_instrument_imports_nothing_from_the_daemon():
    code = ("import importlib, json, sys\n"
            f"for m in {MODULES!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout)
    ours = [m for m in loaded if m.startswith("exporter.") and not m.startswith("exporter.instrument")]
    assert ours == [], f"exporter.instrument pulled in daemon modules: {ours}"
    lazy = [m for m in ("fastapi", "starlette", "flask", "sqlalchemy", "psycopg", "psycopg_pool", "uvicorn")
            if m in loaded]
    assert lazy == [], f"imported eagerly: {lazy}"
