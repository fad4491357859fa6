"""``dbperf top`` as a command: ``--once`` against a real lock chain as a pg_monitor-only role, the
refusal without a terminal, and one-line errors for bad arguments and an unreachable server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from exporter.pgcluster import free_port
from topkit import SECRET_LITERAL, lock_chain, monitor_dsn

pytestmark = pytest.mark.fast


def dbperf_top(*args, env=None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", "top", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout,
                          env={**os.environ, "COLUMNS": "150", **(env or {})})


@pytest.mark.pg
def test_once_prints_one_frame_with_the_chain(pg):
    with lock_chain(pg) as (a, b, c):
        out = dbperf_top("--dsn", monitor_dsn(pg), "--once", "--interval", "0.3s")
    assert out.returncode == 0 and out.stderr == "", out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("dbperf top - dsn - PostgreSQL ") and lines[0].endswith("every 300ms")
    assert lines[1].startswith("load ") and "2 waiting on locks, 1 idle in transaction" in lines[1]
    chain = lines.index("BLOCKING CHAINS (blocker, then who waits on it)")
    assert lines[chain + 1].startswith(f"  {a} idle-tx ") and " blocks 2 [postgres] UPDATE top_chain_" in lines[chain + 1]
    assert lines[chain + 2].startswith(f"  +- {b} Lock:transactionid ") and f"blocked by {a} " in lines[chain + 2]
    assert lines[chain + 3].startswith(f"     +- {c} Lock:") and f"blocked by {b} " in lines[chain + 3]
    assert any(line.split()[:3] == ["2.00", "postgres", "Lock"] or line.split()[1:3] == ["postgres", "Lock"]
               for line in lines[lines.index("TOP STATEMENTS BY LOAD"):])
    assert SECRET_LITERAL not in out.stdout and all(len(line) <= 150 for line in lines)


def test_without_a_terminal_it_refuses_in_one_line():
    out = dbperf_top("--dsn", "host=127.0.0.1 port=1 dbname=x")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == ("dbperf top: stdout is not a terminal: dbperf top draws a live screen (--once prints "
                          "one frame as plain text)\n")


@pytest.mark.parametrize("args,message", [
    (["--dsn", "host=x", "--interval", "0"], "dbperf top: --interval: must be at least 100ms, got '0'"),
    (["--dsn", "host=x", "--interval", "soon"], "dbperf top: --interval: must be a duration like"),
    (["--dsn", "host=x", "--window", "2h"], "dbperf top: --window: must be at most 1h, got '2h'"),
    (["--dsn", "host=x", "--target", "db"], "dbperf top: --target names a target of a config"),
    (["--dsn", " "], "dbperf top: --dsn: must be a PostgreSQL connection string or URL"),
    (["--dsn", "host=x", "--config", "c.yaml"], "dbperf top: argument --config/-c: not allowed with argument --dsn"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    out = dbperf_top(*args, "--once")
    assert out.returncode == 2 and out.stderr.startswith(message) and out.stderr.count("\n") == 1, out.stderr


def test_an_unknown_target_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("targets:\n  - {name: a, dsn: 'host=x'}\n  - {name: b, dsn: 'host=y'}\n")
    out = dbperf_top("--config", str(config), "--once")
    assert out.returncode == 2 and out.stderr == "dbperf top: --target is required: the config has 2 targets (a, b)\n"
    out = dbperf_top("--config", str(config), "--target", "zz", "--once")
    assert out.returncode == 2 and out.stderr == "dbperf top: --target: unknown target 'zz' (known: a, b)\n"


def test_a_server_that_cannot_be_reached_is_one_line_and_exit_1():
    out = dbperf_top("--dsn", f"host=127.0.0.1 port={free_port()} user=u password=hunter2secret dbname=x",
                     "--once", "--interval", "0.2s")
    assert out.returncode == 1 and out.stdout == "" and out.stderr.count("\n") == 1
    assert out.stderr.startswith("dbperf top: target dsn: cannot connect to host=127.0.0.1 ")
    assert "hunter2secret" not in out.stderr
