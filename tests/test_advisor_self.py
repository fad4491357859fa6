"""The monitor never advises on itself, and says each thing once: after real dbperf scrapes (their
statements are in pg_stat_statements, their sessions in pg_stat_activity) ``dbperf advise`` has no
finding about dbperf's SQL or sessions, and no finding twice, although pg_stat_statements keeps
several rows per queryid (one per user, and per top level or nested)."""

from __future__ import annotations

import json

import pytest

from conftest import make_config, wait_until
from exporter.cli import main

pytestmark = pytest.mark.pg

DB = "advisor_self"
MONITOR, APP_A, APP_B = "dbperf_self_mon", "advisor_self_a", "advisor_self_b"
REPEATED = "SELECT id FROM items WHERE v NOT IN (SELECT v FROM gone)"
TWICE_IN_ONE = ("SELECT id FROM items WHERE v NOT IN (SELECT v FROM gone) "
                "AND id NOT IN (SELECT v FROM gone) AND v > 2")
OWN_MARK = "/*application='dbperf'*/"  # what every statement dbperf sends ends with
OWN_APPLICATIONS = ("dbperf", "dbperf-advise", "dbperf-recorder")  # dbperf's own sessions
MARKED = f"SELECT * FROM items WHERE id NOT IN (SELECT v FROM gone) AND v = 3 {OWN_MARK}"


