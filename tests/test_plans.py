"""The plans source (exporter.postgres.plans) on real servers: PostgreSQL 16's EXPLAIN (GENERIC_PLAN)
of pg_stat_statements' normalised text, a real sample's text on PostgreSQL 15 (the suite's server),
a plan change after an index is dropped, a lock or a missing privilege bounded and counted, the
state file surviving a restart. The source's clock is faked to skip plans.interval; the database
never is."""

from __future__ import annotations

import json
from dataclasses import dataclass

import psycopg
import pytest

import pgdist
from exporter.collector import Context
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.postgres.connection import Connection
from exporter.postgres.kind import POSTGRES, PROBE_SQL
from exporter.postgres.plan_history import PlanHistory, statement_plans
from exporter.postgres.plans import PlanSource
from exporter.postgres.statements import StatementsCollector
from exporter.state import state_file

pytestmark = pytest.mark.pg

DB = "shop"
QUERY = "SELECT count(*) FROM orders WHERE customer = %s"


@pytest.fixture(scope="module")
def pg16():
    with Cluster(bindir=pgdist.bindir(16)) as cluster:
        cluster.psql(f"CREATE DATABASE {DB}")
        cluster.psql("CREATE EXTENSION pg_stat_statements")
        cluster.psql("CREATE TABLE orders (id int PRIMARY KEY, customer int, note text); "
                     "INSERT INTO orders SELECT g, g % 5000, 'n' FROM generate_series(1, 50000) g; "
                     "CREATE INDEX orders_customer ON orders (customer); ANALYZE orders", dbname=DB)
        yield cluster


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def target_of(dsn: str, tmp_path, **plans):
    return parse({"state_dir": str(tmp_path), "targets": [
        {"name": "main", "dsn": dsn, "plans": {"enabled": True, "interval": "1m", **plans}}]}).targets[0]


def read_statements(target, statements: StatementsCollector):
    """One read of the statements collector (what a scrape does); the server's ServerInfo."""
    conn = Connection(target.dsn)
    try:
        server = POSTGRES.server_info(conn.query(PROBE_SQL, 5))
        statements.collect(conn, Context(target.name, server.dbname, server, target), 5)
    finally:
        conn.close()
    return server


def run(cluster_dsn: str, sql: str, params=(), times: int = 20, user_dsn: str | None = None):
    with psycopg.connect(user_dsn or cluster_dsn, autocommit=True) as conn:
        for i in range(times):
            conn.execute(sql, (i, *params) if "%s" in sql else None).fetchall()


def source_for(target, statements, clock, **kw) -> PlanSource:
    source = PlanSource(target, statements, clock=clock, **kw)
    source.server = read_statements(target, statements)
    return source


def queryid_of(dsn: str, db: str, like: str) -> str:
    with psycopg.connect(dsn) as conn:
        (queryid,), = conn.execute("SELECT DISTINCT s.queryid::text FROM pg_stat_statements s JOIN pg_database d "
                                   "ON d.oid = s.dbid WHERE d.datname = %s AND s.query LIKE %s", (db, like)).fetchall()
    return queryid


def family(source: PlanSource, name: str) -> list:
    return next(f for f in source.families() if f.name == name).samples


def test_generic_plan_then_a_change_when_the_index_is_dropped(pg16, tmp_path):
    run(pg16.dsn(DB), QUERY)
    target = target_of(pg16.dsn("postgres"), tmp_path)
    statements, clock = StatementsCollector(), Clock()
    source = source_for(target, statements, clock)
    assert source.run_once() >= 1
    key = (DB, queryid_of(pg16.dsn("postgres"), DB, "SELECT count(*) FROM orders WHERE customer = $1"))
    assert key in source.exposed()
    stored = statement_plans(str(tmp_path), "main", key[1])
    assert len(stored) == 1 and stored[0]["source"] == "generic"
    plan = json.dumps(stored[0]["plan"])
    assert "orders_customer" in plan and "$1" in plan  # the generic plan: the parameter, no constant
    first = stored[0]["fingerprint"]
    assert (DB, key[1], first) in [labels for _, labels, _ in family(source, "pg_statement_plan_info")]
    # the set-up's utility statements (CREATE TABLE, CREATE INDEX, ANALYZE) were refused once and no
    # longer take a place among the statements picked
    assert source.counters.refused >= 1 and source._unexplainable
    assert not source._unexplainable & set(source.pick())
    # not again within plans.interval
    source.run_once()
    assert statement_plans(str(tmp_path), "main", key[1]) == stored
    pg16.psql("DROP INDEX orders_customer", dbname=DB)
    try:
        run(pg16.dsn(DB), QUERY)
        clock.now += 61
        read_statements(target, statements)
        assert source.run_once() >= 1
        stored = statement_plans(str(tmp_path), "main", key[1])
        assert [p["fingerprint"] for p in stored][1:] == [first]
        assert "Seq Scan" in json.dumps(stored[0]["plan"]) and "orders_customer" not in json.dumps(stored[0]["plan"])
        assert ("", (DB, key[1]), 1) in family(source, "pg_statement_plan_changes_total")
        # a restart: the count and the plans come back from the state file
        again = PlanSource(target, statements, clock=clock)
        assert again.history.current(DB, key[1]) == (stored[0]["fingerprint"], 1)
    finally:
        pg16.psql("CREATE INDEX orders_customer ON orders (customer); ANALYZE orders", dbname=DB)


