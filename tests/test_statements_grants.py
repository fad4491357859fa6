"""A monitoring role without pg_read_all_stats (no pg_monitor), on the real server: pg_stat_statements
then hides the queryid (and text) of other roles' statements. dbperf sums them in
``queryid="other"`` of their database (never a ``queryid="None"`` series, never a failed
collector), the sums still equal the database's totals, and one log line names the grant."""

from __future__ import annotations

import logging
import uuid

import pytest

from conftest import make_config

pytestmark = pytest.mark.pg


@pytest.fixture
def plain_role(pg):
    role = "nostats_" + uuid.uuid4().hex[:8]
    pg.execute(f"CREATE ROLE {role} LOGIN")
    yield role
    pg.execute(f"DROP ROLE IF EXISTS {role}")


@pytest.fixture
def busy_db(pg):
    name = "grants_" + uuid.uuid4().hex[:8]
    pg.execute(f"CREATE DATABASE {name}")
    with pg.connect(name) as conn:  # as postgres: statements another role cannot see
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 200) g")
        for i in range(6):
            conn.execute(f"SELECT count(*) FROM t WHERE id > {i}")
            conn.execute(f"SELECT id FROM t WHERE id = {i}")
            conn.execute("SELECT pg_sleep(0.005)")
    yield name
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def totals(pg, datname: str) -> tuple:
    (calls, seconds, statements), = pg.execute(
        """SELECT sum(s.calls)::float8, sum(s.total_exec_time)::float8 / 1000, count(DISTINCT s.queryid)
           FROM pg_stat_statements(false) s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s""",
        params=(datname,))
    return calls, seconds, statements


def test_hidden_statements_fold_into_other_and_the_grant_is_named_once(pg, plain_role, busy_db, serve, caplog):
    target = "nograms_" + busy_db
    # the role sees neither the ids nor the texts of postgres' statements
    with pg.connect("postgres", user=plain_role) as conn:
        hidden = conn.execute("SELECT count(*) FROM pg_stat_statements WHERE queryid IS NULL").fetchone()[0]
    assert hidden > 0
    served = serve(make_config(pg, {"name": target, "dsn": pg.dsn("postgres", user=plain_role),
                                    "databases": {"discover": False},
                                    "statements": {"limit": 2, "sticky": 0, "query_text": True}}))
    with caplog.at_level(logging.INFO, logger="dbperf"):
        first = served.metrics()
        with pg.connect(busy_db) as conn:
            for _ in range(3):
                conn.execute("SELECT count(*) FROM t WHERE id > 1")
        second = served.metrics()
    calls, seconds, statements = totals(pg, busy_db)
    assert statements > 3  # more statements than the limit: there is something to rank
    for samples in (first, second):
        assert samples.value("dbperf_collector_success", collector="statements", datname="") == 1
        assert not [s for s in samples.samples if s.labels.get("queryid") == "None"]
        series = samples.series("pg_stat_statements_calls_total", datname=busy_db)
        # every statement of the database is postgres': hidden, so all of it is in other
        assert [s.labels["queryid"] for s in series] == ["other"]
        assert not samples.series("pg_stat_statements_query_info", datname=busy_db)
    assert second.value("pg_stat_statements_calls_total", datname=busy_db, queryid="other") == calls
    assert second.value("pg_stat_statements_seconds_total", datname=busy_db, queryid="other") == pytest.approx(
        seconds, rel=1e-9)
    # the histogram still counts the hidden statements' new calls
    assert second.value("pg_statement_duration_seconds_count", datname=busy_db) - first.value(
        "pg_statement_duration_seconds_count", datname=busy_db) == 3
    said = [r.getMessage() for r in caplog.records if r.name == "dbperf.statements" and target in r.getMessage()]
    assert len(said) == 1, said
    assert "pg_read_all_stats" in said[0] and f"GRANT pg_read_all_stats TO {plain_role}" in said[0]

    # once granted, the statements are ranked with their ids again
    pg.execute(f"GRANT pg_read_all_stats TO {plain_role}")
    try:
        granted = served.metrics()
    finally:
        pg.execute(f"REVOKE pg_read_all_stats FROM {plain_role}")
    ids = {s.labels["queryid"] for s in granted.series("pg_stat_statements_calls_total", datname=busy_db)}
    assert len(ids - {"other"}) == 2
    assert sum(s.value for s in granted.series("pg_stat_statements_calls_total", datname=busy_db)) == totals(
        pg, busy_db)[0]
