"""exporter.mysql.statements against a real throwaway MariaDB: the top N digests per schema, sticky
membership, an `other` remainder so the sums equal the digest table's totals, opt-in digest text,
and a full digest table detected (a second MariaDB with a tiny performance_schema_digests_size)."""

from __future__ import annotations

import logging

import pytest

from conftest import Samples, mysql_dsn
from exporter.collector import Context, ServerInfo
from exporter.metrics import Rendered
from exporter.mysql.connection import MySQLConnection
from exporter.mysql.statements import MySQLStatementsCollector
from exporter.target import StatementsOptions, Target

pytestmark = pytest.mark.pg

SCHEMA = "dbperf_stmt"
# five statements of one schema, run 1, 2, 3, 4 and 5 times
WORKLOAD = [f"SELECT id FROM t WHERE id > {n} AND {n} = {n}" + " AND 1 = 1" * n for n in range(5)]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def run_workload(server, times=(1, 2, 3, 4, 5)):
    conn = server.connect(database=SCHEMA)
    try:
        with conn.cursor() as cur:
            for sql, count in zip(WORKLOAD, times):
                for i in range(count):
                    cur.execute(sql.replace("id >", f"id + {i} >"))  # other literals, the same digest
                    cur.fetchall()
    finally:
        conn.close()


def table_totals(server, schema: str) -> dict:
    rows = server.execute("SELECT digest, count_star, sum_timer_wait, sum_rows_examined FROM "
                          "performance_schema.events_statements_summary_by_digest WHERE schema_name = %s", (schema,))
    return {digest: (calls, wait, examined) for digest, calls, wait, examined in rows}


def collect(collector, conn, **options) -> Samples:
    ctx = Context(target="t", datname="", server=ServerInfo(version=101100, in_recovery=False, flavour="mariadb"),
                  options=Target(name="t", dsn="", statements=StatementsOptions(**options)))
    rendered = Rendered()
    rendered.add_families(collector.collect(conn, ctx, 5.0), "")
    return Samples(rendered.encode().decode())


@pytest.fixture(scope="module")
def server(mariadb):
    mariadb.execute(f"CREATE DATABASE IF NOT EXISTS {SCHEMA}")
    mariadb.execute(f"CREATE TABLE IF NOT EXISTS {SCHEMA}.t (id INT PRIMARY KEY)")
    mariadb.execute(f"INSERT IGNORE INTO {SCHEMA}.t SELECT seq FROM {SCHEMA}.seq_1_to_10")
    mariadb.execute("TRUNCATE performance_schema.events_statements_summary_by_digest")
    return mariadb


@pytest.fixture
def conn(server):
    c = MySQLConnection(mysql_dsn(server))
    yield c
    c.close()


def test_top_n_per_schema_and_other_sum_to_the_tables_totals(server, conn):
    run_workload(server)
    collector = MySQLStatementsCollector(clock=Clock())
    samples = collect(collector, conn, limit=2, rank_by="calls")
    totals = table_totals(server, SCHEMA)
    assert len(totals) >= 5
    top = sorted(totals, key=lambda d: totals[d][0], reverse=True)[:2]
    shown = {s.labels["digest"] for s in samples.series("mysql_statements_calls_total", schema=SCHEMA)}
    assert shown == {*top, "other"}
    for name, column, divisor in (("mysql_statements_calls_total", 0, 1), ("mysql_statements_seconds_total", 1, 1e12),
                                  ("mysql_statements_rows_examined_total", 2, 1)):
        served = sum(s.value for s in samples.series(name, schema=SCHEMA))
        assert served == pytest.approx(sum(v[column] for v in totals.values()) / divisor, rel=1e-12), name
    assert samples.value("mysql_statements_calls_total", schema=SCHEMA, digest=top[0]) == totals[top[0]][0]
    assert samples.value("mysql_statements_digests_size") == 5000  # MariaDB's default
    assert samples.value("mysql_statements_digest_table_full") == 0
    assert samples.value("mysql_statements_digests") >= 5
    assert not samples.series("mysql_statements_query_info")  # text is opt-in


