"""The session sampler on a real server: lock waits, CPU and per-statement load integrated at about
one second per second per session, a frozen sampler backend, compute_query_id off, a clean stop."""

from __future__ import annotations

import contextlib
import threading
import time

import psycopg
import pytest

from conftest import PG, Samples, make_config, promtool_check_metrics, wait_until
from exporter.pgcluster import Cluster
from exporter.server import Exporter
from freezing import frozen, postmaster_pid

pytestmark = pytest.mark.pg

DB = "dbperf_waits"
INTERVAL = 0.5
UPDATE = "UPDATE waits_t SET v = v + 1 WHERE id = 1"
LOCK = "pg_active_sessions_seconds_total"
STMT = "pg_statement_active_seconds_total"


def _with_waits_table(pg):
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(DB,)):
        pg.execute(f"CREATE DATABASE {DB}")
    pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", dbname=DB)
    pg.execute("DROP TABLE IF EXISTS waits_t; CREATE TABLE waits_t (id int PRIMARY KEY, v int); "
               "INSERT INTO waits_t VALUES (1, 0)", dbname=DB)
    return pg


@pytest.fixture(scope="module")
def waitsdb(pg):
    return _with_waits_table(pg)


@pytest.fixture(scope="module")
def freezable():
    """A cluster of this module's own, whose backends and postmaster a test may freeze (never the
    shared one, which may be $DBPERF_TEST_DSN's server)."""
    with Cluster() as cluster:
        yield _with_waits_table(PG(cluster, None))


@contextlib.contextmanager
def exporter_for(pg, **target):
    config = make_config(pg, {"wait_events": {"interval": f"{INTERVAL}s"}, **target})
    exporter = Exporter(config)
    try:
        yield exporter
    finally:
        exporter.close()


def scrape(exporter) -> Samples:
    return Samples(exporter.probe("main", 10.0).decode())


def sampler_of(exporter):
    (collector,) = [c for c in exporter.scrapers["main"].collectors if c.name == "wait_events"]
    return collector.shared.sampler


def total(samples: Samples, name: str, **labels) -> float:
    return sum(s.value for s in samples.series(name, **labels))


def rate_over(exporter, name: str, samples_taken: int = 8, **labels) -> tuple[float, Samples]:
    """Per second increase of ``name{labels}`` (summed) between two scrapes ``samples_taken``
    samples apart, and the last scrape; no sample may fail in between."""
    sampler = sampler_of(exporter)
    first, t1, failed = scrape(exporter), time.monotonic(), sampler.failures
    start = sampler.samples
    wait_until(lambda: sampler.samples >= start + samples_taken, timeout=30, message="samples")
    last, t2 = scrape(exporter), time.monotonic()
    assert sampler.failures == failed, sampler.last_error
    return (total(last, name, **labels) - total(first, name, **labels)) / (t2 - t1), last


@contextlib.contextmanager
def blocked_updates(pg, waiters: int):
    """One session holds the row lock of waits_t(1) (idle in transaction); ``waiters`` sessions
    are blocked on it, each running UPDATE."""
    holder = psycopg.connect(pg.dsn(DB))
    holder.execute(UPDATE)
    conns = [psycopg.connect(pg.dsn(DB), autocommit=True) for _ in range(waiters)]
    threads = [threading.Thread(target=c.execute, args=(UPDATE,), daemon=True) for c in conns]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                                      "wait_event_type = 'Lock'", params=(DB,))[0][0] == waiters, message="waiters")
        yield [c.info.backend_pid for c in conns]
    finally:
        holder.rollback()
        holder.close()
        for t in threads:
            t.join(10)
        for c in conns:
            c.close()


