"""The session sampler on a real server: lock waits, CPU, I/O and per-statement load integrated at
about one second per second per session, a frozen sampler backend, compute_query_id off, a clean stop."""

from __future__ import annotations

import contextlib
import os
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
def own():
    """A cluster of this module's own, whose backends and postmaster a test may freeze and whose
    files a test may evict from the page cache (never the shared one, which may be
    $DBPERF_TEST_DSN's server)."""
    with Cluster() as cluster:
        pg = PG(cluster, None)
        pg.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")  # the statements collector reads it there
        yield _with_waits_table(pg)


@contextlib.contextmanager
def exporter_for(pg, interval: float = INTERVAL, **target):
    config = make_config(pg, {"wait_events": {"interval": f"{interval}s"}, **target})
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


def window(exporter, samples_taken: int = 8) -> tuple[Samples, Samples, float]:
    """Two scrapes ``samples_taken`` samples apart and the seconds between them; no sample may fail
    in between."""
    sampler = sampler_of(exporter)
    first, t1, failed = scrape(exporter), time.monotonic(), sampler.failures
    start = sampler.samples
    wait_until(lambda: sampler.samples >= start + samples_taken, timeout=30, message="samples")
    last, t2 = scrape(exporter), time.monotonic()
    assert sampler.failures == failed, sampler.last_error
    return first, last, t2 - t1


def rate_over(exporter, name: str, samples_taken: int = 8, **labels) -> tuple[float, Samples]:
    """Per second increase of ``name{labels}`` (summed) between two scrapes ``samples_taken``
    samples apart, and the last scrape."""
    first, last, seconds = window(exporter, samples_taken)
    return (total(last, name, **labels) - total(first, name, **labels)) / seconds, last


def increases(first: Samples, last: Samples, name: str, by: str, **labels) -> dict[str, float]:
    """The increase of each ``name{labels}`` series between two scrapes, summed by label ``by``."""
    grown: dict[str, float] = {}
    for samples, sign in ((last, 1), (first, -1)):
        for sample in samples.series(name, **labels):
            grown[sample.labels[by]] = grown.get(sample.labels[by], 0.0) + sign * sample.value
    return grown


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


# An I/O-bound statement: index scans of io_t over and over, each row on a heap page of its own in
# random order (inserted shuffled; fillfactor 10 and 900-byte rows: one row a page, 390 MB, three
# times shared_buffers), while evicted() keeps dropping the table's file from the OS page cache: the
# backend mostly waits on IO:DataFileRead (93-96 % of its samples at 50 Hz on a 2 vCPU VM, against
# 84-92 % once the eviction stops and 74-87 % for a sequential scan; docs/wait-events.md).
IO_ROWS = 50_000
IO_SQL = ("SELECT sum(s.t) FROM generate_series(1, %s) g, "
          "LATERAL (SELECT sum(v) AS t FROM io_t WHERE k > g - %s) s")
IO_SETTINGS = ("SET enable_seqscan = off", "SET enable_bitmapscan = off", "SET max_parallel_workers_per_gather = 0",
               "SET statement_timeout = '60s'")
IO_INTERVAL = 0.2  # 20 samples in 4 s: a share measured on enough samples to be far from its bound
IO_SAMPLES = 20


def _with_io_table(pg) -> None:
    pg.execute("DROP TABLE IF EXISTS io_t; CREATE TABLE io_t (k int, v int, pad text) WITH (fillfactor = 10)",
               dbname=DB)
    pg.execute(f"INSERT INTO io_t SELECT i, i, repeat('x', 900) FROM generate_series(1, {IO_ROWS}) i ORDER BY random()",
               dbname=DB)
    pg.execute("CREATE INDEX ON io_t (k)", dbname=DB)
    pg.execute("VACUUM (FREEZE, ANALYZE) io_t", dbname=DB)  # no hint bit to set (and write) while it is read
    pg.execute("CHECKPOINT")


