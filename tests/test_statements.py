"""The statements collector on the real cluster: exact counters, top N + other = totals, bounded
series under a rotating workload, the latency histogram, query text, the missing extension, and
the pseudo rows of dbperf's own statements and of transaction control.

Every test runs its workload in a database of its own and reads pg_stat_statements filtered by
that database, so statements run by other tests never change the numbers compared."""

from __future__ import annotations

import logging
import math
import uuid

import pytest

from conftest import Samples, make_config as _make_config, promtool_check_metrics
from exporter.postgres.statements import TRANSACTION_COMMANDS

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
        # the exact hint: one sentence, the command to run as it is typed, no stray ";"
        assert (f"failed: pg_stat_statements is not installed in database '{name}' (the database of the target's "
                "DSN); to enable it: add pg_stat_statements to shared_preload_libraries in postgresql.conf and "
                "restart PostgreSQL (unless it is there already), then run CREATE EXTENSION pg_stat_statements "
                f"in database '{name}' (repeats") in lines[0], lines[0]
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
        # created already: the hint is only what is missing
        assert ("failed: pg_stat_statements is installed in database 'postgres' but not loaded; to enable it: add "
                "pg_stat_statements to shared_preload_libraries in postgresql.conf and restart PostgreSQL (repeats"
                ) in lines[0], lines[0]
        served.close()


def psycopg_connect(dsn: str, **kw):
    import psycopg

    return psycopg.connect(dsn, autocommit=True, **kw)


# -- pseudo rows: dbperf's own statements and transaction control ----------------------------------
TC_WORKLOAD = (  # (statements run in one autocommit session, times, the command of each statement)
    (["BEGIN", "SELECT 1", "COMMIT"], 3, ["begin", None, "commit"]),
    (["START TRANSACTION ISOLATION LEVEL REPEATABLE READ", "END"], 2, ["begin", "commit"]),
    (["BEGIN", "ROLLBACK"], 9, ["begin", "rollback"]),
    (["begin", "abort"], 2, ["begin", "rollback"]),
    (["BEGIN", "SAVEPOINT a", "RELEASE SAVEPOINT a", "SAVEPOINT b", "ROLLBACK TO SAVEPOINT b", "COMMIT"], 2,
     ["begin", "savepoint", "release", "savepoint", "rollback_to_savepoint", "commit"]),
    (["BEGIN", "PREPARE TRANSACTION 'tx_a'", "COMMIT PREPARED 'tx_a'"], 1,
     ["begin", "prepare_transaction", "commit_prepared"]),
    (["BEGIN", "PREPARE TRANSACTION 'tx_b'", "ROLLBACK PREPARED 'tx_b'"], 1,
     ["begin", "prepare_transaction", "rollback_prepared"]),
)


@pytest.fixture(scope="module")
def xa_cluster():
    """A server of its own that allows PREPARE TRANSACTION (max_prepared_transactions > 0)."""
    from exporter.pgcluster import Cluster

    with Cluster(settings={"max_prepared_transactions": "4"}) as cluster:
        with psycopg_connect(cluster.dsn("postgres")) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
            conn.execute("CREATE DATABASE tc")
        yield cluster


def test_transaction_control_is_counted_per_command_and_never_ranked(pg, xa_cluster, serve):
    expected = {}
    # prepare_threshold=None: psycopg would prepare a statement run 5 times, and pg_stat_statements
    # does not count the later runs of a prepared utility statement (BEGIN, ROLLBACK ...)
    with psycopg_connect(xa_cluster.dsn("tc"), prepare_threshold=None) as conn:
        for statements, times, commands in TC_WORKLOAD:
            for _ in range(times):
                for sql, command in zip(statements, commands):
                    conn.execute(sql)
                    if command:
                        expected[command] = expected.get(command, 0) + 1
        conn.execute("SELECT count(*) FROM pg_class")
    served = serve(make_config(pg, {"dsn": xa_cluster.dsn("postgres"), "name": "tc",
                                    "statements": {"limit": 1, "rank_by": "calls", "sticky": 0}}))
    samples = served.metrics()
    got = {s.labels["command"]: s.value for s in
           samples.series("pg_stat_statements_transaction_control_calls_total", datname="tc")}
    assert got == expected
    assert set(got) == set(TRANSACTION_COMMANDS)
    # ranked by calls, the busiest statement of the database is the ROLLBACKs' BEGIN; it is not shown:
    # the one statement shown is the workload's busiest real statement, SELECT 1
    shown = [s for s in samples.series("pg_stat_statements_calls_total", datname="tc")
             if s.labels["queryid"] not in ("other", "dbperf", "transaction_control")]
    (select_1,) = xa_cluster_execute(xa_cluster, "SELECT s.queryid::text FROM pg_stat_statements s "
                                     "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'tc' AND s.query = 'SELECT $1'")
    assert [s.labels["queryid"] for s in shown] == [select_1[0]]
    tc_row = samples.value("pg_stat_statements_calls_total", datname="tc", queryid="transaction_control", user="")
    assert tc_row == sum(expected.values())
    # the sums still equal pg_stat_statements' totals for the database
    (total,), = xa_cluster_execute(xa_cluster, "SELECT sum(s.calls)::float8 FROM pg_stat_statements s "
                                   "JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = 'tc'")
    assert sum(s.value for s in samples.series("pg_stat_statements_calls_total", datname="tc")) == total
    assert promtool_check_metrics(samples.text) == ""


