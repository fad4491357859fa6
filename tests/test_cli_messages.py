"""The CLI's own messages, run in-process (nothing connects anywhere): check-config needs no
secret, serve refuses without it in one line naming target and variable, and no error carries a
doubled ``dbperf: ... dbperf: `` prefix."""

from __future__ import annotations

import re

import pytest

from conftest import ROOT
from exporter.cli import main

pytestmark = pytest.mark.fast

EXAMPLE = str(ROOT / "config.example.yaml")
PREFIX = re.compile(r"\bdbperf(?: [a-z-]+)*: ")


@pytest.fixture
def no_env(monkeypatch):
    for name in ("PG_DSN", "DBPERF_CONFIG", "DBPERF_DSN", "DBPERF_ALERTMANAGER_URL"):
        monkeypatch.delenv(name, raising=False)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert len(PREFIX.findall(lines[0])) == 1, f"doubled prefix: {lines[0]}"
    assert lines[0].count("config error") <= 1, lines[0]
    return lines[0]


def test_check_config_without_the_secret_warns_and_exits_0(no_env, capsys):
    code, out, err = run(capsys, "check-config", EXAMPLE)
    assert code == 0, err
    line = one_line(err)
    assert line.startswith(f"dbperf check-config: warning: {EXAMPLE}: targets[0].dsn_env: target 'main': ")
    assert "environment variable PG_DSN" in line and "not set" in line
    assert "target main: DSN from environment variable PG_DSN (missing)" in out
    assert "statements" in out  # the plan is printed all the same


def test_check_config_without_the_dsn_file_warns_and_exits_0(no_env, capsys, tmp_path):
    path = tmp_path / "dbperf.yaml"
    path.write_text("targets:\n  - name: db1\n    dsn_file: /nonexistent/dbperf.dsn\n")
    code, out, err = run(capsys, "check-config", str(path))
    assert code == 0, err
    line = one_line(err)
    assert line.startswith(f"dbperf check-config: warning: {path}: targets[0].dsn_file: target 'db1': ")
    assert "/nonexistent/dbperf.dsn" in line
    assert "target db1: DSN from file /nonexistent/dbperf.dsn (missing)" in out


def test_check_config_with_the_secret_says_where_the_dsn_comes_from(no_env, capsys, monkeypatch):
    monkeypatch.setenv("PG_DSN", "host=db.example dbname=app user=dbperf password=Hidden42")
    code, out, err = run(capsys, "check-config", EXAMPLE)
    assert code == 0 and err == ""
    assert "target main: host=db.example dbname=app user=dbperf (from environment variable PG_DSN)" in out
    assert "Hidden42" not in out


def test_serve_without_the_secret_refuses_in_one_line(no_env, capsys):
    code, out, err = run(capsys, "serve", "--config", EXAMPLE)
    assert code == 2 and out == ""  # a config error is bad input (docs/exit-codes.md)
    line = one_line(err)
    assert line.startswith(f"dbperf serve: config error: {EXAMPLE}: targets[0].dsn_env: target 'main': ")
    assert "PG_DSN" in line


@pytest.mark.parametrize("argv, expected", [
    (["serve"], "dbperf serve: --config: no configuration given: pass --config FILE, or set DBPERF_CONFIG or DBPERF_DSN"),
    (["check-config"], "dbperf check-config: --config: no configuration given: pass --config FILE, or set "
                       "DBPERF_CONFIG or DBPERF_DSN"),
    (["advise"], "dbperf advise: --config: no configuration given: pass --config FILE, or set "
                 "DBPERF_CONFIG or DBPERF_DSN"),
    (["check-config", "/nonexistent/dbperf.yaml"],
     "dbperf check-config: config error: /nonexistent/dbperf.yaml: cannot read config file: No such file or directory"),
    (["alerts", "ack", "X", "--for", "2x", "-c", "c"],
     "dbperf alerts: --for '2x': not a duration (use e.g. 30m, 2h, 1h30m, 1d)"),
    (["report", "--prometheus", "http://127.0.0.1:9", "--period", "bogus"],
     "dbperf report: --period: 'bogus' is not a duration (e.g. 24h, 7d, 90m)"),
    (["pipelines", "run", "--name", "x"],
     "dbperf pipelines run: no command given (usage: dbperf pipelines run --name N -- CMD ...); nothing was run"),
])
def test_errors_have_one_prefix(no_env, capsys, argv, expected):
    code, out, err = run(capsys, *argv)
    assert code != 0
    assert one_line(err) == expected


def test_serve_listen_error_names_the_option_once(no_env, capsys, tmp_path):
    path = tmp_path / "dbperf.yaml"
    path.write_text("targets:\n  - name: main\n    dsn: host=127.0.0.1 dbname=postgres\n")
    code, out, err = run(capsys, "serve", "--config", str(path), "--listen", "nowhere")
    assert code == 2
    assert one_line(err) == "dbperf serve: --listen: must be HOST:PORT with a port in 0 .. 65535, got 'nowhere'"
