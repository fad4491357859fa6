"""The advisor on a real PostgreSQL: statement anti-patterns, index, maintenance and connection
findings, and EXPLAIN warnings. Everything lives in its own database, advisor_test."""

from __future__ import annotations

import json

import pytest

from exporter.advisor.statements import check_sql, predicate_columns, Unparsable
from exporter.cli import main
from conftest import wait_until

pytestmark = pytest.mark.pg

DB = "advisor_test"


# -- the parser-based checks on SQL strings -------------------------------------------------------
@pytest.mark.parametrize("sql, check", [
    ("SELECT * FROM t WHERE id = 1", "select_star"),
    ("SELECT t.* FROM t JOIN u ON u.id = t.uid", "select_star"),
    ("SELECT id FROM t WHERE name LIKE '%smith'", "leading_wildcard_like"),
    ("SELECT id FROM t WHERE name ILIKE '_mith'", "leading_wildcard_like"),
    ("UPDATE t SET a = 1", "update_without_where"),
    ("DELETE FROM t", "delete_without_where"),
    ("SELECT id FROM t ORDER BY random() LIMIT 1", "order_by_random"),
    ("SELECT id FROM t ORDER BY id LIMIT 10 OFFSET 5000", "large_offset"),
    ("SELECT id FROM t ORDER BY id LIMIT $1 OFFSET $2", "offset_pagination"),
    ("SELECT id FROM t WHERE a NOT IN (SELECT a FROM u)", "not_in_subquery"),
    ("SELECT id FROM t WHERE lower(email) = $1", "function_on_column"),
    ("SELECT id FROM t WHERE date(created_at) = '2024-01-01'", "function_on_column"),
    ("SELECT id FROM t WHERE created_at::date = $1", "function_on_column"),
    ("SELECT id FROM t x JOIN u ON u.id = x.uid WHERE upper(x.code) = 'A'", "function_on_column"),
])
def test_check_sql_flags_anti_pattern(sql, check):
    issues = check_sql(sql)
    assert check in [i.check for i in issues], issues
    assert all(i.recommendation for i in issues)


@pytest.mark.parametrize("sql", [
    "SELECT id, name FROM t WHERE id = $1",
    "SELECT count(*) FROM t WHERE EXISTS (SELECT * FROM u WHERE u.id = t.id)",
    "SELECT id FROM t WHERE name LIKE 'smith%'",
    "SELECT id FROM t ORDER BY id LIMIT 10 OFFSET 100",
    "UPDATE t SET a = 1 WHERE id = $1",
    "DELETE FROM t WHERE id = $1",
    "SELECT id FROM t WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.a = t.a)",
    "SELECT lower(email) FROM t WHERE id = $1",
    "SELECT id FROM t WHERE a = lower($1)",
])
def test_check_sql_clean(sql):
    assert check_sql(sql) == []


def test_unparsable_sql():
    with pytest.raises(Unparsable):
        check_sql("SELEC oops FROM")


def test_predicate_columns():
    cols = predicate_columns("SELECT a FROM s.t x JOIN u ON u.id = x.uid "
                             "WHERE x.a = $1 AND x.b > $2 AND u.c IN (1, 2) AND x.d BETWEEN 1 AND 2")
    assert cols[("s", "t")] == {"eq": ["a"], "range": ["b", "d"]}
    assert cols[(None, "u")] == {"eq": ["c"], "range": []}
    assert predicate_columns("not sql at all") == {}


# -- on the real server -----------------------------------------------------------------------------
STATEMENTS = {
    "select_star": "SELECT * FROM orders WHERE id = 1",
    "update_without_where": "UPDATE scratch SET v = v + 1",
    "delete_without_where": "DELETE FROM scratch",
    "order_by_random": "SELECT id FROM orders ORDER BY random() LIMIT 5",
    "offset_pagination": "SELECT id FROM orders ORDER BY id LIMIT 10 OFFSET 5000",
    "not_in_subquery": "SELECT id FROM orders WHERE customer_id NOT IN (SELECT customer_id FROM blocked)",
    "function_on_column": "SELECT id FROM orders WHERE lower(status) = 'open'",
}