def test_a_digest_that_leaves_the_top_n_stays_for_the_sticky_time(server, conn):
    clock = Clock()
    collector = MySQLStatementsCollector(clock=clock)
    options = dict(limit=1, rank_by="calls", sticky=600)
    collect(collector, conn, **options)  # the first read ranks on the cumulative values
    run_workload(server, times=(0, 0, 0, 0, 6))
    first = {s.labels["digest"] for s in collect(collector, conn, **options).series("mysql_statements_calls_total",
                                                                                     schema=SCHEMA)}
    run_workload(server, times=(9, 0, 0, 0, 0))  # now another digest leads the increase
    clock.now += 60
    second = {s.labels["digest"] for s in collect(collector, conn, **options).series("mysql_statements_calls_total",
                                                                                      schema=SCHEMA)}
    assert len(first) == 2 and len(second) == 3 and first <= second  # the leader of before is still there
    run_workload(server, times=(9, 0, 0, 0, 0))
    clock.now += 601
    third = {s.labels["digest"] for s in collect(collector, conn, **options).series("mysql_statements_calls_total",
                                                                                     schema=SCHEMA)}
    assert len(third) == 2 and (first - {"other"}).isdisjoint(third)


def test_digest_text_is_opt_in_and_has_no_literals(server, conn):
    run_workload(server)
    samples = collect(MySQLStatementsCollector(clock=Clock()), conn, limit=20, query_text=True, query_text_length=60)
    texts = [s.labels["query"] for s in samples.series("mysql_statements_query_info", schema=SCHEMA)
             if s.labels["query"].startswith("SELECT ID FROM `t` WHERE")]
    assert len(texts) == 5 and all(len(t) <= 60 for t in texts), texts
    assert not any(str(n) in t.split("WHERE", 1)[1] for t in texts for n in range(2, 5)), texts


def test_a_full_digest_table_is_detected_and_summed_in_other(caplog):
    from exporter.mysqlcluster import MariaDB

    with MariaDB(settings={"performance-schema-digests-size": "10"}) as small:
        small.execute("CREATE DATABASE d")
        for n in range(30):  # thirty digests for a table of ten
            small.execute(f"SELECT {' + '.join(['1'] * (n + 1))} AS n")
        conn = MySQLConnection(small.dsn())
        null_row = ("SELECT COALESCE(schema_name, ''), SUM(count_star) FROM "
                    "performance_schema.events_statements_summary_by_digest WHERE digest IS NULL GROUP BY 1")
        try:
            (schema, before), = small.execute(null_row)
            with caplog.at_level(logging.WARNING, logger="dbperf"):
                samples = collect(MySQLStatementsCollector(clock=Clock()), conn, limit=50)
            (_, after), = small.execute(null_row)
            assert samples.value("mysql_statements_digest_table_full") == 1
            assert samples.value("mysql_statements_digests_size") == 10
            assert samples.value("mysql_statements_digest_lost_total") > 0
            # the NULL-digest row is its schema's other (every real digest there is shown: limit 50);
            # the row grows with every statement, the collector's own too: read before and after
            assert before <= samples.value("mysql_statements_calls_total", schema=schema, digest="other") <= after
            assert not samples.series("mysql_statements_calls_total", digest="None")
            warnings = [r.getMessage() for r in caplog.records if "digest table is full" in r.getMessage()]
            assert len(warnings) == 1 and "TRUNCATE performance_schema.events_statements_summary_by_digest" in warnings[0]
        finally:
            conn.close()


def test_the_latency_histogram_counts_each_digests_new_calls_at_their_mean(server, conn):
    run_workload(server, times=(1, 0, 0, 0, 0))  # the schema has digests before the baseline
    collector = MySQLStatementsCollector(clock=Clock())
    before = collect(collector, conn)  # the baseline: nothing counted yet
    assert before.value("mysql_statement_duration_seconds_count", schema=SCHEMA) == 0
    session = server.connect(database=SCHEMA)
    try:
        with session.cursor() as cur:
            for _ in range(10):
                cur.execute("SELECT SLEEP(0.015)")  # 15 ms each: the (0.01, 0.025] bucket
    finally:
        session.close()
    after = collect(collector, conn)

    def bucket(le: str) -> float:
        return after.value("mysql_statement_duration_seconds_bucket", schema=SCHEMA, le=le)

    assert bucket("0.025") - bucket("0.01") == 10
    assert after.value("mysql_statement_duration_seconds_count", schema=SCHEMA) >= 10  # and the session's SET NAMES
    assert after.value("mysql_statement_duration_seconds_sum", schema=SCHEMA) >= 0.15
    assert bucket("+Inf") == after.value("mysql_statement_duration_seconds_count", schema=SCHEMA)
