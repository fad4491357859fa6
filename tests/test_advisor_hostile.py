"""``dbperf advise`` against hostile input, on a real server (issue 13, items 2, 3 and 9).

- ``--explain`` reaches the server as exactly one statement, in a session whose settings dbperf
  fixes whatever the DSN's ``options`` (or the role's own settings) say: the issue's attack string,
  sent through a session with ``standard_conforming_strings=off``, dropped a table; here the table
  survives, with and without ``--analyze``.
- ``--analyze`` refuses functions with side effects, naming them: ``pg_terminate_backend`` killed
  another session of the role; here the other session survives (also when the call hides in a
  view or in a STABLE wrapper function).
- Statements that carry a secret never show it, in the JSON or the table report, from
  ``--explain`` or from pg_stat_statements.
- A statement too deep for the parser (a 40,000-cast chain the server runs and pg_stat_statements
  keeps) is "not checked: statement too long" instead of a segfault of the advisor.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psycopg
import pytest

from conftest import ROOT
from exporter.cli import main

pytestmark = pytest.mark.pg

DB = "advisor_hostile"
ROLE = "advisor_hostile_mon"         # owns the victim table: today's code let it drop it
SCS_OFF_ROLE = "advisor_hostile_scs"  # ALTER ROLE ... SET standard_conforming_strings = off
SECRET = "LeakMe123!"
OTHER = "hostile_other"              # application_name of the session pg_terminate_backend aimed at
ATTACK = "SELECT 'a\\', $$'; COMMIT; BEGIN READ WRITE; DROP TABLE victim; COMMIT; -- $$"
SCS_OFF = "-c standard_conforming_strings=off"
LOOSE = f"{SCS_OFF} -c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0"


@pytest.fixture(scope="module")
def hostile(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    for role in (ROLE, SCS_OFF_ROLE):
        if not pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", params=(role,)):
            pg.execute(f"CREATE ROLE {role} LOGIN")
    pg.execute(f"ALTER ROLE {SCS_OFF_ROLE} SET standard_conforming_strings = off")
    pg.execute(f"GRANT pg_read_all_stats TO {ROLE}")
    pg.execute(f"ALTER DATABASE {DB} OWNER TO {ROLE}")
    with pg.connect(DB) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {ROLE}, {SCS_OFF_ROLE}")
    with pg.connect(DB, user=ROLE) as conn:
        conn.execute(f"""
            CREATE TABLE victim (id int); INSERT INTO victim VALUES (1);
            CREATE TABLE accounts (id int, api_token text, note text);
            INSERT INTO accounts SELECT g, md5(g::text), 'n' || g FROM generate_series(1, 20000) g;
            ANALYZE accounts;
            CREATE SEQUENCE s;
            CREATE FUNCTION kill_other() RETURNS bool LANGUAGE sql
              AS $$ SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity
                    WHERE application_name = '{OTHER}' $$;
            CREATE FUNCTION looks_harmless() RETURNS bool STABLE LANGUAGE plpgsql
              AS $$ BEGIN RETURN (SELECT bool_and(pg_terminate_backend(pid)) FROM pg_stat_activity
                    WHERE application_name = '{OTHER}'); END $$;
            CREATE FUNCTION wraps_harmless() RETURNS bool STABLE LANGUAGE sql AS $$ SELECT looks_harmless() $$;
            CREATE VIEW killer AS SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity
              WHERE application_name = '{OTHER}';
            GRANT SELECT ON victim TO {SCS_OFF_ROLE};
        """)
    with pg.connect(DB, user=SCS_OFF_ROLE) as conn:
        conn.execute("CREATE TABLE victim_scs (id int)")
    return pg


def write_config(tmp_path, dsn: str):
    path = tmp_path / "advise.yaml"
    path.write_text(json.dumps({"targets": [{"name": "main", "dsn": dsn, "databases": {"include": DB}}]}))
    return path


def advise(config, capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["advise", "--config", str(config), "--target", "main", *args])
    out, err = capsys.readouterr()
    return code, out, err


def table_exists(pg, name: str) -> bool:
    return pg.execute("SELECT to_regclass(%s) IS NOT NULL", dbname=DB, params=(name,))[0][0]


@pytest.fixture
def other_session(hostile):
    """Another session of the monitor role: what pg_terminate_backend(...) aimed at."""
    conn = psycopg.connect(hostile.dsn(DB, user=ROLE, application_name=OTHER), autocommit=True)
    try:
        yield conn
    finally:
        conn.close()


# -- item 2: one statement, in a session dbperf sets up --------------------------------------------
@pytest.mark.parametrize("analyze", [False, True], ids=["explain", "analyze"])
@pytest.mark.parametrize("options", [SCS_OFF, LOOSE], ids=["scs_off", "scs_off_and_no_limits"])
def test_attack_string_through_a_session_with_standard_strings_off_drops_nothing(hostile, capsys, tmp_path,
                                                                                 options, analyze):
    dsn = hostile.dsn(DB, user=ROLE, options=options)
    with psycopg.connect(dsn) as check:  # the DSN really sets it
        assert check.execute("SHOW standard_conforming_strings").fetchone()[0] == "off"
    code, out, err = advise(write_config(tmp_path, dsn), capsys, "--format", "json", "--explain", ATTACK,
                            *(["--analyze"] if analyze else []))
    assert table_exists(hostile, "victim"), "the attack string dropped the table"
    assert hostile.execute("SELECT count(*) FROM victim", dbname=DB)[0][0] == 1
    # with standard strings (PostgreSQL's default, and what dbperf's parser reads) it is one SELECT
    # of two string constants, and that is all the server ran
    assert code == 0, err
    report = json.loads(out)
    assert report["findings"][0]["check"] == "plan_summary" and report["findings"][0]["subject"] == "Result"


def test_attack_string_through_a_role_with_standard_strings_off_drops_nothing(hostile, capsys, tmp_path):
    dsn = hostile.dsn(DB, user=SCS_OFF_ROLE)
    with psycopg.connect(dsn) as check:  # the role's own setting
        assert check.execute("SHOW standard_conforming_strings").fetchone()[0] == "off"
    attack = ATTACK.replace("victim", "victim_scs")
    code, _, err = advise(write_config(tmp_path, dsn), capsys, "--explain", attack)
    assert table_exists(hostile, "victim_scs") and code == 0, err


def test_session_settings_are_fixed_whatever_the_dsn_says(hostile):
    from exporter.advisor.cli import connect
    from exporter.config import parse

    dsn = hostile.dsn(DB, user=ROLE, options=LOOSE + " -c idle_in_transaction_session_timeout=0 "
                      "-c client_encoding=LATIN1")
    (target,) = parse({"targets": [{"name": "main", "dsn": dsn}]}, source="test").targets
    conn = connect(target, None, 7.5, autocommit=False)
    try:
        conn.read_only = True
        row = conn.execute("SELECT current_setting('standard_conforming_strings'), "
                           "current_setting('transaction_read_only'), current_setting('statement_timeout'), "
                           "current_setting('lock_timeout'), current_setting('idle_in_transaction_session_timeout'), "
                           "current_setting('client_encoding')").fetchone()
    finally:
        conn.close()
    assert row[0] == "on" and row[1] == "on" and row[5] == "UTF8"
    assert row[2] == "7500ms" and row[3] != "0" and row[4] != "0", row


def test_any_text_reaches_the_server_whatever_the_dsns_client_encoding(hostile, capsys, tmp_path):
    config = write_config(tmp_path, hostile.dsn(DB, user=ROLE, options="-c client_encoding=LATIN1"))
    code, out, err = advise(config, capsys, "--format", "json", "--explain", "SELECT '€ ✓' AS sign")
    assert code == 0, err


def test_statement_timeout_holds_whatever_the_dsn_says(hostile, capsys, tmp_path):
    config = write_config(tmp_path, hostile.dsn(DB, user=ROLE, options=LOOSE))
    started = time.monotonic()
    code, out, err = advise(config, capsys, "--timeout", "1", "--analyze", "--explain",
                            "SELECT count(*) FROM generate_series(1, 100000) a, generate_series(1, 100000) b")
    assert code == 2 and out == "" and "statement timeout" in err, err
    assert time.monotonic() - started < 60  # unbounded, it would run for hours


def test_lock_timeout_holds_whatever_the_dsn_says(hostile, capsys, tmp_path):
    config = write_config(tmp_path, hostile.dsn(DB, user=ROLE, options=LOOSE))
    with hostile.connect(DB, user=ROLE) as locker:
        locker.execute("BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        code, _, err = advise(config, capsys, "--explain", "SELECT id FROM accounts WHERE id = 3")
        elapsed = time.monotonic() - started
        locker.execute("ROLLBACK")
    assert code == 2 and "lock timeout" in err, err
    assert elapsed < 60


@pytest.mark.parametrize("sql", [
    "CREATE TABLE made_by_explain (id int)",
    "SELECT 1 INTO made_by_explain",
    "DROP TABLE victim",
    "COMMIT",
    "SET default_transaction_read_only = off",
])
def test_only_select_insert_update_delete_values_with(hostile, capsys, tmp_path, sql):
    code, out, err = advise(write_config(tmp_path, hostile.dsn(DB, user=ROLE)), capsys, "--explain", sql)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert "SELECT, INSERT, UPDATE, DELETE, VALUES or WITH" in err
    assert table_exists(hostile, "victim") and not table_exists(hostile, "made_by_explain")


def test_writes_are_explained_but_never_analyzed(hostile, capsys, tmp_path):
    config = write_config(tmp_path, hostile.dsn(DB, user=ROLE))
    code, out, err = advise(config, capsys, "--format", "json", "--explain", "DELETE FROM victim")
    assert code == 0, err
    assert json.loads(out)["findings"][0]["subject"] == "ModifyTable on public.victim"
    for sql in ("DELETE FROM victim", "WITH gone AS (DELETE FROM victim RETURNING id) SELECT count(*) FROM gone",
                "SELECT id FROM victim FOR UPDATE", "UPDATE victim SET id = 2"):
        code, out, err = advise(config, capsys, "--analyze", "--explain", sql)
        assert code == 2 and out == "" and "read-only" in err and "modifies data" in err, (sql, err)
    assert hostile.execute("SELECT id FROM victim", dbname=DB) == [(1,)]


# -- item 2: side effects refused under --analyze, by name ----------------------------------------
KILL = f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{OTHER}'"


@pytest.mark.parametrize("sql, named", [
    (KILL, "pg_terminate_backend"),
    (f"SELECT pg_catalog.pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = '{OTHER}'",
     "pg_cancel_backend"),
    (f'SELECT "pg_terminate_backend"(pid) FROM pg_stat_activity WHERE application_name = \'{OTHER}\'',
     "pg_terminate_backend"),
    (f"SELECT id FROM victim WHERE id = (SELECT count(*) FROM pg_stat_activity WHERE "
     f"application_name = '{OTHER}' AND PG_TERMINATE_BACKEND(pid))", "pg_terminate_backend"),
    ("SELECT kill_other()", "kill_other"),                    # a VOLATILE function of the user's
    ("SELECT killed FROM killer", "pg_terminate_backend"),     # hidden in a view: seen in the plan
    ("SELECT looks_harmless()", "pg_terminate_backend"),       # declared STABLE: its body is read
    ("SELECT wraps_harmless()", "pg_terminate_backend"),       # ... and its callees' bodies
    ("SELECT pg_reload_conf()", "pg_reload_conf"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "set_config"),
    ("SELECT pg_advisory_lock(42)", "pg_advisory_lock"),
    ("SELECT nextval('s')", "nextval"),
    ("SELECT txid_current()", "txid_current"),
    ("SELECT pg_current_xact_id()", "pg_current_xact_id"),
    ("SELECT pg_notify('c', 'x')", "pg_notify"),
    ("SELECT lo_creat(-1)", "lo_creat"),
    ("SELECT pg_sleep(3600)", "pg_sleep"),
    ("SELECT pg_read_file('postgresql.conf')", "pg_read_file"),
    ("SELECT query_to_xml('DELETE FROM victim RETURNING id', true, false, '')", "query_to_xml"),
])
def test_analyze_refuses_functions_with_side_effects(hostile, capsys, tmp_path, other_session, sql, named):
    config = write_config(tmp_path, hostile.dsn(DB, user=ROLE))
    code, out, err = advise(config, capsys, "--analyze", "--explain", sql)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert f"{named}()" in err and "--analyze" in err, err
    assert other_session.execute("SELECT 1").fetchone() == (1,)  # still alive
    assert hostile.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", dbname=DB)[0][0] == 0
    assert hostile.execute("SELECT last_value, is_called FROM s", dbname=DB) == [(1, False)]
    assert table_exists(hostile, "victim")


def test_without_analyze_nothing_runs_so_nothing_is_refused(hostile, capsys, tmp_path, other_session):
    config = write_config(tmp_path, hostile.dsn(DB, user=ROLE))
    for sql in (KILL, "SELECT killed FROM killer", "SELECT nextval('s')"):
        code, out, err = advise(config, capsys, "--explain", sql)
        assert code == 0, (sql, err)
    assert other_session.execute("SELECT 1").fetchone() == (1,)
    assert hostile.execute("SELECT last_value, is_called FROM s", dbname=DB) == [(1, False)]


@pytest.mark.parametrize("sql", [
    "SELECT random(), clock_timestamp(), now(), gen_random_uuid(), pg_relation_size('accounts')",
    "SELECT id FROM accounts WHERE id < 10 ORDER BY random()",
    "SELECT count(*) FROM pg_locks",
    "SELECT a.pid, s.slot_name FROM pg_stat_activity a LEFT JOIN pg_replication_slots s ON s.active_pid = a.pid",
])
def test_analyze_runs_read_only_functions(hostile, capsys, tmp_path, sql):
    code, out, err = advise(write_config(tmp_path, hostile.dsn(DB, user=ROLE)), capsys, "--format", "json",
                            "--analyze", "--explain", sql)
    assert code == 0, err
    assert "execution time" in json.loads(out)["findings"][0]["message"]


# -- item 3: secrets never shown -----------------------------------------------------------------
@pytest.mark.parametrize("sql", [
    f"SELECT id FROM accounts WHERE api_token = '{SECRET}'",
    f"SELECT id FROM accounts WHERE note LIKE '%x%' AND api_token LIKE '%{SECRET}%'",
    f"SELECT pgp_sym_encrypt(note, '{SECRET}') FROM accounts WHERE note = 'n5'",
])
@pytest.mark.parametrize("fmt", ["json", "table"])
def test_explain_never_shows_a_secret(hostile, capsys, tmp_path, sql, fmt):
    code, out, err = advise(write_config(tmp_path, hostile.dsn(DB, user=ROLE)), capsys, "--format", fmt,
                            "--explain", sql)
    assert code == 0, err
    assert SECRET not in out and SECRET not in err
    assert "seq_scan" in out  # the advice is still there


def test_explain_error_of_a_secret_statement_never_shows_it(hostile, capsys, tmp_path):
    sql = f"SELECT id FROM accounts WHERE api_token = '{SECRET}'::int"  # the server's error quotes it
    code, out, err = advise(write_config(tmp_path, hostile.dsn(DB, user=ROLE)), capsys, "--explain", sql)
    assert code == 2 and SECRET not in err and SECRET not in out, err


@pytest.fixture(scope="module")
def leaked(hostile):
    """pg_stat_statements keeps secrets verbatim in utility statements: a role's password, and a
    CREATE TABLE AS whose filter compares a token with a literal (which also earns a finding)."""
    hostile.execute(f"ALTER ROLE {SCS_OFF_ROLE} PASSWORD '{SECRET}'", dbname=DB)
    hostile.execute(f"CREATE TABLE copied AS SELECT id FROM accounts WHERE lower(api_token) = '{SECRET}'", dbname=DB)
    rows = hostile.execute("SELECT query FROM pg_stat_statements WHERE strpos(query, %s) > 0", params=(SECRET,))
    assert len(rows) >= 2, rows  # the secrets are there, verbatim, for advise to find
    return hostile


@pytest.mark.parametrize("fmt", ["json", "table"])
def test_advise_never_shows_a_secret_from_pg_stat_statements(leaked, capsys, tmp_path, fmt):
    code, out, err = advise(write_config(tmp_path, leaked.dsn(DB)), capsys, "--format", fmt, "--top", "500")
    assert code == 0, err
    assert SECRET not in out and SECRET not in err
    if fmt == "json":
        report = json.loads(out)
        redacted = [f for f in report["findings"] if f["kind"] == "statement"
                    and "<redacted: statement carries a secret>" in f["details"]["query"]]
        assert [f["check"] for f in redacted] == ["function_on_column"]  # still judged, shown redacted


# -- item 9: bounded input -------------------------------------------------------------------------
def test_statement_too_deep_for_the_parser_is_not_checked_instead_of_a_crash(hostile, tmp_path):
    # The server runs (and pg_stat_statements keeps) a 40,000-cast chain that crashes the parser
    # advise uses (pglast: a segfault at some 33,000 levels); a 30,000-term sum the server refuses
    # itself ("stack depth limit exceeded"), so this is the deep statement pg_stat_statements can hold.
    with hostile.connect(DB) as conn:
        try:
            conn.execute("SET max_stack_depth = '7MB'")  # the 40,000 casts need more than the default 2 MB
        except psycopg.Error as exc:
            pytest.fail(f"the test's own server must take max_stack_depth = 7MB: {exc}")  # never a skip
        conn.execute("SELECT 1" + "::int" * 40000 + " FROM victim")  # FROM victim: a queryid of its own
    kept = hostile.execute("SELECT length(query) FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                           "WHERE d.datname = %s AND query LIKE 'SELECT $1::int::int%%FROM victim'", params=(DB,))
    assert kept and kept[0][0] > 200000, kept
    proc = subprocess.run([sys.executable, "-m", "exporter", "advise", "--config",
                           str(write_config(tmp_path, hostile.dsn(DB))), "--format", "json", "--top", "500"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    report = json.loads(proc.stdout)
    assert report["statements"]["too_long"] >= 1, report["statements"]
    proc = subprocess.run([sys.executable, "-m", "exporter", "advise", "--config",
                           str(write_config(tmp_path, hostile.dsn(DB))), "--top", "500"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0 and "not checked (statement too long)" in proc.stdout, proc.stderr[-2000:]