def test_lock_waits_and_the_blocked_statement_grow_at_one_second_per_second_per_session(waitsdb):
    waitsdb.execute(UPDATE, dbname=DB)  # completed once: in pg_stat_statements, shown by the statements collector
    with exporter_for(waitsdb) as exporter:
        scrape(exporter)  # starts the sampler; the statements collector's first read shows the UPDATE
        with blocked_updates(waitsdb, 2) as pids:
            queryid = str(waitsdb.execute("SELECT query_id FROM pg_stat_activity WHERE pid = %s",
                                          params=(pids[0],))[0][0])
            wait_until(lambda: total(scrape(exporter), LOCK, datname=DB, wait_event_type="Lock") > 0, message="lock load")
            lock_rate, last = rate_over(exporter, LOCK, datname=DB, state="active", wait_event_type="Lock")
            assert 1.6 <= lock_rate <= 2.4, lock_rate  # two sessions waiting
            # the first waits on the holder's transaction id, the second for the tuple lock the first holds
            events = {s.labels["wait_event"] for s in last.series(LOCK, datname=DB, wait_event_type="Lock")}
            assert "transactionid" in events and events <= {"transactionid", "tuple"}, events
            idle_rate, _ = rate_over(exporter, LOCK, datname=DB, state="idle in transaction",
                                     wait_event_type="Client", wait_event="ClientRead")
            assert 0.8 <= idle_rate <= 1.2, idle_rate  # the holder
            statement_rate, last = rate_over(exporter, STMT, datname=DB, queryid=queryid, wait_event_type="Lock")
            assert 1.6 <= statement_rate <= 2.4, (statement_rate, last.series(STMT, datname=DB))
        assert last.value("dbperf_collector_success", collector="wait_events", datname="") == 1
        assert last.value("dbperf_sampler_interval_seconds") == INTERVAL
        assert last.value("dbperf_sampler_last_sample_duration_seconds") < INTERVAL


def test_a_cpu_bound_query_shows_as_cpu(waitsdb):
    with exporter_for(waitsdb) as exporter:
        scrape(exporter)
        busy = psycopg.connect(waitsdb.dsn(DB), autocommit=True)
        pid = busy.info.backend_pid
        worker = threading.Thread(target=_spin, args=(busy,), daemon=True)
        worker.start()
        try:
            wait_until(lambda: waitsdb.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                               params=(pid,))[0][0] == "active", message="the query runs")
            cpu_rate, _ = rate_over(exporter, LOCK, datname=DB, state="active", wait_event_type="CPU", wait_event="CPU")
            assert 0.8 <= cpu_rate <= 1.2, cpu_rate
        finally:
            waitsdb.execute("SELECT pg_cancel_backend(%s)", params=(pid,))
            worker.join(10)
            busy.close()


def _spin(conn) -> None:
    try:
        # a loop in plpgsql: CPU only (a large generate_series spills to a temporary file: IO waits)
        conn.execute("SET statement_timeout = '60s'; DO $$ DECLARE i bigint := 0; BEGIN LOOP i := i + 1; END LOOP; END $$")
    except psycopg.Error:
        pass  # cancelled at the end of the test


def test_a_frozen_sampler_backend_fails_one_sample_then_a_new_session_samples(freezable):
    with exporter_for(freezable) as exporter:
        scrape(exporter)
        sampler = sampler_of(exporter)
        wait_until(lambda: sampler.samples >= 2 and sampler.conn.backend_pid, message="a first sample")
        pid, failed = sampler.conn.backend_pid, sampler.failures
        with frozen(pid):
            wait_until(lambda: sampler.failures >= failed + 1, timeout=30, message="a failed sample")
            assert "did not finish before the deadline" in sampler.last_error
            count = sampler.samples
            wait_until(lambda: sampler.samples >= count + 2, timeout=30, message="samples on a new session")
            assert sampler.conn.backend_pid != pid
            assert scrape(exporter).value("dbperf_sampler_failed_samples_total") >= failed + 1


def test_a_frozen_server_fails_samples_without_blocking_scrapes_or_piling_threads(freezable):
    """The sampler's backend and the postmaster frozen: every sample fails (the sample, then each
    connect, by its deadline) while the scrape's open session still answers."""
    with exporter_for(freezable, databases={"discover": False}) as exporter:
        scrape(exporter)
        sampler = sampler_of(exporter)
        wait_until(lambda: sampler.samples >= 2 and sampler.conn.backend_pid, message="a first sample")
        failed = sampler.failures
        with frozen(sampler.conn.backend_pid, postmaster_pid(freezable.cluster)):
            wait_until(lambda: sampler.failures >= failed + 3, timeout=30, message="failed samples")
            threads = threading.active_count()
            wait_until(lambda: sampler.failures >= failed + 6, timeout=30, message="more failed samples")
            assert threading.active_count() <= threads, [t.name for t in threading.enumerate()]
            started = time.monotonic()
            samples = Samples(exporter.probe("main", 3.0).decode())
            assert time.monotonic() - started < 4
            assert samples.value("pg_up") == 1
            assert samples.value("dbperf_collector_success", collector="wait_events", datname="") == 1
            assert samples.value("dbperf_sampler_failed_samples_total") >= failed + 6
            assert [t.name for t in threading.enumerate()].count("dbperf-sampler-main") == 1
        count = sampler.samples
        wait_until(lambda: sampler.samples >= count + 2, timeout=30, message="samples after the freeze")


