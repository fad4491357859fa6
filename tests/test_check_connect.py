"""``dbperf check-config --connect`` against the throwaway cluster and against a server that is not
there, and ``config.example.yaml`` served as is: it starts clean on a plain PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, SECOND_DB, Samples, http_ok, wait_until
from exporter.pgcluster import free_port
from exporter.registry import all_collectors

pytestmark = pytest.mark.pg

EXAMPLE = str(ROOT / "config.example.yaml")


def dbperf(*args, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("PG_DSN", "DBPERF_CONFIG", "DBPERF_DSN")}
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**base, **(env or {})})


def collector_lines(stdout: str) -> dict[str, str]:
    """``  name: state`` lines of the --connect part (after the ``connected to`` line)."""
    part = stdout.split("connected to", 1)[1]
    return {line.split(":")[0].strip(): line.split(":", 1)[1].strip()
            for line in part.splitlines()[1:] if line.startswith("  ")}


def test_connect_reports_the_server_and_every_collector(pg):
    proc = dbperf("check-config", "--connect", EXAMPLE, env={"PG_DSN": pg.dsn()})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stderr == ""
    version = pg.execute("SHOW server_version")[0][0].split()[0]
    assert f"target main: connected to PostgreSQL {version} (primary)" in proc.stdout
    databases = [d for (d,) in pg.execute("SELECT datname FROM pg_database WHERE datallowconn AND NOT "
                                          "datistemplate ORDER BY 1")]  # other tests may have added some
    assert SECOND_DB in databases
    assert f"databases covered: {', '.join(databases)}\n" in proc.stdout
    lines = collector_lines(proc.stdout)
    assert set(lines) == {c.name for c in all_collectors()}
    assert lines["advisor"] == "disabled" and lines["pipelines"] == "disabled"
    assert lines["statements"] == "runs"
    assert lines["tables"] == f"runs (on {len(databases)} databases)"
    # a collector for newer servers (pg_stat_io on 16+) says so; nothing else may be short of "runs"
    version_num = int(pg.execute("SHOW server_version_num")[0][0])
    broken = {name: state for name, state in lines.items() if not state.startswith(("runs", "disabled"))
              and not _needs_newer(state, version_num)}
    assert not broken


def _needs_newer(state: str, version_num: int) -> bool:
    prefix = "not available: needs PostgreSQL >= "
    return state.startswith(prefix) and int(state[len(prefix):].split()[0]) * 10000 > version_num


def test_connect_says_in_plain_words_what_is_not_available(pg, tmp_path):
    """pg_stat_statements is created in postgres only: a target on the second database lacks it."""
    config = tmp_path / "dbperf.yaml"
    config.write_text("targets:\n  - name: second\n    dsn_env: SECOND_DSN\n    databases: {discover: false}\n"
                      "    pipelines:\n      sources: [{type: table}]\n")
    proc = dbperf("check-config", "--connect", str(config), env={"SECOND_DSN": pg.dsn(SECOND_DB)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"databases covered: {SECOND_DB}\n" in proc.stdout
    lines = collector_lines(proc.stdout)
    assert lines["statements"].startswith(
        f"not available: pg_stat_statements is not installed in database '{SECOND_DB}'")
    assert f"CREATE EXTENSION pg_stat_statements in database '{SECOND_DB}'" in lines["statements"]
    assert lines["pipelines"].startswith(f"failed on database {SECOND_DB}: ")
    assert "dbperf pipelines init-sql" in lines["pipelines"]
    assert lines["server"] == "runs"
    assert "WARNING" not in proc.stderr  # said once, in the report, not logged as well


def test_connect_without_the_secret_fails_in_one_line(pg):
    proc = dbperf("check-config", "--connect", EXAMPLE)
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"dbperf check-config: --connect: {EXAMPLE}: targets[0].dsn_env: target 'main': ")
    assert "PG_DSN" in line
    assert "target main: not connected: its DSN is missing" in proc.stdout


def test_connect_to_a_server_that_is_not_there_fails_in_one_line(tmp_path):
    port = free_port()
    dsn = f"host=127.0.0.1 port={port} dbname=postgres user=dbperf password=NotShown77"
    proc = dbperf("check-config", "--connect", EXAMPLE, env={"PG_DSN": dsn})
    assert proc.returncode == 1, proc.stdout
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"dbperf check-config: --connect: target 'main': cannot connect to "
                           f"host=127.0.0.1 port={port} dbname=postgres user=dbperf")
    assert "NotShown77" not in proc.stdout + proc.stderr
    assert line.count("cannot connect") == 1


def test_example_config_served_as_is_starts_clean(pg, tmp_path):
    """Every collector the example enables succeeds on the throwaway cluster, and nothing is
    logged at WARNING or above."""
    port = free_port()
    log = tmp_path / "serve.log"
    base = {k: v for k, v in os.environ.items() if k not in ("DBPERF_CONFIG", "DBPERF_DSN")}
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--config", EXAMPLE,
                                 "--listen", f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=stderr, env={**base, "PG_DSN": pg.dsn()})
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: proc.poll() is None and http_ok(url + "/healthz"), timeout=30, message="dbperf serving")
        import requests

        for _ in range(2):  # the first scrape and one served partly from the caches
            samples = Samples(requests.get(url + "/metrics", timeout=30).text)
        assert samples.value("pg_up", target="main") == 1
        successes = samples.series("dbperf_collector_success")
        ran = {s.labels["collector"] for s in successes}
        unsupported = {s.labels["collector"] for s in samples.series("dbperf_collector_supported") if s.value == 0}
        enabled = {c.name for c in all_collectors() if c.name not in ("advisor",)}
        opt_in = {"pipelines", "server_log", "plans"}  # on only with their config keys
        assert ran | unsupported == enabled - opt_in, (ran | unsupported) ^ (enabled - opt_in)
        assert not ran & unsupported
        failed = [s.labels for s in successes if s.value != 1]
        assert not failed, f"collectors failed: {failed}\n{log.read_text()}"
        assert samples.value("dbperf_host_collector_success") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    text = log.read_text()
    bad = [line for line in text.splitlines() if " WARNING " in line or " ERROR " in line]
    assert not bad, text
    assert "listening on" in text  # the log was captured
