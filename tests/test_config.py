"""Every configuration mistake stops start-up with one line naming the file, the key and the reason."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT
from exporter.config import ConfigError, from_env, load, parse

pytestmark = pytest.mark.fast

GOOD_TARGET = "  - name: main\n    dsn: host=127.0.0.1 dbname=postgres user=postgres\n"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return str(path)


@pytest.mark.parametrize("body, key, reason", [
    ("targets:\n" + GOOD_TARGET + "colectors: {}\n", "colectors", "unknown key"),
    ("targets:\n" + GOOD_TARGET + "    databases: {include: '(unclosed'}\n", "targets[0].databases.include", "bad regular expression"),
    ("targets:\n  - name: main\n", "targets[0].dsn", "exactly one of dsn, dsn_file, dsn_env is required"),
    ("targets:\n" + GOOD_TARGET + "    collectors: {nosuch: true}\n", "targets[0].collectors.nosuch", "unknown collector"),
    ("targets:\n" + GOOD_TARGET + "    max_connections: many\n", "targets[0].max_connections", "must be an integer in 1 .. 100"),
    ("targets:\n" + GOOD_TARGET + "    collectors: {tables: {ttl: soon}}\n", "targets[0].collectors.tables.ttl", "must be a duration"),
    ("targets:\n" + GOOD_TARGET + "    collectors: {tables: {enabled: 'yes'}}\n", "targets[0].collectors.tables.enabled", "must be true or false"),
    ("listen: 9847\ntargets:\n" + GOOD_TARGET, "listen", "must be a non-empty string"),
    ("listen: 'localhost'\ntargets:\n" + GOOD_TARGET, "listen", "must be HOST:PORT"),
    ("targets: []\n", "targets", "must be a non-empty list"),
    ("targets:\n" + GOOD_TARGET + GOOD_TARGET, "targets[1].name", "duplicate target name"),
    ("targets:\n  - name: main\n    dsn_env: DBPERF_TEST_SURELY_UNSET\n", "targets[0].dsn_env", "is not set"),
    ("targets:\n  - name: main\n    dsn_file: missing.dsn\n", "targets[0].dsn_file", "cannot read"),
    ("targets:\n  - name: main\n    dsn: 'host=x password=abc junk'\n", "targets[0].dsn", "cannot be parsed"),
    ("log_format: xml\ntargets:\n" + GOOD_TARGET, "log_format", "must be text or json"),
    ("targets:\n  - name: 'has space'\n    dsn: host=x\n", "targets[0].name", "must match"),
    ("targets: [\n", "", "invalid YAML: line"),
])
def test_mistakes_name_file_key_and_reason(tmp_path, body, key, reason):
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load(path, env={})
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(path + ": ")
    assert f": {key}: " in message or not key
    assert reason in message


def test_unparsable_dsn_error_does_not_quote_the_password(tmp_path):
    path = write(tmp_path, "targets:\n  - name: main\n    dsn: 'host=x password=TopSecret99 junk'\n")
    with pytest.raises(ConfigError) as err:
        load(path, env={})
    assert "TopSecret99" not in str(err.value)


def test_dsn_from_file_and_env(tmp_path):
    (tmp_path / "secret.dsn").write_text("host=127.0.0.1 dbname=postgres user=u password=p\n")
    path = write(tmp_path, """\
        targets:
          - name: a
            dsn_file: secret.dsn
          - name: b
            dsn_env: MY_DSN
        collectors:
          database_size: {ttl: 10m}
        """)
    config = load(path, env={"MY_DSN": "host=db dbname=app user=u"})
    assert config.target("a").dsn.endswith("password=p")
    assert config.target("b").dsn == "host=db dbname=app user=u"
    assert config.target("b").collector("database_size", True).ttl == 600.0  # top-level defaults apply


def test_defaults_and_durations():
    config = parse({"scrape_timeout": "1500ms", "targets": [{
        "name": "x", "dsn": "host=h", "databases": {"exclude": "^tmp_.*"},
        "collectors": {"tables": False, "settings": {"timeout": "2m"}}}]})
    target = config.target("x")
    assert config.scrape_timeout == 1.5 and config.listen_port == 9847
    assert not target.collector("tables", True).enabled
    assert target.collector("settings", True).timeout == 120.0
    assert target.databases.wanted("app") and not target.databases.wanted("tmp_1")


def test_dbperf_dsn_shortcut():
    config = from_env({"DBPERF_DSN": "host=h dbname=d user=u", "DBPERF_TARGET": "prod"})
    assert [t.name for t in config.targets] == ["prod"]


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)


def test_check_config_prints_the_plan(tmp_path):
    path = write(tmp_path, "targets:\n" + GOOD_TARGET + "    collectors: {tables: false}\n")
    proc = run_cli("check-config", path)
    assert proc.returncode == 0, proc.stderr
    assert "target main" in proc.stdout
    assert "tables           disabled" in proc.stdout
    assert "checkpointer" in proc.stdout and "13,14,15,16,17" in proc.stdout


def test_bad_config_stops_start_up_with_one_line(tmp_path):
    path = write(tmp_path, "targets:\n" + GOOD_TARGET + "    collectors: {nosuch: true}\n")
    for command, args in (("check-config", [path]), ("serve", ["--config", path])):
        proc = run_cli(command, *args)
        assert proc.returncode == 2  # bad input, in every command (docs/exit-codes.md)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith(f"dbperf {command}: config error: {path}: targets[0].collectors.nosuch: "
                                   "unknown collector")


def test_no_config_at_all_is_one_line():
    proc = run_cli("serve", env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "DBPERF_DSN" in proc.stderr


def test_example_config_is_valid():
    config = load(str(ROOT / "config.example.yaml"), env={"PG_DSN": "host=127.0.0.1 dbname=postgres user=postgres"})
    assert config.targets


def test_setting_only_ttl_keeps_the_collectors_default_on_or_off():
    config = parse({"targets": [{"name": "x", "dsn": "host=h",
                                 "collectors": {"advisor": {"ttl": "1m"}, "tables": {"timeout": "5s"}}}]})
    target = config.target("x")
    assert target.collector("advisor", False).enabled is False  # advisor is off by default
    assert target.collector("advisor", False).ttl == 60.0
    assert target.collector("tables", True).enabled is True


def test_check_config_describes_a_pgbouncer_target(tmp_path):
    path = write(tmp_path, "targets:\n  - name: bouncer\n    kind: pgbouncer\n"
                           "    dsn: host=127.0.0.1 port=6432 dbname=pgbouncer user=stats\n")
    proc = run_cli("check-config", path)
    assert proc.returncode == 0, proc.stderr
    assert "target bouncer: PgBouncer admin console" in proc.stdout
    assert "stat_database" not in proc.stdout
