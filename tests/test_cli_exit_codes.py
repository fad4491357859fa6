"""Every command's exit codes (docs/exit-codes.md), in-process, nothing started: a bad argument or
config is exit 2 and one line ``dbperf COMMAND: ...`` naming the option or key, never a traceback;
a server that cannot be reached is exit 1. Each case stops before anything connects or runs."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from conftest import ROOT
from exporter.cli import main

pytestmark = pytest.mark.fast

CLOSED = "host=127.0.0.1 port=9 dbname=x user=u password=Hidden-Pw42 connect_timeout=1"


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    for name in ("PG_DSN", "DBPERF_CONFIG", "DBPERF_DSN", "DBPERF_ALERTMANAGER_URL"):
        monkeypatch.delenv(name, raising=False)


def run(capsys, argv) -> tuple[int, str]:
    """``(exit code, the one line on stderr)``; stdout stays empty."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return code, lines[0]


@pytest.fixture
def bad_config(tmp_path):
    path = tmp_path / "dbperf.yaml"
    path.write_text("targets:\n  - name: main\n    dsn: host=127.0.0.1 dbname=postgres\n    colectors: {}\n")
    return str(path)


@pytest.mark.parametrize("argv, line", [
    ([], "dbperf: the following arguments are required: COMMAND (see dbperf --help)"),
    (["nope"], "dbperf: argument COMMAND: invalid choice: 'nope'"),
    (["serve", "--log-level", "loud"], "dbperf serve: argument --log-level: invalid choice: 'loud'"),
    (["serve", "--config", "{bad}"], "dbperf serve: config error: {bad}: targets[0].colectors: unknown key"),
    (["serve", "--config", "/nonexistent.yaml"], "dbperf serve: config error: /nonexistent.yaml: cannot read config file"),
    (["serve", "--listen", "nowhere"], "dbperf serve: --config: no configuration given"),
    (["check-config", "{bad}"], "dbperf check-config: config error: {bad}: targets[0].colectors: unknown key"),
    (["check-config", "--connect", "--bogus"], "dbperf check-config: unrecognized arguments: --bogus"),
    (["demo", "--duration", "nan"], "dbperf demo: --duration: must be a duration"),
    (["demo", "--listen", "nowhere"], "dbperf demo: --listen: must be HOST:PORT"),
    (["advise", "--top", "many"], "dbperf advise: argument --top: invalid int value: 'many'"),
    (["advise", "--config", "{bad}"], "dbperf advise: config error: {bad}: targets[0].colectors: unknown key"),
    (["report", "--period", "24h"], "dbperf report: the following arguments are required: --prometheus"),
    (["report", "--prometheus", "http://127.0.0.1:9", "--top", "0"], "dbperf report: --top '0': must be a whole number"),
    (["pipelines"], "dbperf pipelines: the following arguments are required: COMMAND"),
    (["pipelines", "run", "--name", "", "--", "true"], "dbperf pipelines run: --name: the pipeline name is empty"),
    (["alerts", "ack", "X", "--for", "2x", "-c", "c"], "dbperf alerts: --for '2x': not a duration"),
    (["alerts", "unack", "not-an-id"], "dbperf alerts: unknown silence id 'not-an-id'"),
    (["alerts", "list", "--json", "--tables"], "dbperf alerts list: unrecognized arguments: --tables"),
    (["setup-sql", "--role", "pg_mine"], "dbperf setup-sql: --role: 'pg_mine': names starting with pg_ are reserved"),
    (["setup-sql", "--password-file", "/nonexistent"], "dbperf setup-sql: --password-file: /nonexistent: "),
    (["version", "--verbose"], "dbperf version: unrecognized arguments: --verbose"),
])
def test_bad_input_is_exit_2_in_one_line_naming_it(capsys, bad_config, argv, line):
    code, got = run(capsys, [arg.replace("{bad}", bad_config) for arg in argv])
    assert code == 2
    assert got.startswith(line.replace("{bad}", bad_config)), got


def test_an_unreachable_server_is_exit_1_without_the_password(capsys, monkeypatch):
    monkeypatch.setenv("DBPERF_DSN", CLOSED)
    code, line = run(capsys, ["advise", "--timeout", "5s"])
    assert code == 1
    assert line.startswith("dbperf advise: cannot connect to host=127.0.0.1 port=9 dbname=x user=u")
    assert "Hidden-Pw42" not in line


def test_an_unreachable_prometheus_or_alertmanager_is_exit_1(capsys):
    code, line = run(capsys, ["report", "--prometheus", "http://127.0.0.1:9", "--period", "1h"])
    assert code == 1 and line.startswith("dbperf report: Prometheus unreachable at http://127.0.0.1:9"), line
    code, line = run(capsys, ["alerts", "--alertmanager", "http://127.0.0.1:9", "list"])
    assert code == 1 and line == "dbperf alerts: Alertmanager at http://127.0.0.1:9 is unreachable: ConnectionError"


def test_serve_on_a_port_in_use_is_exit_1_in_one_line():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "exporter", "serve", "--listen", f"127.0.0.1:{port}"],
                              cwd=ROOT, capture_output=True, text=True, timeout=60,
                              env={"PATH": "/usr/bin:/bin", "DBPERF_DSN": CLOSED})
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    assert proc.stderr == f"dbperf serve: --listen 127.0.0.1:{port}: cannot listen: Address already in use\n"


def test_interrupted_is_130(capsys, monkeypatch):
    import exporter.setupsql

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(exporter.setupsql, "script", interrupted)
    assert main(["setup-sql"]) == 130