@pytest.fixture(scope="module")
def advisor_db(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    with pg.connect(DB) as conn:
        conn.execute("""
            CREATE TABLE orders (id int PRIMARY KEY, customer_id int, status text, created_at timestamptz,
                                 note text);
            INSERT INTO orders SELECT g, g % 500, CASE WHEN g % 3 = 0 THEN 'open' ELSE 'closed' END,
                   now() - g * interval '1 minute', 'n' || g FROM generate_series(1, 20000) g;
            CREATE INDEX orders_note_idx ON orders (note);
            CREATE INDEX orders_created_idx ON orders (created_at);
            CREATE INDEX orders_created_copy ON orders (created_at);
            CREATE TABLE accounts (id int PRIMARY KEY, name text);
            INSERT INTO accounts SELECT g, 'a' || g FROM generate_series(1, 20000) g;
            CREATE TABLE scratch (v int);
            INSERT INTO scratch VALUES (1), (2);
            CREATE TABLE blocked (customer_id int);
            INSERT INTO blocked VALUES (1);
        """)
    # the inserting session reports its statistics when it ends: wait for them, then VACUUM ANALYZE,
    # so the clean table's statistics are really fresh
    wait_until(lambda: pg.execute("SELECT count(*) FROM pg_stat_user_tables WHERE n_tup_ins >= 20000",
                                  dbname=DB)[0][0] == 2, message="insert statistics")
    with pg.connect(DB) as conn:
        for table in ("orders", "accounts", "scratch", "blocked"):
            conn.execute(f"VACUUM ANALYZE {table}")
    with pg.connect(DB) as conn:
        for i in range(6):
            conn.execute(f"SELECT id FROM orders WHERE customer_id = {i}").fetchall()
            conn.execute(f"SELECT name FROM accounts WHERE id = {i + 1}").fetchall()
        for sql in STATEMENTS.values():
            conn.execute(sql)
    return pg


def advise_json(pg, capsys, tmp_path, *extra) -> dict:
    config = write_config(tmp_path, pg)
    capsys.readouterr()
    code = main(["advise", "--config", str(config), "--target", "main", "--format", "json", "--top", "500", *extra])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    return json.loads(out)


def write_config(tmp_path, pg, dsn: str | None = None):
    path = tmp_path / "advise.yaml"
    path.write_text(json.dumps({"targets": [{"name": "main", "dsn": dsn or pg.dsn("postgres"),
                                             "databases": {"include": DB}}]}))
    return path


def ours(report, **match) -> list:
    return [f for f in report["findings"] if f["database"] == DB
            and all(f[k] == v for k, v in match.items())]


@pytest.fixture(scope="module")
def report(advisor_db, tmp_path_factory):
    import io
    from contextlib import redirect_stdout

    path = write_config(tmp_path_factory.mktemp("advise"), advisor_db)
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        # --top 500: in this shared cluster the harness's own statements outrank the cheap ones here
        assert main(["advise", "--config", str(path), "--target", "main", "--format", "json",
                     "--top", "500"]) == 0
    return json.loads(buffer.getvalue())


def test_missing_index_names_the_filtered_column(report):
    found = ours(report, check="missing_index", subject="public.orders")
    assert len(found) == 1, report["findings"]
    assert found[0]["recommendation"] == \
        "CREATE INDEX CONCURRENTLY orders_customer_id_idx ON public.orders (customer_id);"
    assert found[0]["details"]["columns"] == ["customer_id"]


def test_unused_and_duplicate_indexes(report):
    unused = {f["subject"] for f in ours(report, check="unused_index")}
    assert "public.orders_note_idx" in unused
    assert "public.orders_pkey" not in unused
    dup = ours(report, check="duplicate_index")
    assert [f["subject"] for f in dup] == ["public.orders_created_idx"] or \
        [f["subject"] for f in dup] == ["public.orders_created_copy"], dup
    assert dup[0]["recommendation"].startswith("DROP INDEX CONCURRENTLY public.orders_created_")


def test_each_statement_anti_pattern_from_pg_stat_statements(report):
    checks = {f["check"] for f in ours(report, kind="statement")}
    missing = set(STATEMENTS) - checks
    assert not missing, (missing, [f["details"]["query"] for f in ours(report, kind="statement")])
    offset = ours(report, check="offset_pagination")[0]
    assert "normalised" in offset["message"] and offset["severity"] == "low"


def test_clean_table_and_queries_report_nothing(report):
    about_accounts = [f for f in ours(report) if "accounts" in f["subject"]
                      or "accounts" in f["details"].get("query", "")]
    assert about_accounts == []


def test_json_is_stable_and_sorted(advisor_db, report, capsys, tmp_path):
    again = advise_json(advisor_db, capsys, tmp_path)
    key = lambda r: [(f["kind"], f["check"], f["database"], f["subject"]) for f in r["findings"]
                     if f["kind"] in ("index", "statement") and f["database"] == DB]
    assert key(again) == key(report)
    times = [f["time_ms"] for f in report["findings"]]
    assert times == sorted(times, reverse=True)
    assert report["statements"]["examined"] >= len(STATEMENTS)


def test_table_format(advisor_db, capsys, tmp_path):
    config = write_config(tmp_path, advisor_db)
    capsys.readouterr()
    assert main(["advise", "--config", str(config), "--target", "main"]) == 0
    out = capsys.readouterr().out
    assert "SEVERITY" in out and "missing_index" in out
    assert "CREATE INDEX CONCURRENTLY orders_customer_id_idx ON public.orders (customer_id);" in out


def test_connection_findings(advisor_db, report):
    usage = [f for f in report["findings"] if f["check"] == "connection_usage"]
    assert len(usage) == 1 and "point-in-time" in report["note"]
    with advisor_db.connect(DB, application_name="advisor-app") as a, \
            advisor_db.connect(DB, application_name="advisor-app") as b:
        a.autocommit = False
        a.execute("SELECT 1")  # a is now idle in transaction
        b.execute("SELECT 1")
        from exporter.advisor.connections import connection_findings
        with advisor_db.connect("postgres") as conn:
            found = [f for f in connection_findings(conn) if f.subject == "advisor-app"]
        a.rollback()
    checks = {f.check for f in found}
    assert {"idle_in_transaction", "pool_size"} <= checks, found
    pool = next(f for f in found if f.check == "pool_size")
    assert "point-in-time" in pool.message and pool.details["suggested_pool"] == 2


def test_maintenance_needs_vacuum(advisor_db):
    from exporter.advisor.maintenance import maintenance_findings

    with advisor_db.connect(DB) as conn:
        conn.execute("CREATE TABLE churn (id int); ALTER TABLE churn SET (autovacuum_enabled = off);"
                     "INSERT INTO churn SELECT generate_series(1, 5000); DELETE FROM churn WHERE id <= 3000")
    with advisor_db.connect(DB) as conn:
        import time
        deadline = time.monotonic() + 10
        while True:
            found = [f for f in maintenance_findings(conn, DB) if f.subject == "public.churn"]
            if any(f.check == "needs_vacuum" for f in found) or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        conn.execute("DROP TABLE churn")
    vacuum = next(f for f in found if f.check == "needs_vacuum")
    assert vacuum.recommendation.startswith("VACUUM (ANALYZE) public.churn;")
    assert "never" in vacuum.message


def test_explain_flags_seq_scan_on_big_table(advisor_db, capsys, tmp_path):
    out = advise_json(advisor_db, capsys, tmp_path, "--database", DB,
                      "--explain", "SELECT id FROM orders WHERE status = 'open'")
    seq = [f for f in out["findings"] if f["check"] == "seq_scan"]
    assert seq and "public.orders" in seq[0]["subject"], out


def test_explain_analyze_warns_and_writes_nothing(advisor_db, capsys, tmp_path):
    out = advise_json(advisor_db, capsys, tmp_path, "--database", DB, "--analyze",
                      "--explain", "SELECT id FROM orders WHERE customer_id = 3 AND status = 'open' ORDER BY note")
    assert out["analyze"] is True
    assert any(f["check"] == "seq_scan" for f in out["findings"])
    assert any(f["check"] == "plan_summary" and "execution time" in f["message"] for f in out["findings"])


def test_explain_of_clean_query_has_no_warning(advisor_db, capsys, tmp_path):
    out = advise_json(advisor_db, capsys, tmp_path, "--database", DB,
                      "--explain", "SELECT name FROM accounts WHERE id = 5")
    assert [f["check"] for f in out["findings"]] == ["plan_summary"]




def test_findings_metric(advisor_db, serve):
    from conftest import make_config

    config = make_config(advisor_db, {"databases": {"include": DB}, "collectors": {"advisor": True}})
    samples = serve(config).metrics()
    assert samples.value("dbperf_advisor_findings", datname=DB, kind="index", check="unused_index",
                         severity="low") >= 1
    assert samples.value("dbperf_advisor_findings", datname=DB, kind="index", check="duplicate_index",
                         severity="medium") == 1
    assert samples.value("dbperf_collector_success", collector="advisor", datname=DB) == 1