def test_a_lock_and_a_missing_privilege_fail_within_the_timeout(pg16, tmp_path):
    pg16.psql("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'watcher') THEN "
              "CREATE ROLE watcher LOGIN; GRANT pg_monitor TO watcher; END IF; END $$")
    run(pg16.dsn(DB), "SELECT note FROM orders WHERE id = %s")
    key = (DB, queryid_of(pg16.dsn("postgres"), DB, "SELECT note FROM orders WHERE id = $1"))
    statements, clock = StatementsCollector(), Clock()
    # the monitoring role may read pg_stat_statements, not the table: EXPLAIN is refused
    watcher = target_of(pg16.dsn("postgres", user="watcher"), tmp_path)
    source = source_for(watcher, statements, clock)
    assert key in source.pick()
    source.run_once()
    assert source.counters.failed >= 1 and source.history.current(*key) is None
    # a lock held on the table: the EXPLAIN waits, then fails at plans.timeout (below lock_timeout)
    target = target_of(pg16.dsn("postgres"), tmp_path / "su", timeout="300ms")
    locker = psycopg.connect(pg16.dsn(DB))
    try:
        locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
        source = source_for(target, StatementsCollector(), clock)
        import time

        started = time.monotonic()
        source.run_once()
        took = time.monotonic() - started
        assert source.counters.failed >= 1
        assert took < 0.3 * source.counters.failed + 2.0  # each EXPLAIN bounded by its timeout
    finally:
        locker.close()


@dataclass
class Sample:
    text: str
    truncated: bool = False


class Samples:
    """Stands in for the session sampler's store (sampler.store.slowest), holding real sample texts."""

    def __init__(self):
        self.by_key: dict = {}

    def slowest(self, datname: str, queryid: str):
        return self.by_key.get((datname, queryid))


def test_sample_text_on_15_with_literals_masked(pg, tmp_path):
    db = "dbperf_plans"
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(db,)):
        pg.execute(f"CREATE DATABASE {db}")
    pg.execute("CREATE TABLE IF NOT EXISTS items (id int PRIMARY KEY, name text); "
               "INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING; "
               "ANALYZE items", dbname=db)
    assert pg.execute("SHOW server_version_num")[0][0].startswith("15")
    # a real sample: what pg_stat_activity shows of a session that ran the statement (idle now)
    with pg.connect(db) as app:
        app.execute("SELECT name FROM items WHERE id = 42 AND name <> 'very-private'").fetchall()
        pid = app.info.backend_pid
        text, queryid = pg.execute("SELECT query, query_id::text FROM pg_stat_activity WHERE pid = %s",
                                   params=(pid,))[0]
    assert "very-private" in text and queryid
    target = target_of(pg.dsn("postgres"), tmp_path)
    statements, clock, samples = StatementsCollector(), Clock(), Samples()
    source = source_for(target, statements, clock, samples=lambda: samples)
    key = (db, queryid)
    assert key in source.pick()
    # no sample yet: PostgreSQL 15 has no GENERIC_PLAN, nothing to plan
    source.run_once()
    assert source.counters.no_text >= 1 and source.history.current(*key) is None
    samples.by_key[key] = Sample(text, truncated=True)  # cut at track_activity_query_size: not planned
    clock.now += 61
    before = source.counters.no_text
    source.run_once()
    assert source.counters.no_text > before and source.history.current(*key) is None
    samples.by_key[key] = Sample(text)
    clock.now += 61
    source.run_once()
    (stored,) = statement_plans(str(tmp_path), "main", queryid)
    assert stored["source"] == "sample" and stored["datname"] == db
    assert "items_pkey" in json.dumps(stored["plan"])
    kept = state_file(tmp_path, "plans", "main").read_text()
    assert "very-private" not in kept and "= 42" not in kept and "<redacted>" in kept
    assert PlanHistory(state_file(tmp_path, "plans", "main")).current(*key)[0] == stored["fingerprint"]


def test_the_collector_through_the_exporter(pg, tmp_path):
    """Served: the source's families at scrape time and its thread stopped with the exporter; a target
    whose database has no pg_stat_statements: unsupported, saying why."""
    from conftest import SECOND_DB, Served
    from exporter.server import Exporter

    config = parse({"listen": "127.0.0.1:0", "state_dir": str(tmp_path), "targets": [
        {"name": "main", "dsn": pg.dsn("postgres"), "plans": {"enabled": True, "interval": "1s"}},
        {"name": "bare", "dsn": pg.dsn(SECOND_DB), "plans": {"enabled": True}}]}, source="test-config")
    served = Served(Exporter(config))
    try:
        samples = served.metrics("/probe?target=main")
        assert samples.value("dbperf_collector_success", collector="plans") == 1
        assert samples.has("dbperf_plans_explained_total")
        (collector,) = [c for c in served.exporter.scrapers["main"].collectors if c.name == "plans"]
        assert collector.source.running
        bare = served.metrics("/probe?target=bare")
        assert bare.value("dbperf_collector_supported", collector="plans") == 0
        assert not bare.has("dbperf_collector_success", collector="plans")
    finally:
        served.close()
    assert not collector.source.running
