"""The statements collector on the real cluster: exact counters, top N + other = totals, bounded
series under a rotating workload, the latency histogram, query text, and the missing extension.

Every test runs its workload in a database of its own and reads pg_stat_statements filtered by
that database, so statements run by other tests never change the numbers compared."""

from __future__ import annotations

import logging
import math
import uuid

import pytest

from conftest import make_config as _make_config, promtool_check_metrics

pytestmark = pytest.mark.pg


def make_config(pg, extra_target=None, **top):
    """The test's config, without database-scoped collectors: dbperf then runs no statements in
    the test's own database, so what the test compares there is only its own workload."""
    return _make_config(pg, {"databases": {"discover": False}, **(extra_target or {})}, **top)


FAMILIES = ("pg_stat_statements_calls_total", "pg_stat_statements_seconds_total",
            "pg_stat_statements_rows_total", "pg_stat_statements_shared_hit_bytes_total")


@pytest.fixture
def db(pg):
    name = "stmts_test_" + uuid.uuid4().hex[:8]
    pg.execute(f"CREATE DATABASE {name}")
    pg.execute("CREATE TABLE st_t AS SELECT g AS id, g % 7 AS k FROM generate_series(1, 1000) g", dbname=name)
    yield name
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def truth(pg, datname: str) -> dict:
    """queryid -> (calls, exec seconds, rows, pg_stat_statements rows) summed over toplevel rows."""
    rows = pg.execute(
        """SELECT s.queryid::text, sum(s.calls)::float8, sum(s.total_exec_time)::float8 / 1000, sum(s.rows)::float8,
                  count(*)
           FROM pg_stat_statements(false) s JOIN pg_database d ON d.oid = s.dbid
           WHERE d.datname = %s GROUP BY s.userid, s.queryid""", params=(datname,))
    return {r[0]: r[1:] for r in rows}


def series(samples, name: str, datname: str) -> list:
    return samples.series(name, datname=datname)


def workload(pg, datname: str) -> None:
    with pg.connect(datname) as conn:
        conn.execute("""CREATE FUNCTION nested() RETURNS void LANGUAGE plpgsql AS
                        $$ BEGIN EXECUTE 'SELECT count(*) FROM st_t'; END $$""")
        for i in range(12):
            conn.execute("SELECT count(*) FROM st_t")
            conn.execute("SELECT nested()")
            conn.execute(f"SELECT * FROM st_t WHERE k = {i % 7}")
            conn.execute(f"SELECT id FROM st_t WHERE id < {i * 10} ORDER BY id")
            conn.execute("UPDATE st_t SET k = k WHERE id = %s", (i,))
        for i in range(3):
            conn.execute("SELECT pg_sleep(0.01)")


def test_counters_equal_pg_stat_statements_summed_over_toplevel(pg, db, serve):
    workload(pg, db)
    expected = truth(pg, db)
    # the statement run both at top level and nested in nested() has two pg_stat_statements rows
    assert any(n == 2 for *_, n in expected.values()), expected
    served = serve(make_config(pg, {"statements": {"limit": 100}}))
    samples = served.metrics()
    assert samples.value("dbperf_collector_success", collector="statements", datname="") == 1
    assert promtool_check_metrics(samples.text) == ""
    for queryid, (calls, seconds, rows, _) in expected.items():
        assert samples.value("pg_stat_statements_calls_total", datname=db, queryid=queryid, user="postgres") == calls
        assert samples.value("pg_stat_statements_seconds_total", datname=db, queryid=queryid) == pytest.approx(seconds, rel=1e-9)
        assert samples.value("pg_stat_statements_rows_total", datname=db, queryid=queryid) == rows
    # every statement of the database fits under the limit: the remainder is empty
    assert not samples.series("pg_stat_statements_calls_total", datname=db, queryid="other")
    # the (default off) track_planning: no plan time series
    assert not samples.has("pg_stat_statements_plan_seconds_total")
    assert samples.value("pg_stat_statements_dealloc_total", target="main") >= 0
    assert samples.has("pg_stat_statements_stats_reset_timestamp_seconds")
    assert not samples.has("pg_stat_statements_query_info")


