"""Real query samples on a real server: a client's statement with literals and a sqlcommenter route
tag is kept raw by the sampler, served redacted on /samples over real HTTP (raw with
samples.redact false), its route integrated in pg_route_active_seconds_total."""

from __future__ import annotations

import contextlib
import json
import threading

import psycopg
import pytest

import pgdist
from conftest import PG, Served, Samples, make_config, promtool_check_metrics, wait_until
from exporter.pgcluster import Cluster
from exporter.server import Exporter

pytestmark = pytest.mark.pg

DB = "dbperf_samples"
TOKEN = "samples-token-of-length-24"
ROUTE_TAG = "/*route='%2Forders%2F%7Bid%7D',framework='fastapi'*/"
SECRET = "abc-literal-7f3e"
SLOW = f"SELECT count(*), pg_sleep(30) FROM samples_t WHERE name LIKE '%{SECRET}' OFFSET 5000 {ROUTE_TAG}"
ROUTES = "pg_route_active_seconds_total"


@pytest.fixture(scope="module")
def db(pg):
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(DB,)):
        pg.execute(f"CREATE DATABASE {DB}")
    pg.execute("DROP TABLE IF EXISTS samples_t; CREATE TABLE samples_t (id int, name text); "
               "INSERT INTO samples_t SELECT i, 'n' || i FROM generate_series(1, 100) i", dbname=DB)
    return pg


@contextlib.contextmanager
def running(pg, sql: str, application: str = "shop"):
    """``sql`` running in a client session of its own until the block ends (then cancelled)."""
    conn = psycopg.connect(pg.dsn(DB), autocommit=True, application_name=application)
    pid = conn.info.backend_pid

    def run():
        with contextlib.suppress(psycopg.Error):
            conn.execute(sql)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    try:
        wait_until(lambda: pg.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                      params=(pid,))[0][0] == "active", message="the statement runs")
        yield pid
    finally:
        pg.execute("SELECT pg_cancel_backend(%s)", params=(pid,))
        worker.join(10)
        conn.close()


@contextlib.contextmanager
def served(pg, monkeypatch, state_dir="", **target):
    monkeypatch.setenv("DBPERF_TEST_SAMPLES_TOKEN", TOKEN)
    config = make_config(pg, {"wait_events": {"interval": "0.2s"}, **target},
                         private_endpoints={"token_env": "DBPERF_TEST_SAMPLES_TOKEN"},
                         **({"state_dir": state_dir} if state_dir else {}))
    server = Served(Exporter(config))
    try:
        yield server
    finally:
        server.close()


def sampler_of(server):
    from exporter.postgres.samples import sampler_of as find

    return find(server.exporter.scrapers["main"])


def get_samples(server, query: str = "target=main") -> tuple[int, dict]:
    status, text = server.get(f"/samples?{query}", headers={"Authorization": f"Bearer {TOKEN}"})
    return status, json.loads(text)


def seen(server, needle: str):
    sampler = sampler_of(server)
    found = [s for s in sampler.store.recent(100) if needle in s.text] if sampler else []
    return found[0] if found else None


def test_a_sample_is_kept_raw_served_redacted_and_its_route_counted(db, monkeypatch, tmp_path):
    from exporter.postgres.plan_history import PlanHistory, fingerprint

    with served(db, monkeypatch, state_dir=str(tmp_path)) as server:
        server.metrics("/probe?target=main")  # starts the sampler
        with running(db, SLOW) as pid:
            wait_until(lambda: seen(server, SECRET) is not None, message="the sample")
            queryid = db.execute("SELECT query_id::text FROM pg_stat_activity WHERE pid = %s", params=(pid,))[0][0]
            wait_until(lambda: seen(server, SECRET).duration > 0.5, message="a longer sample")
            sample = seen(server, SECRET)
            assert sample.text == SLOW and not sample.truncated  # raw, with its literals
            assert (sample.datname, sample.queryid, sample.application, sample.user) == (
                DB, queryid, "shop", db.execute("SELECT current_user")[0][0])
            assert (sample.wait_event_type, sample.wait_event) == ("Timeout", "PgSleep")
            assert sample.route == "/orders/{id}" and sample.pid == pid
            assert sampler_of(server).store.slowest(DB, queryid) == sample

            status, body = get_samples(server)
            assert status == 200 and body["redacted"] is True, body
            (item,) = [s for s in body["samples"] if s["queryid"] == queryid]
            assert SECRET not in json.dumps(body)
            assert item["text"] == ("SELECT count(*), pg_sleep(?) FROM samples_t WHERE name LIKE '%\u2026' OFFSET ? "
                                    + ROUTE_TAG)
            assert item["plans"] == [] and item["route"] == "/orders/{id}" and item["duration_seconds"] > 0.5

            # a plan the plans collector stored for this statement comes with its sample
            plan = {"Node Type": "Seq Scan", "Relation Name": "samples_t"}
            history = PlanHistory.for_target(str(tmp_path), "main")
            history.record(DB, queryid, plan, "sample", 1_700_000_000.0)
            history.save()
            (item,) = [s for s in get_samples(server)[1]["samples"] if s["queryid"] == queryid]
            assert [p["fingerprint"] for p in item["plans"]] == [fingerprint(plan)]
            assert item["application"] == "shop" and item["wait_event"] == "PgSleep"

            wait_until(lambda: sum(s.value for s in server.metrics("/probe?target=main").series(
                ROUTES, datname=DB, route="/orders/{id}", wait_event_type="Timeout")) > 0.5, message="route time")
        metrics = server.metrics("/probe?target=main")
        assert metrics.value("dbperf_collector_success", collector="route_wait_events", datname="") == 1
        assert promtool_check_metrics(metrics.text) == ""


