"""Test tiers: every test belongs to exactly one, chosen by its closest marker.

- ``fast``: pure logic, no external server and no subprocess (config, planning, rendering, ranking,
  histogram and anomaly maths, advisor rules on parsed SQL, the exposition format). The inner loop.
- ``pg``: a real PostgreSQL (and PgBouncer, MariaDB) started by the suite.
- ``prom``: real Prometheus, Alertmanager, promtool or amtool.
- ``e2e``: the whole stack (the demo, several real servers, the browser, multi-process apps).

A module sets its tier with ``pytestmark = pytest.mark.<tier>``; a test in it may choose another
with its own marker (the closest marker wins). ``--tier fast`` (or ``--tier pg,prom``) runs only
those tiers; without it every tier runs. A test without a tier, or a fast test that asks for a
server fixture or starts a program other than dbperf's own command, fails instead of running in
the wrong tier.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

TIERS = ("fast", "pg", "prom", "e2e")
DESCRIPTIONS = {
    "fast": "pure logic: no external server, no program but dbperf's own command",
    "pg": "needs a real PostgreSQL (or PgBouncer, MariaDB) that the suite starts",
    "prom": "needs real Prometheus, Alertmanager, promtool or amtool",
    "e2e": "the whole stack: demo, several real servers, browser, multi-process apps",
}
# fixtures that start or reach a real server: a fast test may not use them
SERVER_FIXTURES = frozenset({"pg", "served", "cluster", "prometheus", "alertmanager", "shop", "pgbouncer", "mariadb", "mariadb_pair"})


def tier_of(item: pytest.Item) -> str | None:
    for mark in item.iter_markers():  # closest first: function, class, module
        if mark.name in TIERS:
            return mark.name
    return None


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--tier", default="", metavar="TIERS",
                     help=f"run only these comma-separated test tiers ({', '.join(TIERS)}); default: all")


def pytest_configure(config: pytest.Config) -> None:
    for name in TIERS:
        config.addinivalue_line("markers", f"{name}: test tier: {DESCRIPTIONS[name]}")


def wanted_tiers(option: str) -> set[str]:
    wanted = {t.strip() for t in option.split(",") if t.strip()}
    unknown = wanted - set(TIERS)
    if unknown:
        raise pytest.UsageError(f"--tier: unknown tier(s) {', '.join(sorted(unknown))} (known: {', '.join(TIERS)})")
    return wanted or set(TIERS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    wanted = wanted_tiers(config.getoption("--tier"))
    problems, keep, drop = [], [], []
    for item in items:
        tier = tier_of(item)
        if tier is None:
            problems.append(f"{item.nodeid}: no tier marker (add pytestmark = pytest.mark.<{'|'.join(TIERS)}>)")
            continue
        if tier == "fast":
            servers = SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ()))
            if servers:
                problems.append(f"{item.nodeid}: marked fast but uses server fixture(s) {', '.join(sorted(servers))}")
                continue
        (keep if tier in wanted else drop).append(item)
    if problems:
        raise pytest.UsageError("test tiers:\n  " + "\n  ".join(problems))
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


_POPEN = subprocess.Popen


class _OwnProcessesOnly(_POPEN):
    """In the fast tier only dbperf's own command (this interpreter) may run: no other program."""

    def __init__(self, args, *rest, **kwargs):
        program = args[0] if isinstance(args, (list, tuple)) and args else args
        if str(program) != sys.executable:
            raise AssertionError(f"a fast-tier test started {program!r}: give it the pg, prom or e2e tier")
        super().__init__(args, *rest, **kwargs)


@pytest.fixture(autouse=True)
def _fast_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Fast tests must not start processes: that is what makes the tier fast and self-contained."""
    if tier_of(request.node) == "fast":
        monkeypatch.setattr(subprocess, "Popen", _OwnProcessesOnly)
    yield