def test_top_n_plus_other_equals_database_totals(pg, db, serve):
    workload(pg, db)
    served = serve(make_config(pg, {"statements": {"limit": 3, "sticky": 0}}))
    samples = served.metrics()
    expected = truth(pg, db)
    assert len(expected) > 4
    calls = series(samples, "pg_stat_statements_calls_total", db)
    assert len(calls) == 4  # the top 3 and other
    assert sum(s.value for s in calls) == sum(v[0] for v in expected.values())
    seconds = series(samples, "pg_stat_statements_seconds_total", db)
    assert sum(s.value for s in seconds) == pytest.approx(sum(v[1] for v in expected.values()), rel=1e-9)
    # the top 3 by total time are the three slowest statements of the database
    top = {s.labels["queryid"] for s in seconds if s.labels["queryid"] != "other"}
    slowest = sorted(expected, key=lambda q: expected[q][1], reverse=True)[:3]
    assert top == set(slowest)
    assert promtool_check_metrics(samples.text) == ""


def test_series_stay_bounded_while_thousands_of_statements_rotate(pg, db, serve):
    limit = 10
    with pg.connect(db) as conn:
        for t in range(30):
            conn.execute(f"CREATE TABLE rot_{t} ({', '.join(f'c{c} int' for c in range(10))})")
    served = serve(make_config(pg, {"statements": {"limit": limit, "sticky": 600}}))
    served.metrics()
    seen_ids = set()
    with pg.connect(db) as conn:
        for round_ in range(6):  # 6 rounds of 500 new distinct statements: 3000 in all
            for n in range(round_ * 500, round_ * 500 + 500):
                t, a, b = n // 100, n // 10 % 10, n % 10
                conn.execute(f"SELECT c{a} FROM rot_{t} WHERE c{b} = 1")
            samples = served.metrics()
            for name in FAMILIES:
                found = series(samples, name, db)
                assert len(found) <= 2 * limit + 1, f"{name}: {len(found)} series after round {round_}"
            calls = series(samples, "pg_stat_statements_calls_total", db)
            seen_ids |= {s.labels["queryid"] for s in calls}
            assert sum(s.value for s in calls) == sum(v[0] for v in truth(pg, db).values())
    assert len(truth(pg, db)) >= 3000
    assert len(seen_ids) > 2 * limit + 1  # membership did move with the workload


