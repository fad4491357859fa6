"""exporter/errors.py: each command's errors have the exit code docs/exit-codes.md gives them, and
exporter.cli.main prints any of them as one line ``dbperf COMMAND: message`` without its secrets."""

from __future__ import annotations

import pytest

from exporter import errors
from exporter.advisor import AdviseError
from exporter.alerts_cli import AlertmanagerError, UsageError as AlertsUsageError
from exporter.cli import print_error
from exporter.config import ConfigError
from exporter.report.cli import UsageError as ReportUsageError
from exporter.report.period import PeriodError
from exporter.report.prom import OptionError, PromError
from exporter.report.queries import ReportError

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("error, code", [
    (ConfigError("dbperf.yaml", "targets[0].dsn", "missing"), 2),
    (AdviseError("--explain: SQL does not parse"), 2),
    (ReportUsageError("--top '0': must be a whole number from 1 to 1000"), 2),
    (PeriodError("the period is shorter than 10 minutes"), 2),
    (OptionError("--basic-auth: expected USER:PASSWORD_FILE"), 2),
    (AlertsUsageError("--for '2x': not a duration"), 2),
    (PromError("Prometheus unreachable at http://prom:9090: Connection refused"), 1),
    (ReportError("no samples at all between ..."), 1),
    (AlertmanagerError("Alertmanager at http://am:9093 is unreachable: ConnectionError"), 1),
    (errors.RuntimeFailure("--listen 0.0.0.0:9847: cannot listen: Address already in use"), 1),
])
def test_every_commands_errors_have_the_documented_code(error, code):
    assert isinstance(error, errors.DbperfError) and error.exit_code == code
    assert isinstance(error, errors.UsageError) == (code == errors.EXIT_USAGE)
    assert isinstance(error, ValueError) == (code == errors.EXIT_USAGE)  # ConfigError stays a ValueError


def line(capsys, error, command="dbperf x") -> str:
    print_error(error, command)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    return err[:-1]


def test_one_line_per_error_kind(capsys):
    assert line(capsys, ConfigError("", "--listen", "must be HOST:PORT")) == "dbperf x: --listen: must be HOST:PORT"
    assert line(capsys, ConfigError("dbperf demo", "--duration", "bad")) == "dbperf x: --duration: bad"
    assert (line(capsys, ConfigError("c.yaml", "targets[0].name", "missing"), "dbperf serve")
            == "dbperf serve: config error: c.yaml: targets[0].name: missing")
    assert line(capsys, PeriodError("'x' is not a time", "--end")) == "dbperf x: --end: 'x' is not a time"
    assert line(capsys, errors.UsageError("no command given", command="dbperf pipelines run")) == (
        "dbperf pipelines run: no command given")


def test_the_line_hides_secrets_and_stays_one_line(capsys):
    error = errors.UnavailableError("cannot connect: password=Pw%2042 'Pw 42' rejected\nsecond line\x1b[2J")
    got = line(capsys, error.hide("Pw 42", None))
    assert "Pw" not in got and got.count("***") == 2 and "\n" not in got and "\x1b" not in got, got
    long = line(capsys, errors.DbperfError("x" * 10000))
    assert long.startswith("dbperf x: xxx") and "…" in long and len(long) <= 2010
