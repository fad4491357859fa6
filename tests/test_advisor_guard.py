"""What the advisor lets through, without a server (exporter.advisor.guard; issue 13, items 2, 3, 9):
input bounded before the parser (a 30,000-term expression segfaulted ``dbperf advise``), the
statements ``--explain`` takes, the calls ``--analyze`` refuses by name, and secrets masked.

The crash cases run in a child process (dbperf's own interpreter), so a segfault fails the test
instead of killing pytest."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pglast import parse_sql

from conftest import ROOT
from exporter.advisor import guard
from exporter.advisor.report import render_table
from exporter.advisor.statements import TooLong, Unparsable, check_sql, statement_findings

pytestmark = pytest.mark.fast

SECRET = "LeakMe123!"
NOWHERE = "host=127.0.0.1 port=1 user=x connect_timeout=1"  # nothing listens: parsing comes first


def advise_explain(tmp_path, sql: str, *extra):
    config = tmp_path / "advise.yaml"
    config.write_text(json.dumps({"targets": [{"name": "main", "dsn": NOWHERE}]}))
    return subprocess.run([sys.executable, "-m", "exporter", "advise", "--config", str(config), "--explain", sql,
                           *extra], capture_output=True, text=True, cwd=ROOT, timeout=120)


# -- item 9: bounded before parsing --------------------------------------------------------------
def test_a_30000_term_expression_is_one_line_and_exit_2_not_a_segfault(tmp_path):
    proc = advise_explain(tmp_path, "SELECT " + " + ".join(["1"] * 30000))
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-500:])  # was -11 (SIGSEGV)
    assert proc.stdout == "" and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("dbperf advise: --explain: statement too long: 30,000 operators and keywords")


def test_statements_at_the_bounds_are_parsed_and_checked_without_crashing():
    terms, nesting = guard.MAX_TERMS, guard.MAX_NESTING
    cases = [
        "SELECT " + "+".join(["1"] * terms),                                          # a left-deep sum
        "SELECT 1" + "::int" * (terms // 2 - 1),                                      # a cast chain
        " UNION ALL ".join(["SELECT * FROM t"] * (terms // 5)),                        # a set-operation chain
        "SELECT * FROM t0" + "".join(f" JOIN t{i} ON t{i}.a = 1" for i in range(1, terms // 5)),  # joins
        "SELECT " + "(SELECT " * (nesting - 1) + "1" + ")" * (nesting - 1),           # nested subqueries
        "SELECT " + "ROW(" * (nesting - 1) + "1" + ")" * (nesting - 1),               # nested rows
        "SELECT ARRAY" + "[" * nesting + "1" + "]" * nesting,                          # nested arrays
        "SELECT 'a'" + ' COLLATE "C"' * (terms - 2),                                   # a COLLATE chain
    ]
    for sql in cases:
        guard.bound(sql)  # within the bounds
    script = ("import json, sys\nfrom exporter.advisor.statements import check_sql, predicate_columns\n"
              "for sql in json.load(sys.stdin):\n    check_sql(sql); predicate_columns(sql)\nprint('ok')\n")
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(cases), capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout == "ok\n", (proc.returncode, proc.stderr[-1000:])


@pytest.mark.parametrize("sql, says", [
    ("SELECT 1 -- " + "x" * guard.MAX_CHARS, "characters"),
    ("SELECT " + "+".join(["1"] * (guard.MAX_TERMS + 1)), "operators and keywords"),
    ("SELECT " + "(" * (guard.MAX_NESTING + 1) + "1" + ")" * (guard.MAX_NESTING + 1), "nested too deep"),
])
def test_over_a_bound_is_too_long_for_every_parse(sql, says):
    with pytest.raises(guard.TooLong, match=says):
        guard.bound(sql)
    with pytest.raises(TooLong, match=says):
        check_sql(sql)
    assert issubclass(TooLong, Unparsable)


def test_long_in_lists_and_values_are_not_too_long():
    sql = "SELECT id FROM t WHERE a IN (" + ", ".join(f"${i}" for i in range(1, 20001)) + ")"
    guard.bound(sql)
    assert [i.check for i in check_sql(sql)] == []
    guard.bound("INSERT INTO t VALUES " + ", ".join(f"({i}, 'x')" for i in range(5000)))


def test_a_chain_of_1900_unions_is_checked():
    sql = " UNION ALL ".join(["SELECT * FROM t"] * 1900)  # was a RecursionError traceback
    assert [i.check for i in check_sql(sql)] == ["select_star"]


def test_pg_stat_statements_texts_over_the_bounds_are_counted_not_checked():
    statements = [{"queryid": 1, "datname": "d", "query": "SELECT 1" + "::int" * 40000, "calls": 1,
                   "total_ms": 5.0, "rows": 1},
                  {"queryid": 2, "datname": "d", "query": "SELEC oops", "calls": 1, "total_ms": 1.0, "rows": 0}]
    findings, skipped = statement_findings(statements)
    assert findings == [] and skipped == {"too_long": 1, "unparsable": 1}
    meta = {"target": "t", "statements": {"checked": True, "examined": 2, "dbperf_own_skipped": 0, **skipped}}
    assert "statements: 2 examined, 1 unparsable, 1 not checked (statement too long), 0 of dbperf's own left out" \
        in render_table(meta, [])


# -- item 2: what --explain takes ----------------------------------------------------------------
def problem(sql: str, analyze: bool = False):
    (raw,) = parse_sql(sql)
    return guard.statement_problem(raw, sql, analyze)


@pytest.mark.parametrize("sql", [
    "SELECT 1", "VALUES (1), (2)", "WITH x AS (SELECT 1) SELECT * FROM x", "(SELECT 1) UNION SELECT 2",
])
def test_reading_statements_are_explained_and_analyzed(sql):
    assert problem(sql) is None and problem(sql, analyze=True) is None


@pytest.mark.parametrize("sql", [
    "INSERT INTO t VALUES (1)", "UPDATE t SET a = 1", "DELETE FROM t",
    "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "SELECT * FROM t FOR UPDATE",
    "SELECT * FROM t FOR KEY SHARE", "SELECT (WITH u AS (UPDATE t SET a = 1 RETURNING a) SELECT a FROM u)",
])
def test_writes_are_explained_but_not_analyzed(sql):
    assert problem(sql) is None
    refused = problem(sql, analyze=True)
    assert "read-only transaction" in refused and "modifies data" in refused


@pytest.mark.parametrize("sql, word", [
    ("CREATE TABLE t (a int)", "CREATE"), ("COMMIT", "COMMIT"), ("SET x = 1", "SET"), ("DO $$ BEGIN END $$", "DO"),
    ("COPY t TO STDOUT", "COPY"), ("EXPLAIN SELECT 1", "EXPLAIN"), ("/* hi */ DROP TABLE t", "DROP"),
    ("MERGE INTO t USING s ON t.a = s.a WHEN MATCHED THEN DELETE", "MERGE"), ("CALL p()", "CALL"),
])
def test_other_statements_are_refused_naming_them(sql, word):
    assert problem(sql) == f"--explain takes one SELECT, INSERT, UPDATE, DELETE, VALUES or WITH statement, not {word}"


def test_a_nul_character_is_refused():
    from exporter.advisor import AdviseError
    from exporter.advisor.explain import validate

    with pytest.raises(AdviseError, match="NUL character"):
        validate("SELECT 1\x00; DROP TABLE victim")


def test_select_into_and_parameters_are_refused():
    assert "SELECT ... INTO" in problem("SELECT 1 INTO t")
    assert "parameters" in problem("SELECT * FROM t WHERE a = $1")


# -- item 2: the calls --analyze refuses -----------------------------------------------------------
def test_calls_finds_every_name_before_a_parenthesis_however_written():
    names, operators = guard.calls(
        'SELECT "pg_terminate_backend"(pid), PG_SLEEP(1), pg_catalog.set_config(a, b, c), U&"\\0070g_notify"(x), '
        "'nextval(1)' FROM t WHERE a <> b AND c || d = e /* lo_unlink(1) */")
    assert {"pg_terminate_backend", "pg_sleep", "set_config", "pg_notify"} <= names
    assert "nextval" not in names and "lo_unlink" not in names  # in a literal, in a comment
    assert {"<>", "||", "="} <= operators


@pytest.mark.parametrize("name", [
    "pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile", "set_config",
    "pg_advisory_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_lock", "dblink", "dblink_exec", "lo_import",
    "lo_unlink", "pg_file_write", "pg_write_anything", "pg_read_file", "pg_read_binary_file", "nextval", "setval",
    "txid_current", "pg_current_xact_id", "pg_notify", "pg_sleep", "pg_sleep_for", "query_to_xml",
    "pg_create_logical_replication_slot", "pg_stat_reset", "pg_stat_statements_reset",
])
def test_known_side_effects_are_denied(name):
    assert guard.denied(name)


@pytest.mark.parametrize("name", ["random", "clock_timestamp", "now", "count", "lower", "pg_relation_size",
                                  "pg_stat_statements", "pg_lock_status", "generate_series",
                                  "pg_get_replication_slots", "pg_stat_get_activity"])
def test_read_only_functions_are_not_denied(name):
    assert guard.denied(name) is None


# -- item 3: secrets masked ----------------------------------------------------------------------
def test_a_statement_with_a_secret_is_shown_redacted_and_checked_masked():
    statements = [{"queryid": 7, "datname": "d", "calls": 3, "total_ms": 9.0, "rows": 1,
                   "query": f"CREATE TABLE c AS SELECT * FROM accounts WHERE lower(api_token) = '{SECRET}' "
                            f"AND api_token LIKE '%{SECRET}'"}]
    findings, _ = statement_findings(statements)
    assert {f.check for f in findings} == {"function_on_column"}  # still judged (the LIKE pattern is masked)
    assert all(f.details["query"] == "CREATE <redacted: statement carries a secret>" for f in findings)
    assert SECRET not in json.dumps([f.as_dict() for f in findings])


def test_masking_covers_both_readings_of_standard_strings():
    sql = f"SELECT 'a\\', '{SECRET}' FROM t WHERE api_token = E'x\\'{SECRET}'"
    masked = guard.mask_literals(sql)
    assert SECRET not in masked
    parse_sql(masked)  # still SQL
    plan = {"Plan": {"Filter": f"(api_token = '{SECRET}'::text)", "Output": [f"'{SECRET}'::text"],
                     "Node Type": "Seq Scan", "Plans": [{"Index Cond": f"(a = '{SECRET}')"}]}}
    assert SECRET not in json.dumps(guard.mask_plan(plan))
    assert guard.mask_plan(plan)["Plan"]["Node Type"] == "Seq Scan"