def test_compute_query_id_off_makes_the_statement_collector_unsupported(waitsdb):
    with exporter_for(waitsdb, dsn=waitsdb.dsn("postgres", options="-c compute_query_id=off")) as exporter:
        scrape(exporter)
        sampler = sampler_of(exporter)
        wait_until(lambda: sampler.version is not None, message="the settings read")
        samples = scrape(exporter)
        assert samples.value("dbperf_collector_supported", collector="statement_wait_events", datname="") == 0
        assert samples.value("dbperf_collector_success", collector="wait_events", datname="") == 1
        assert not samples.has(STMT)
        assert "compute_query_id is off" in sampler.query_ids_off


def test_switched_off_no_sampler_runs(waitsdb):
    off = {"wait_events": False, "statement_wait_events": False, "route_wait_events": False}
    with exporter_for(waitsdb, collectors=off) as exporter:
        samples = scrape(exporter)
        assert sampler_of(exporter) is None and not samples.has(LOCK)
        assert "dbperf-sampler-main" not in [t.name for t in threading.enumerate()]


def test_the_sampler_stops_when_the_exporter_closes(waitsdb):
    with exporter_for(waitsdb) as exporter:
        scrape(exporter)
        sampler = sampler_of(exporter)
        wait_until(lambda: sampler.samples >= 1, message="a sample")
        pid = sampler.conn.backend_pid
    assert not sampler.running and "dbperf-sampler-main" not in [t.name for t in threading.enumerate()]
    assert not sampler.conn.connected
    wait_until(lambda: not waitsdb.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", params=(pid,)),
               message="the sampler's session closed")


@pytest.mark.prom
def test_promtool_accepts_the_wait_event_metrics(waitsdb):
    waitsdb.execute(UPDATE, dbname=DB)
    with exporter_for(waitsdb) as exporter:
        scrape(exporter)
        with blocked_updates(waitsdb, 1):
            wait_until(lambda: scrape(exporter).has(STMT, datname=DB, wait_event_type="Lock"), message="statement load")
            text = exporter.probe("main", 10.0).decode()
    assert LOCK in text and STMT in text
    assert promtool_check_metrics(text) == ""



@pytest.mark.prom
def test_the_db_load_panel_shows_the_lock_waits_in_a_real_prometheus(waitsdb, serve):
    import sys

    from conftest import ROOT, Prometheus

    sys.path.insert(0, str(ROOT / "dashboards"))
    from queries import load_all, panels, substitute

    (panel,) = [p for p in panels(load_all()["queries.json"]) if p["title"] == "DB load by wait event type"]
    load, cpus = (substitute(t["expr"]) for t in panel["targets"])
    served = serve(make_config(waitsdb, {"wait_events": {"interval": f"{INTERVAL}s"}}))
    address = served.url.removeprefix("http://")
    prom = Prometheus([{"job_name": "dbperf", "static_configs": [{"targets": [address]}]}])
    try:
        with blocked_updates(waitsdb, 2):
            def lock_load():
                found = [float(r["value"][1]) for r in prom.query(load) if r["metric"].get("wait_event_type") == "Lock"]
                return found and found[0] > 1.5 and found[0]
            assert wait_until(lock_load, timeout=60, message="Lock load of two sessions") < 2.5
        assert float(prom.query(cpus)[0]["value"][1]) >= 1
    finally:
        prom.stop()


def test_postgresql_13_samples_sessions_and_says_why_there_is_no_per_statement_load():
    from exporter.config import parse
    from exporter.pgcluster import Cluster
    from pgdist import bindir

    with Cluster(bindir=bindir(13)) as cluster:
        holder = psycopg.connect(cluster.dsn())
        holder.execute("SELECT 1")  # idle in transaction from here on
        config = parse({"targets": [{"name": "main", "dsn": cluster.dsn(), "wait_events": {"interval": "0.5s"}}]})
        exporter = Exporter(config)
        try:
            scrape(exporter)
            idle = dict(datname="postgres", state="idle in transaction", wait_event_type="Client", wait_event="ClientRead")
            samples = wait_until(lambda: (s := scrape(exporter)).has(LOCK, **idle) and s, message="the idle transaction")
            assert samples.value(LOCK, **idle) > 0
            assert samples.value("dbperf_collector_supported", collector="statement_wait_events", datname="") == 0
            assert not samples.has(STMT)
        finally:
            exporter.close()
            holder.close()