@pytest.fixture(scope="module")
def advisor_self(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    for role in (MONITOR, APP_A, APP_B):
        if not pg.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", params=(role,)):
            pg.execute(f"CREATE ROLE {role} LOGIN")
    pg.execute(f"GRANT pg_monitor TO {MONITOR}")
    with pg.connect(DB) as conn:
        conn.execute(f"""
            CREATE TABLE items (id int, v int); CREATE TABLE gone (v int);
            INSERT INTO items SELECT g, g % 10 FROM generate_series(1, 100) g; INSERT INTO gone VALUES (1);
            GRANT SELECT ON items, gone TO {APP_A}, {APP_B}, {MONITOR};
            CREATE FUNCTION nested() RETURNS SETOF int LANGUAGE plpgsql AS $$
            BEGIN RETURN QUERY {REPEATED}; END $$;
        """)
    # one queryid, several pg_stat_statements rows: two users, top level and nested (track = all)
    for role in (APP_A, APP_B):
        with pg.connect(DB, user=role) as conn:
            conn.execute(REPEATED).fetchall()
            conn.execute(TWICE_IN_ONE).fetchall()
            conn.execute(MARKED).fetchall()
    with pg.connect(DB) as conn:
        conn.execute(REPEATED).fetchall()
        conn.execute("SELECT nested()").fetchall()
    return pg


def statement_rows(pg, sql: str) -> list:
    """The pg_stat_statements rows of the queryid of ``sql``, in this database."""
    return pg.execute("SELECT s.queryid, s.userid::regrole::text, s.toplevel, s.total_exec_time "
                      "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s "
                      "AND s.queryid IN (SELECT queryid FROM pg_stat_statements WHERE query = %s)", params=(DB, sql))


def advise(pg, capsys, tmp_path, *extra) -> dict:
    path = tmp_path / "advise.yaml"
    path.write_text(json.dumps({"targets": [{"name": "main", "dsn": pg.dsn("postgres", user=MONITOR),
                                             "databases": {"include": DB}}]}))
    capsys.readouterr()
    code = main(["advise", "--config", str(path), "--target", "main", "--format", "json", "--top", "5000", *extra])
    out, err = capsys.readouterr()
    assert code == 0 and err == "", err
    return json.loads(out)


@pytest.fixture(scope="module")
def scraped(advisor_self, tmp_path_factory):
    """A dbperf serving as the monitor role, scraped (all its collectors, the advisor's too); it
    stays up, holding its sessions, while the tests run."""
    from conftest import Served
    from exporter.server import Exporter

    config = make_config(advisor_self, {"dsn": advisor_self.dsn("postgres", user=MONITOR),
                                        "databases": {"include": DB}, "collectors": {"advisor": True}})
    served = Served(Exporter(config))
    try:
        for _ in range(2):
            samples = served.metrics()
            assert samples.value("dbperf_collector_success", collector="statements") == 1
        wait_until(lambda: advisor_self.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE userid = %s::regrole", params=(MONITOR,))[0][0] > 0,
            message="dbperf's statements in pg_stat_statements")
        yield advisor_self
    finally:
        served.close()


def test_no_advice_about_dbperfs_own_statements_or_sessions(scraped, capsys, tmp_path):
    sessions = scraped.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbperf'")[0][0]
    assert sessions >= 2  # what made "application 'dbperf' holds N connections; a pool of 2 ..."
    advise(scraped, capsys, tmp_path)  # the advisor's own statements are in pg_stat_statements too
    report = advise(scraped, capsys, tmp_path)
    own = {str(q) for (q,) in scraped.execute(
        "SELECT DISTINCT queryid FROM pg_stat_statements WHERE userid = %s::regrole", params=(MONITOR,))}
    about_own_sql = [f for f in report["findings"] if f["kind"] == "statement"
                     and f["subject"].removeprefix("queryid ") in own]
    assert about_own_sql == []
    about_own_sessions = [f for f in report["findings"] if f["kind"] == "connection"
                          and (f["subject"] in OWN_APPLICATIONS or "'dbperf" in f["message"])]
    assert about_own_sessions == []
    assert report["statements"]["dbperf_own_skipped"] >= 1
    usage = next(f for f in report["findings"] if f["check"] == "connection_usage")
    assert usage["details"]["dbperf_connections"] >= sessions + 1  # counted towards max_connections


def test_marked_statement_is_left_out(advisor_self, capsys, tmp_path):
    report = advise(advisor_self, capsys, tmp_path)
    marked = [f for f in report["findings"] if f["kind"] == "statement"
              and "SELECT * FROM items WHERE id NOT IN" in f["details"]["query"]]
    assert marked == []
    assert [f for f in report["findings"] if f["kind"] == "statement"], "the unmarked statements are judged"


def test_each_finding_once_per_queryid(advisor_self, capsys, tmp_path):
    rows = statement_rows(advisor_self, REPEATED)
    (queryid,) = {r[0] for r in rows}
    assert len(rows) >= 4, rows  # 3 users, and the nested call
    assert {r[2] for r in rows} == {True, False}
    report = advise(advisor_self, capsys, tmp_path)
    keys = [(f["kind"], f["check"], f["database"], f["subject"]) for f in report["findings"]]
    assert len(keys) == len(set(keys)), [k for k in keys if keys.count(k) > 1]
    repeated = [f for f in report["findings"] if f["subject"] == f"queryid {queryid}"]
    assert [f["check"] for f in repeated] == ["not_in_subquery"]
    assert repeated[0]["time_ms"] == pytest.approx(sum(r[3] for r in rows), abs=0.01)  # all its rows' time
    (twice,) = [f for f in report["findings"] if f["check"] == "not_in_subquery"
                and "AND id NOT IN" in f["details"]["query"]]
    assert twice["message"].startswith("v NOT IN (subquery)") and "(also: id NOT IN (subquery))" in twice["message"]


def test_explain_sent_by_advise_is_its_own_and_hides_no_application_statement(advisor_self, capsys, tmp_path):
    sql = "SELECT id FROM items WHERE id NOT IN (SELECT v FROM gone) AND v < 4"
    # dbperf's EXPLAIN first: the statement nested in it (EXPLAIN ... EXECUTE of the prepared
    # statement), which shares the application's queryid, is kept with the prepared text, marked
    advise(advisor_self, capsys, tmp_path, "--database", DB, "--analyze", "--explain", sql)
    with advisor_self.connect(DB, user=APP_A) as conn:
        conn.execute(sql).fetchall()
    rows = advisor_self.execute("SELECT queryid, toplevel, query FROM pg_stat_statements WHERE query LIKE %s",
                                params=("%NOT IN (SELECT v FROM gone) AND v < %",))
    assert any(not toplevel and q.endswith(OWN_MARK) for _, toplevel, q in rows), rows
    (app,) = {queryid for queryid, toplevel, q in rows if q.startswith("SELECT id")}
    assert any(not toplevel and queryid == app for queryid, toplevel, _ in rows), rows
    report = advise(advisor_self, capsys, tmp_path)
    statements = [f for f in report["findings"] if f["kind"] == "statement"]
    assert [f for f in statements
            if f["details"]["query"].startswith("EXPLAIN") or OWN_MARK in f["details"]["query"]] == []
    (judged,) = [f for f in statements if f["subject"] == f"queryid {app}"]
    assert judged["check"] == "not_in_subquery" and judged["details"]["query"].startswith("SELECT id FROM items")
