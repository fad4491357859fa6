"""One duration parser (issue 15; issue 13, item 9): ``dbperf demo --duration / --scrape-interval``
and ``dbperf advise --timeout`` read exporter/durations.py's syntax, bounded; NaN, infinite, negative
and absurd values are refused in one line before anything starts or connects (``--duration nan``
once ran the demo for ever; ``advise --timeout nan`` passed its check). In-process, nothing
is started: a refused argument stops the command before it starts a server or connects."""

from __future__ import annotations

import pytest

from exporter.cli import main

pytestmark = pytest.mark.fast


def run(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return code, lines[0]


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e400", "367d", "9" * 500])
def test_demo_refuses_a_duration_out_of_range(capsys, value):
    # the bad --scrape-interval after it: today's code, not reading --duration, fails on that instead
    code, line = run(capsys, "demo", "--duration", value, "--scrape-interval", "0.5s")
    assert code == 2
    assert line.startswith("dbperf demo: --duration: must be a duration from 0 to 366d (90 for seconds, 10m, 1h), got ")


@pytest.mark.parametrize("value", ["0.5s", "nan", "inf", "0", "1e400", "2.5"])
def test_demo_refuses_a_scrape_interval_out_of_range(capsys, value):
    code, line = run(capsys, "demo", "--duration", "60", "--scrape-interval", value)
    assert code == 2 and line.startswith("dbperf demo: --scrape-interval: must be whole seconds, at least 1s, got ")


def test_demo_reads_the_shared_syntax():
    from exporter.demo import _seconds

    assert [_seconds(v) for v in ("90", "5s", "10m", "1h30m", "0")] == [90, 5, 600, 5400, 0]
    assert [_seconds(v) for v in ("nan", "-1s", "1e400", "1h 30m")] == [None] * 4


@pytest.fixture
def unreachable_dsn(monkeypatch):
    for name in ("DBPERF_CONFIG", "PG_DSN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DBPERF_DSN", "host=127.0.0.1 port=9 dbname=x user=u connect_timeout=1")


@pytest.mark.parametrize("value, reason", [
    ("nan", "must be a duration like 500ms, 10s, 5m, 1h30m or 2d"),
    ("inf", "must be a duration like 500ms, 10s, 5m, 1h30m or 2d"),
    ("1e400", "must be a duration like 500ms, 10s, 5m, 1h30m or 2d"),
    ("0", "must be at least 1ms"),
    ("-1", "must be at least 1ms"),
    ("2d", "must be at most 1d"),
])
def test_advise_refuses_a_timeout_out_of_range_before_connecting(capsys, unreachable_dsn, value, reason):
    code, line = run(capsys, "advise", "--timeout", value)
    assert code == 2 and line == f"dbperf advise: --timeout {value!r}: {reason}"


@pytest.mark.parametrize("value", ["30", "1.5", "30s", "2m"])
def test_advise_reads_the_shared_syntax(capsys, unreachable_dsn, value):
    code, line = run(capsys, "advise", "--timeout", value)
    assert code == 1 and "cannot connect to" in line  # accepted: it went on to connect (unreachable: 1)