def test_untagged_statements_count_as_route_empty_and_limit_is_checked(db, monkeypatch):
    with served(db, monkeypatch) as server:
        server.metrics("/probe?target=main")
        with running(db, "SELECT pg_sleep(30) /* no tag here */"):
            wait_until(lambda: Samples(server.get("/probe?target=main")[1]).series(ROUTES, datname=DB, route=""),
                       message="untagged time")
            status, body = get_samples(server, "target=main&limit=1")
            assert status == 200 and len(body["samples"]) == 1
            assert body["samples"][0]["text"] == "SELECT pg_sleep(?) /*\u2026*/"
        for bad in ("limit=0", "limit=x", "limit=100000"):
            status, body = get_samples(server, f"target=main&{bad}")
            assert status == 400 and "limit must be" in body["error"]
        status, text = server.get("/samples?target=main")
        assert status == 401


def test_redact_false_serves_the_raw_text_and_a_long_text_looks_truncated(db, monkeypatch):
    filler = "x" * 2000  # over track_activity_query_size's default 1024 bytes
    long_sql = f"/*route='%2Flong'*/ SELECT pg_sleep(30), '{SECRET}{filler}'"
    with served(db, monkeypatch, samples={"redact": False, "limit": 5}) as server:
        server.metrics("/probe?target=main")
        with running(db, long_sql):
            wait_until(lambda: seen(server, SECRET) is not None, message="the sample")
            sample = seen(server, SECRET)
            assert sample.truncated and long_sql.startswith(sample.text) and sample.route == "/long"
            status, body = get_samples(server)
            assert body["redacted"] is False and body["limit"] == 5
            (item,) = [s for s in body["samples"] if SECRET in s["text"]]
            assert item["truncated"] is True and item["text"] == sample.text
            wait_until(lambda: Samples(server.get("/probe?target=main")[1]).series(ROUTES, datname=DB, route="/long"),
                       message="the route of a truncated text, tagged at its start")


def test_before_the_first_scrape_there_is_no_sampler(db, monkeypatch):
    with served(db, monkeypatch) as server:
        status, body = get_samples(server)
        assert status == 200 and body["samples"] == [] and body["sampler"].startswith("not running")


@pytest.mark.parametrize("major", [13, 18])
def test_the_oldest_and_newest_majors(major):
    """PostgreSQL 13 has no query_id (a sample is keyed by its normalised text); 18 the newest."""
    from exporter.postgres.sampler import Sampler

    with Cluster(bindir=pgdist.bindir(major)) as cluster:
        other = PG(cluster, None)
        other.execute(f"CREATE DATABASE {DB}")
        other.execute("CREATE TABLE samples_t (id int, name text)", dbname=DB)
        sampler = Sampler(make_config(other).targets[0], interval=0.2)
        try:
            with running(other, SLOW):
                wait_until(lambda: sampler.sample_once() and len(sampler.store) > 0 and sampler.integrator.routes,
                           message="a sample and route time")
                (sample,) = sampler.store.recent(10)
            assert sample.text == SLOW and sample.route == "/orders/{id}"
            assert (sample.queryid is None) == (major < 14)
            assert sampler.store.slowest(DB, sample.key) == sample
            assert (DB, "/orders/{id}", "Timeout") in sampler.integrator.routes_snapshot()
        finally:
            sampler.close()


def test_dbperfs_own_statements_are_never_kept(db, monkeypatch):
    own = "SELECT pg_sleep(30), 'own-7d2a' /*application='dbperf'*/"
    with served(db, monkeypatch) as server:
        server.metrics("/probe?target=main")
        sampler = sampler_of(server)
        with running(db, own, application="dbperf-advise"), running(db, SLOW):
            wait_until(lambda: seen(server, SECRET) is not None, message="the other statement's sample")
            start = sampler.samples
            wait_until(lambda: sampler.samples >= start + 3, message="more samples")
            assert seen(server, "own-7d2a") is None
