"""The ``dbperf`` command's entry point. ``pip install dbperf`` is the application library
(exporter.instrument, prometheus-client only); the daemon's own dependencies come with the
``server`` extra. Without them the command says so in one line and exits 2, instead of a traceback
from deep inside an import. Imports nothing but the standard library until they are all there."""

from __future__ import annotations

import importlib.util
import sys

# (module, requirement name in pyproject's `server` extra); tests/test_entry.py keeps them in step
SERVER_MODULES = (
    ("bcrypt", "bcrypt"),
    ("psycopg", "psycopg"),
    ("psutil", "psutil"),
    ("pglast", "pglast"),
    ("pymysql", "PyMySQL"),
    ("yaml", "PyYAML"),
    ("requests", "requests"),
)
INSTALL_HINT = "pip install 'dbperf[server]'"


def missing_server_modules() -> list[str]:
    """The requirement names of the daemon's dependencies that cannot be imported here."""
    return [name for module, name in SERVER_MODULES if importlib.util.find_spec(module) is None]


def main(argv: list[str] | None = None) -> int:
    missing = missing_server_modules()
    if missing:
        print(f"dbperf: the daemon's dependencies are not installed (missing: {', '.join(missing)}); "
              f"install them with: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from exporter.cli import main as cli_main

    return cli_main(argv)
