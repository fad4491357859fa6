"""``dbperf advise`` as a subprocess: one JSON/table report on success; bad input gives exactly
one line on stderr and exit code 2; the password never shows."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.pg

DB = "advise_cli_test"
ROLE, SECRET = "advise_limited", "Sup3rSecretPw"


def advise(config, *args, timeout=120):
    proc = subprocess.run([sys.executable, "-m", "exporter", "advise", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def config_file(tmp_path, dsn, name="main"):
    path = tmp_path / "advise.yaml"
    path.write_text(json.dumps({"targets": [{"name": name, "dsn": dsn, "databases": {"include": DB}}]}))
    return path


@pytest.fixture(scope="module")
def cli_db(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    if not pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", params=(ROLE,)):
        pg.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{SECRET}'")
    with pg.connect(DB) as conn:
        conn.execute("CREATE TABLE private_t (id int); CREATE TABLE big (id int, v int);"
                     "INSERT INTO big SELECT g, g % 10 FROM generate_series(1, 20000) g;"
                     f"REVOKE ALL ON private_t FROM PUBLIC; GRANT SELECT ON big TO {ROLE}")
        conn.execute("ANALYZE big")
    if pg.cluster is not None:
        pg.cluster.require_password(ROLE)
    return pg


def one_line_exit_2(code, out, err):
    assert code == 2, (code, out, err)
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("dbperf advise: ")


def test_json_report_on_success(cli_db, tmp_path):
    code, out, err = advise(config_file(tmp_path, cli_db.dsn("postgres")), "--target", "main", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["target"] == "main" and report["databases"] == ["postgres", DB]
    assert {"check", "kind", "severity", "recommendation"} <= set(report["findings"][0])


def test_table_report_and_explain_flags_seq_scan(cli_db, tmp_path):
    code, out, err = advise(config_file(tmp_path, cli_db.dsn(DB)), "--target", "main",
                            "--explain", "SELECT id FROM big WHERE v = 3")
    assert code == 0, err
    assert "seq_scan" in out and "public.big" in out


def test_unknown_target(cli_db, tmp_path):
    code, out, err = advise(config_file(tmp_path, cli_db.dsn("postgres")), "--target", "nope")
    one_line_exit_2(code, out, err)
    assert "unknown target 'nope'" in err


def test_unparsable_sql_is_refused_before_connecting(tmp_path):
    # nothing listens on port 1: a connection attempt would fail differently (and exit 1)
    code, out, err = advise(config_file(tmp_path, "host=127.0.0.1 port=1 user=x password=pw123456"),
                            "--target", "main", "--explain", "SELEC id FROM big")
    one_line_exit_2(code, out, err)
    assert "does not parse" in err and "pw123456" not in err


def test_several_statements_are_refused(tmp_path):
    code, out, err = advise(config_file(tmp_path, "host=127.0.0.1 port=1 user=x"), "--target", "main",
                            "--explain", "SELECT 1; SELECT 2")
    one_line_exit_2(code, out, err)


def test_permission_denied(cli_db, tmp_path):
    dsn = cli_db.dsn(DB, user=ROLE, password=SECRET)
    code, out, err = advise(config_file(tmp_path, dsn), "--target", "main", "--explain", "SELECT id FROM private_t")
    one_line_exit_2(code, out, err)
    assert "permission denied" in err and SECRET not in err


def test_explain_analyze_of_a_write_is_refused_and_changes_nothing(cli_db, tmp_path):
    code, out, err = advise(config_file(tmp_path, cli_db.dsn(DB)), "--target", "main", "--analyze",
                            "--explain", "DELETE FROM big")
    one_line_exit_2(code, out, err)
    assert "read-only" in err
    assert cli_db.execute("SELECT count(*) FROM big", dbname=DB)[0][0] == 20000


def test_config_errors_exit_2(tmp_path):
    code, out, err = advise(tmp_path / "missing.yaml", "--target", "main")
    one_line_exit_2(code, out, err)
    assert "config error" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("targets: [\n")
    code, out, err = advise(bad, "--target", "main")
    one_line_exit_2(code, out, err)


def test_wrong_password_is_not_printed(tmp_path):
    from exporter.pgcluster import Cluster

    with Cluster() as cluster:  # its own, so it can require a password (works with DBPERF_TEST_DSN too)
        cluster.psql("CREATE ROLE advise_pw LOGIN PASSWORD 'Right-Passw0rd'")
        cluster.require_password("advise_pw")
        dsn = f"host=127.0.0.1 port={cluster.port} dbname=postgres user=advise_pw password=Wr0ngPassw0rd"
        code, out, err = advise(config_file(tmp_path, dsn), "--target", "main")
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1 and "Wr0ngPassw0rd" not in err and "cannot connect" in err


def test_a_server_lost_during_explain_is_exit_1(cli_db, tmp_path):
    """The server fails (here: the session is terminated while the planner folds an IMMUTABLE call
    that sleeps): exit 1, not the 2 of a refused statement."""
    from conftest import wait_until

    with cli_db.connect(DB) as conn:
        conn.execute("CREATE OR REPLACE FUNCTION slow_constant() RETURNS int IMMUTABLE LANGUAGE sql "
                     "AS 'SELECT 1 FROM pg_sleep(60)'")
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "advise", "--config",
                             str(config_file(tmp_path, cli_db.dsn(DB))), "--target", "main", "--timeout", "2m",
                             "--explain", "SELECT slow_constant()"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        sleeping = ("SELECT pid FROM pg_stat_activity WHERE application_name = 'dbperf-advise' "
                    "AND wait_event = 'PgSleep'")
        pids = wait_until(lambda: cli_db.execute(sleeping), timeout=60, message="advise planning the statement")
        cli_db.execute("SELECT pg_terminate_backend(%s)", params=(pids[0][0],))
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and out == "", err
    [line] = err.strip().splitlines()
    assert line.startswith("dbperf advise: --explain: the server failed: "), line