def histogram_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative ``(le, count)`` pairs, sorted by le."""
    total = buckets[-1][1]
    rank = q * total
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return prev_bound
            return prev_bound + (bound - prev_bound) * (rank - prev_count) / (count - prev_count)
        prev_bound, prev_count = bound, count
    return math.nan


def bucket_counts(samples, datname: str) -> dict:
    return {float(s.labels["le"]): s.value for s in samples.series("pg_statement_duration_seconds_bucket", datname=datname)}


def test_latency_histogram_quantiles_match_a_known_workload(pg, db, serve):
    # no database-scoped collectors in the workload's database: only the workload runs there
    served = serve(make_config(pg))
    with pg.connect(db) as conn:
        conn.execute("SELECT 1")
    before = bucket_counts(served.metrics(), db)
    with pg.connect(db) as conn:
        for _ in range(20):
            conn.execute("SELECT pg_sleep(0.05)")
        for _ in range(5):
            conn.execute("SELECT 1 AS one, pg_sleep(0.3)")
    samples = served.metrics()
    after = bucket_counts(samples, db)
    buckets = sorted((le, after[le] - before.get(le, 0)) for le in after)
    assert buckets[-1][1] == 25, buckets
    p50, p95 = histogram_quantile(0.5, buckets), histogram_quantile(0.95, buckets)
    bounds = [le for le, _ in buckets]

    def bucket_of(x):
        upper = next(le for le in bounds if x <= le)
        lower = max([le for le in bounds if le < upper], default=0.0)
        return lower, upper

    low, high = bucket_of(0.0502)  # pg_sleep(0.05) takes a little over 50ms
    assert low < p50 <= high, (p50, buckets)
    low, high = bucket_of(0.3002)
    assert low < p95 <= high, (p95, buckets)
    total = samples.value("pg_statement_duration_seconds_sum", datname=db)
    assert total >= 2.5 and total < 3.0
    assert promtool_check_metrics(samples.text) == ""


def test_histogram_never_counts_negative_after_a_reset(pg, db, serve):
    served = serve(make_config(pg))
    with pg.connect(db) as conn:
        for _ in range(5):
            conn.execute("SELECT count(*) FROM st_t")
    served.metrics()
    with pg.connect(db) as conn:
        for _ in range(3):
            conn.execute("SELECT count(*) FROM st_t")
    first = served.metrics().value("pg_statement_duration_seconds_count", datname=db)
    pg.execute("SELECT pg_stat_statements_reset(0, d.oid, 0) FROM pg_database d WHERE d.datname = %s", params=(db,))
    with pg.connect(db) as conn:
        conn.execute("SELECT count(*) FROM st_t")
    second = served.metrics().value("pg_statement_duration_seconds_count", datname=db)
    assert first >= 3
    assert second == first + 1  # the statement came back with 1 call: +1, never negative


def test_query_text_only_when_enabled_and_truncated(pg, db, serve):
    with pg.connect(db) as conn:
        conn.execute("SELECT id,   k, id + k AS a_rather_long_alias_for_the_sum FROM st_t WHERE k = 3 ORDER BY id DESC")
    served = serve(make_config(pg, {"statements": {"query_text": True, "query_text_length": 30}}))
    samples = served.metrics()
    texts = {s.labels["queryid"]: s.labels["query"] for s in samples.series("pg_stat_statements_query_info", datname=db)}
    (queryid, full), = pg.execute(
        """SELECT s.queryid::text, s.query FROM pg_stat_statements(true) s JOIN pg_database d ON d.oid = s.dbid
           WHERE d.datname = %s AND s.query LIKE '%%a_rather_long_alias%%'""", params=(db,))
    assert texts[queryid] == " ".join(full.split())[:30] == "SELECT id, k, id + k AS a_rath"
    assert all(len(t) <= 30 for t in texts.values())
    assert "other" not in texts
    assert promtool_check_metrics(samples.text) == ""
    plain = serve(make_config(pg)).metrics()
    assert not plain.has("pg_stat_statements_query_info")


def test_missing_extension_fails_the_collector_with_a_clear_message(pg, serve, caplog):
    name = "stmts_noext_" + uuid.uuid4().hex[:8]
    pg.execute(f"CREATE DATABASE {name}")
    try:
        served = serve(make_config(pg, {"dsn": pg.dsn(name)}))
        with caplog.at_level(logging.WARNING, logger="dbperf.scrape"):
            samples = served.metrics()
        assert samples.value("pg_up", target="main") == 1
        assert samples.value("dbperf_collector_success", collector="statements", datname="") == 0
        assert samples.value("dbperf_collector_success", collector="live_queries", datname="") == 1
        assert not samples.has("pg_stat_statements_calls_total")
        lines = [r.getMessage() for r in caplog.records if "collector=statements" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "pg_stat_statements is not installed" in lines[0]
        assert "shared_preload_libraries" in lines[0] and "CREATE EXTENSION pg_stat_statements" in lines[0]
        assert name in lines[0]
    finally:
        pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def exposed(samples, datname: str) -> set:
    return {s.labels["queryid"] for s in series(samples, "pg_stat_statements_calls_total", datname)}


def queryid_of(pg, datname: str, like: str) -> str:
    (queryid,), = pg.execute("""SELECT DISTINCT s.queryid::text FROM pg_stat_statements(true) s
                                JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s AND s.query LIKE %s""",
                             params=(datname, like))
    return queryid


def test_sticky_membership_keeps_a_statement_that_left_the_top_n(pg, db, serve):
    # the collector instance is shared by every target: unique target names keep the tests' state apart
    options = {"databases": {"discover": False}, "statements": {"limit": 1}}
    sticky = serve(make_config(pg, {**options, "name": "sticky_" + db, "statements": {"limit": 1, "sticky": 600}}))
    loose = serve(make_config(pg, {**options, "name": "loose_" + db, "statements": {"limit": 1, "sticky": 0}}))
    with pg.connect(db) as conn:
        for _ in range(4):
            conn.execute("SELECT pg_sleep(0.05)")
    a = queryid_of(pg, db, "SELECT pg_sleep(%")
    assert a in exposed(sticky.metrics(), db) and a in exposed(loose.metrics(), db)
    with pg.connect(db) as conn:
        for _ in range(2):
            conn.execute("SELECT 1 AS b, pg_sleep(0.05)")
    b = queryid_of(pg, db, "SELECT $1 AS b, pg_sleep(%")
    # ranked on the increase since the last read: b is now the top statement
    assert exposed(sticky.metrics(), db) == {a, b, "other"}
    assert exposed(loose.metrics(), db) == {b, "other"}


def test_rank_by_calls(pg, db, serve):
    with pg.connect(db) as conn:
        for _ in range(50):
            conn.execute("SELECT 42")
        conn.execute("SELECT pg_sleep(0.2)")
    frequent = queryid_of(pg, db, "SELECT $1")
    slow = queryid_of(pg, db, "SELECT pg_sleep(%")
    by_calls = serve(make_config(pg, {"name": "calls_" + db, "statements": {"limit": 1, "rank_by": "calls"}}))
    by_time = serve(make_config(pg, {"name": "time_" + db, "statements": {"limit": 1}}))
    assert exposed(by_calls.metrics(), db) == {frequent, "other"}
    assert exposed(by_time.metrics(), db) == {slow, "other"}


def test_plan_time_is_exposed_when_track_planning_is_on(pg, db, serve):
    pg.execute("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
    pg.execute("SELECT pg_reload_conf()")
    try:
        from conftest import wait_until

        wait_until(lambda: pg.execute("SHOW pg_stat_statements.track_planning")[0][0] == "on", timeout=10)
        with pg.connect(db) as conn:
            for i in range(5):
                conn.execute(f"SELECT a.id FROM st_t a JOIN st_t b USING (id) WHERE a.k = {i}")
        (queryid, plan), = pg.execute(
            """SELECT s.queryid::text, sum(s.total_plan_time)::float8 / 1000 FROM pg_stat_statements(false) s
               JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s AND s.plans > 0
               GROUP BY s.userid, s.queryid""", params=(db,))
        samples = serve(make_config(pg, {"name": "plan_" + db})).metrics()
        assert plan > 0
        assert samples.value("pg_stat_statements_plan_seconds_total", datname=db, queryid=queryid) == pytest.approx(plan, rel=1e-9)
    finally:
        pg.execute("ALTER SYSTEM RESET pg_stat_statements.track_planning")
        pg.execute("SELECT pg_reload_conf()")


def test_sql_is_planned_per_server_version():
    from exporter.postgres.statements import StatementsCollector

    collector = StatementsCollector()
    pg13, pg16, pg17 = collector.sql(130000), collector.sql(160000), collector.sql(170000)
    assert "pg_stat_statements_info" not in pg13 and "pg_stat_statements_info" in pg16
    assert "s.blk_read_time" in pg16 and "shared_blk_read_time" not in pg16
    assert "s.shared_blk_read_time" in pg17 and "s.shared_blk_write_time" in pg17
    assert all("pg_stat_statements(false)" in sql and "pg_stat_statements(true)" not in sql
               for sql in (pg13, pg16, pg17))
    assert collector.min_version == 130000


def test_extension_installed_but_not_preloaded_fails_with_a_clear_message(pg, serve, caplog):
    from exporter.pgcluster import Cluster

    with Cluster(settings={"shared_preload_libraries": "''"}) as bare:  # its own: works with DBPERF_TEST_DSN too
        with psycopg_connect(bare.dsn("postgres")) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        served = serve(make_config(pg, {"dsn": bare.dsn("postgres"), "name": "bare"}))
        with caplog.at_level(logging.WARNING, logger="dbperf.scrape"):
            samples = served.metrics()
        assert samples.value("pg_up", target="bare") == 1
        assert samples.value("dbperf_collector_success", collector="statements", datname="") == 0
        lines = [r.getMessage() for r in caplog.records if "collector=statements" in r.getMessage()]
        assert len(lines) == 1, lines
        assert "installed but not loaded" in lines[0] and "shared_preload_libraries" in lines[0]
        served.close()


def psycopg_connect(dsn: str):
    import psycopg

    return psycopg.connect(dsn, autocommit=True)