@contextlib.contextmanager
def evicted(pg, relation: str, every: float = 0.05):
    """The main fork of ``relation`` (all its segment files) written back, then dropped from the OS
    page cache every ``every`` seconds (posix_fadvise DONTNEED) until the block ends: the server
    reads it from the disk. The test runs beside the server, as root or as its user."""
    path = pg.cluster.datadir / pg.execute("SELECT pg_relation_filepath(%s)", dbname=DB, params=(relation,))[0][0]
    fds = [os.open(f, os.O_RDONLY) for f in (path, *sorted(path.parent.glob(path.name + ".[0-9]*")))]
    for fd in fds:
        os.fsync(fd)  # DONTNEED drops clean pages only (the server's fsync is off)
    stop = threading.Event()

    def drop():
        while not stop.is_set():
            for fd in fds:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            stop.wait(every)

    thread = threading.Thread(target=drop, name="evict", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        for fd in fds:
            os.close(fd)


def _timed(conn, sql: str, params, ran: dict) -> None:
    """Run ``sql`` (cancelled at the end of the test) and note how long it ran, in ``ran["seconds"]``."""
    started = time.monotonic()
    try:
        conn.execute(sql, params)
    except psycopg.errors.QueryCanceled:
        pass
    finally:
        ran["seconds"] = time.monotonic() - started


def test_an_io_bound_statement_shows_as_io_data_file_reads_for_the_time_it_ran(own):
    _with_io_table(own)
    own.execute(IO_SQL, dbname=DB, params=(1, -1_000_000_000))  # completed once (no row): a shown statement
    with exporter_for(own, interval=IO_INTERVAL) as exporter, evicted(own, "io_t"):
        scrape(exporter)
        sampler = sampler_of(exporter)
        wait_until(lambda: sampler.samples >= 2, message="a first sample")  # past the baseline
        before = scrape(exporter)
        busy = psycopg.connect(own.dsn(DB), autocommit=True)
        for setting in IO_SETTINGS:
            busy.execute(setting)
        pid, ran = busy.info.backend_pid, {}
        worker = threading.Thread(target=_timed, args=(busy, IO_SQL, (1000, 1_000_000_000), ran), daemon=True)
        worker.start()
        try:
            queryid = wait_until(lambda: (r := own.execute("SELECT query_id FROM pg_stat_activity WHERE pid = %s AND "
                                                           "state = 'active'", params=(pid,))) and str(r[0][0]),
                                 message="the statement runs")
            first, last, seconds = window(exporter, IO_SAMPLES)
        finally:
            own.execute("SELECT pg_cancel_backend(%s)", params=(pid,))
            worker.join(10)
            busy.close()
        count = sampler.samples
        wait_until(lambda: sampler.samples >= count + 2, message="samples after the statement")
        after = scrape(exporter)
    sessions = increases(first, last, LOCK, "wait_event_type", datname=DB, state="active")
    events = increases(first, last, LOCK, "wait_event", datname=DB, state="active", wait_event_type="IO")
    statement = increases(first, last, STMT, "wait_event_type", datname=DB, queryid=queryid)
    # one session, the statement's, seen all along: one second per second, most of it on IO
    assert 0.8 <= sum(sessions.values()) / seconds <= 1.2, (sessions, seconds)
    assert 0.8 <= sum(statement.values()) / seconds <= 1.2, (statement, seconds)
    assert sessions.get("IO", 0) >= 0.6 * sum(sessions.values()), sessions
    assert statement.get("IO", 0) >= 0.6 * sum(statement.values()), statement
    assert events.get("DataFileRead", 0) >= 0.5 * sum(sessions.values()), events
    # over the whole run the statement's seconds are the time it ran, within the sampling grid's
    # step (an interval at each end) and a margin for a late sample on a busy machine
    added = total(after, STMT, datname=DB, queryid=queryid) - total(before, STMT, datname=DB, queryid=queryid)
    assert abs(added - ran["seconds"]) <= 2.5 * IO_INTERVAL, (added, ran["seconds"])


def test_a_frozen_sampler_backend_fails_one_sample_then_a_new_session_samples(own):
    with exporter_for(own) as exporter:
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


def test_a_frozen_server_fails_samples_without_blocking_scrapes_or_piling_threads(own):
    """The sampler's backend and the postmaster frozen: every sample fails (the sample, then each
    connect, by its deadline) while the scrape's open session still answers."""
    with exporter_for(own, databases={"discover": False}) as exporter:
        scrape(exporter)
        sampler = sampler_of(exporter)
        wait_until(lambda: sampler.samples >= 2 and sampler.conn.backend_pid, message="a first sample")
        failed = sampler.failures
        with frozen(sampler.conn.backend_pid, postmaster_pid(own.cluster)):
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
        for collector in ("statement_wait_events", "route_statement_wait_events"):
            assert samples.value("dbperf_collector_supported", collector=collector, datname="") == 0
        assert samples.value("dbperf_collector_success", collector="wait_events", datname="") == 1
        assert not samples.has(STMT)
        assert "compute_query_id is off" in sampler.query_ids_off


def test_switched_off_no_sampler_runs(waitsdb):
    off = {"wait_events": False, "statement_wait_events": False, "route_wait_events": False,
           "route_statement_wait_events": False}
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
            for collector in ("statement_wait_events", "route_statement_wait_events"):
                assert samples.value("dbperf_collector_supported", collector=collector, datname="") == 0
            assert not samples.has(STMT) and not samples.has("pg_route_statement_active_seconds_total")
        finally:
            exporter.close()
            holder.close()