def xa_cluster_execute(cluster, sql: str) -> list:
    with psycopg_connect(cluster.dsn("postgres")) as conn:
        return conn.execute(sql).fetchall()


def test_statements_marked_as_dbperf_fold_into_the_dbperf_row(pg, db, serve):
    from exporter.postgres.sqlmark import mark

    with pg.connect(db) as conn:
        for _ in range(5):
            conn.execute(mark("SELECT count(*) FROM st_t"))
            conn.execute("SELECT count(*) FROM st_t WHERE k = 1")
        conn.execute(mark("SELECT pg_sleep(0.05)"))
    served = serve(make_config(pg, {"name": "own_" + db, "statements": {"limit": 5}}))
    samples = served.metrics()
    mine = truth(pg, db)
    own = {queryid: v for queryid, v in mine.items()
           if queryid in {queryid_of(pg, db, "SELECT count(*) FROM st_t /*%"),
                          queryid_of(pg, db, "SELECT pg_sleep($1) /*%")}}
    assert len(own) == 2
    assert exposed(samples, db) == (set(mine) - set(own)) | {"dbperf"}
    assert samples.value("pg_stat_statements_calls_total", datname=db, queryid="dbperf", user="") == 6
    assert samples.value("pg_stat_statements_seconds_total", datname=db, queryid="dbperf") == pytest.approx(
        sum(v[1] for v in own.values()), rel=1e-9)
    assert not samples.series("pg_stat_statements_transaction_control_calls_total", datname=db)


def test_text_is_read_once_per_new_statement_and_within_its_share_of_time(pg, db):
    """Driven directly, with a clock the test moves: a warm read reads no text; after a classifying
    read that took d, the next waits 49 d, and a statement first seen in between ranks as ordinary
    until then."""
    from exporter.collector import Context, ServerInfo
    from exporter.config import Target
    from exporter.postgres.connection import Connection
    from exporter.postgres.sqlmark import mark
    from exporter.postgres.statements import StatementsCollector

    now = [1000.0]

    def clock():
        now[0] += 1.0  # every reading advances one "second": a classifying read takes 1 s
        return now[0]

    collector = StatementsCollector(clock=clock)
    version = pg.execute("SHOW server_version_num")[0][0]
    ctx = Context(target="direct", datname="postgres", options=Target(name="direct", dsn=pg.dsn()),
                  server=ServerInfo(version=int(version), in_recovery=False, dbname="postgres",
                                    extensions=frozenset({"pg_stat_statements"})))
    conn = Connection(pg.dsn())
    state = collector.state
    try:
        collector.collect(conn, ctx)
        assert state.classify_reads == 1  # cold: every statement read once
        reads = []
        for _ in range(4):  # the collector's own statements of the first reads are new once
            now[0] += 1000.0
            collector.collect(conn, ctx)
            reads.append(state.classify_reads)
        assert reads[-1] == reads[-2], reads  # warm: no text read at all
        with pg.connect(db) as other:
            for _ in range(3):
                other.execute(mark("SELECT k FROM st_t WHERE id = 7"))
        families = {f.name: f for f in collector.collect(conn, ctx)}
        assert state.classify_reads == reads[-1] + 1  # a new statement: one read
        families = {f.name: f for f in collector.collect(conn, ctx)}
        assert state.classify_reads == reads[-1] + 1  # within 49 s of it: none
        with pg.connect(db) as other:
            other.execute(mark("SELECT k FROM st_t WHERE id = 8 AND k > 0"))
        families = {f.name: f for f in collector.collect(conn, ctx)}
        assert state.classify_reads == reads[-1] + 1
        queryid = queryid_of(pg, db, "SELECT k FROM st_t WHERE id = $1 AND k > $2 /*%")
        assert queryid in ranked_ids(families, db)  # not classified yet: an ordinary statement
        now[0] += 100.0
        families = {f.name: f for f in collector.collect(conn, ctx)}
        assert state.classify_reads == reads[-1] + 2
        assert queryid not in ranked_ids(families, db)
    finally:
        conn.close()


def ranked_ids(families: dict, datname: str) -> set:
    from exporter.metrics import render_family

    header, body = render_family(families["pg_stat_statements_calls_total"])
    return {s.labels["queryid"] for s in Samples(header + body).series("pg_stat_statements_calls_total",
                                                                         datname=datname)}


@pytest.mark.fast
def test_histogram_skips_a_hidden_group_that_lost_a_statement():
    """Without pg_read_all_stats, another role's statements of a database arrive summed in one row
    without queryid: when its calls go down one of them left (deallocated), and the others' new
    calls are unknown, so nothing is counted (an ordinary statement that went down was reset and
    counts its current calls)."""
    from exporter.postgres.statements import CALLS, EXEC, StatementsCollector, TargetState

    def row(queryid, calls, ms):
        values = [0.0] * 13
        values[CALLS - 5], values[EXEC - 5] = calls, ms
        return (1, 10, queryid, "db", "app", *values)

    collector, state = StatementsCollector(), TargetState()
    before = [row(None, 100, 1000.0), row("42", 50, 50.0)]
    collector._histograms(before, [None, None], state, first=True)
    after = [row(None, 60, 700.0), row("42", 5, 5.0)]
    collector._histograms(after, before, state, first=False)
    assert sum(state.histograms["db"].counts) == 5  # the reset statement's 5 calls, none of the group's
    later = [row(None, 64, 740.0), row("42", 5, 5.0)]
    collector._histograms(later, after, state, first=False)
    assert sum(state.histograms["db"].counts) == 9  # the group's 4 new calls
