"""A database that is down, refuses the password, hangs or holds a lock gives a fast HTTP 200 with
``pg_up 0`` or the failed collector marked; everything else stays intact. These tests run their
own throwaway cluster because they stop it and change its authentication."""

from __future__ import annotations

import socket
import threading
import time

import psycopg
import pytest

from conftest import Samples, Served, SleepCollector, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster, free_port
from exporter.registry import all_collectors
from exporter.server import Exporter

pytestmark = pytest.mark.pg

PASSWORD = "Fault-Test-Pw-91"


@pytest.fixture(scope="module")
def cluster():
    with Cluster() as c:
        c.psql("CREATE EXTENSION pg_stat_statements")
        c.psql(f"CREATE ROLE pwuser LOGIN PASSWORD '{PASSWORD}'; GRANT pg_monitor TO pwuser")
        c.psql("CREATE DATABASE faults")
        c.psql("CREATE TABLE locked_table (id int primary key); INSERT INTO locked_table VALUES (1)", "faults")
        c.require_password("pwuser")
        yield c


def config(*targets, **top):
    data = {"listen": "127.0.0.1:0", "targets": list(targets)}
    data.update(top)
    return parse(data, source="faults-test")


def timed_get(served, path, headers=None):
    start = time.monotonic()
    status, text = served.get(path, headers=headers)
    return status, text, time.monotonic() - start


def test_server_down_is_pg_up_0_fast_and_other_targets_intact(cluster, serve):
    dead_port = free_port()
    served = serve(config({"name": "dead", "dsn": f"host=127.0.0.1 port={dead_port} dbname=postgres user=postgres"},
                          {"name": "alive", "dsn": cluster.dsn("postgres")}))
    status, text, took = timed_get(served, "/metrics")
    assert status == 200 and took < 3, (status, took)
    samples = Samples(text)
    assert samples.value("pg_up", target="dead") == 0
    assert samples.value("pg_up", target="alive") == 1
    assert samples.value("dbperf_collector_success", target="dead", collector="stat_database") == 0
    assert samples.value("dbperf_collector_success", target="alive", collector="stat_database") == 1
    assert samples.has("pg_stat_database_xact_commit_total", target="alive", datname="faults")
    assert not samples.has("pg_stat_database_xact_commit_total", target="dead")
    assert samples.has("host_memory_total_bytes")


def test_wrong_password_is_pg_up_0_and_logged_once_without_the_password(cluster, serve, caplog):
    wrong = "Not-The-Right-One-77"
    good_dsn = f"host=127.0.0.1 port={cluster.port} dbname=postgres user=pwuser password={PASSWORD}"
    bad_dsn = f"host=127.0.0.1 port={cluster.port} dbname=postgres user=pwuser password={wrong}"
    served = serve(config({"name": "bad", "dsn": bad_dsn}, {"name": "good", "dsn": good_dsn}))
    with caplog.at_level("WARNING", logger="dbperf"):
        for _ in range(3):
            status, text = served.get("/metrics")
            assert status == 200
    samples = Samples(text)
    assert samples.value("pg_up", target="bad") == 0
    assert samples.value("pg_up", target="good") == 1
    failures = [r.getMessage() for r in caplog.records if "target=bad" in r.getMessage()]
    assert len(failures) == 1, failures  # rate-limited: one line, not one per scrape
    assert "password authentication failed" in failures[0]
    everything = text + "\n".join(r.getMessage() for r in caplog.records)
    assert wrong not in everything and PASSWORD not in everything


def test_hanging_server_is_bounded_by_connect_timeout(serve):
    """A server that accepts TCP connections and never answers (a fake socket, not a database)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        served = serve(config({"name": "hang", "dsn": f"host=127.0.0.1 port={port} dbname=x user=y",
                               "connect_timeout": "1s"}))
        status, text, took = timed_get(served, "/probe?target=hang", {"X-Prometheus-Scrape-Timeout-Seconds": "5"})
        assert status == 200 and took < 3, took
        assert Samples(text).value("pg_up", target="hang") == 0
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


@pytest.fixture
def lock_held(cluster):
    """An ACCESS EXCLUSIVE lock on faults.locked_table, held in an open transaction."""
    conn = psycopg.connect(cluster.dsn("faults"))
    conn.execute("LOCK TABLE locked_table IN ACCESS EXCLUSIVE MODE")
    yield conn
    conn.rollback()
    conn.close()


def test_held_lock_does_not_stall_the_scrape(cluster, serve, lock_held):
    served = serve(config({"name": "main", "dsn": cluster.dsn("postgres"),
                           "collectors": {"table_sizes": {"ttl": 0}}}))
    cluster.psql("CREATE TABLE IF NOT EXISTS free_table (id int)", "faults")
    status, text, took = timed_get(served, "/probe?target=main", {"X-Prometheus-Scrape-Timeout-Seconds": "10"})
    assert status == 200 and took < 1.0, took  # well below lock_timeout: nothing waited for the lock
    samples = Samples(text)
    failed = [s.labels for s in samples.series("dbperf_collector_success") if s.value != 1]
    assert not failed
    # the size of the locked table is left out; the rest of its database is measured
    assert not samples.has("pg_stat_user_tables_table_size_bytes", datname="faults", relname="locked_table")
    assert samples.has("pg_stat_user_tables_table_size_bytes", datname="faults", relname="free_table")
    assert samples.has("pg_stat_user_tables_n_live_tup", datname="faults", relname="locked_table")
    waiting = cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbperf' "
                           "AND wait_event_type = 'Lock'")
    assert waiting.strip() == "0"


def serve_with(collectors, *targets, **top) -> Served:
    served = Served(Exporter(config(*targets, **top), collectors=all_collectors() + collectors))
    return served


def test_deadline_from_prometheus_header_cancels_a_slow_collector(cluster):
    served = serve_with((SleepCollector("sleepy", 5.0),), {"name": "main", "dsn": cluster.dsn("postgres")},
                        scrape_timeout_offset="0.2s")
    try:
        status, text, took = timed_get(served, "/probe?target=main", {"X-Prometheus-Scrape-Timeout-Seconds": "1.2"})
        assert status == 200
        assert took < 1.6, f"scrape took {took:.2f}s with a 1.0s budget"
        samples = Samples(text)
        assert samples.value("pg_up", target="main") == 1
        assert samples.value("dbperf_collector_success", collector="sleepy") == 0
        assert not samples.has("test_sleepy_value")
        assert samples.value("dbperf_collector_success", collector="stat_database") == 1
        assert samples.value("dbperf_scrape_duration_seconds", target="main") < 1.2
        # the cancelled query does not linger on the server
        wait_until(lambda: cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbperf' "
                                        "AND query LIKE '%pg_sleep%' AND state = 'active'").strip() == "0",
                   timeout=3, message="the cancelled dbperf query to end")
    finally:
        served.close()


def test_concurrent_scrapes_share_one_collection(cluster):
    served = serve_with((SleepCollector("sleepy", 1.0),), {"name": "main", "dsn": cluster.dsn("postgres")})
    try:
        scraper = served.exporter.scrapers["main"]
        results = []
        threads = [threading.Thread(target=lambda: results.append(served.get("/probe?target=main")[0]))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [200] * 6
        assert scraper.scrapes <= 2, f"{scraper.scrapes} collections for 6 concurrent scrapes"
        sleeps = cluster.psql("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE query LIKE '%pg_sleep%'")
        assert int(sleeps) <= 2
    finally:
        served.close()


def test_connections_are_reused_and_named(cluster, serve):
    served = serve(config({"name": "main", "dsn": cluster.dsn("postgres")}))
    for _ in range(5):
        assert served.metrics("/probe?target=main").value("pg_up", target="main") == 1
    scraper = served.exporter.scrapers["main"]
    assert scraper.main.connects == 1
    # the target's own database keeps its sessions; another database's is kept between refreshes
    # only while the sampler watches for a DROP DATABASE waiting for it, else it lives for one
    # refresh (tests/test_drop_database.py, tests/test_dropwatch.py): reconnected at most once per
    # scrape either way; the wait_events sampler has one session of its own, in the target's own
    # database too (the 2 below: the sampler's and the scrape's own)
    own = [c for c in scraper.conns.values() if c.dbname is None]
    others = [c for c in scraper.conns.values() if c.dbname is not None]
    assert own and all(c.connects == 1 for c in own)
    assert others and all(1 <= c.connects <= 5 for c in others)
    wait_until(lambda: 2 + len(own) <= int(cluster.psql(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbperf'")) <= 2 + len(own) + len(others),
               timeout=5, message="dbperf's sessions: the target's own database's, and the other databases' kept ones")
    settings = cluster.psql("SELECT setting FROM pg_settings WHERE name = 'jit'")
    assert settings  # the server knows jit; dbperf's own session has it off:
    assert scraper.main.query("SHOW jit", 1)[0][1][0][0] == "off"


def test_restarted_server_is_picked_up_again(cluster, serve):
    served = serve(config({"name": "main", "dsn": cluster.dsn("postgres")}))
    assert served.metrics("/probe?target=main").value("pg_up", target="main") == 1
    cluster.stop()
    try:
        status, text, took = timed_get(served, "/probe?target=main")
        assert status == 200 and took < 3
        assert Samples(text).value("pg_up", target="main") == 0
    finally:
        cluster.start()
    wait_until(lambda: served.metrics("/probe?target=main").value("pg_up", target="main") == 1,
               timeout=20, interval=0.5, message="pg_up 1 after the restart")
    samples = served.metrics("/probe?target=main")
    failed = [s.labels for s in samples.series("dbperf_collector_success") if s.value != 1]
    assert not failed


def test_scrape_that_joins_a_longer_one_answers_by_its_own_deadline(cluster):
    """A /probe with a 2 s header arriving while a 10 s scrape is in flight (it was a 500 after
    2.5 s): 200 by its own deadline, the server up (the shared scrape's probe answered), the
    collectors still running reported as failed; the long scrape still gets its full result."""
    served = serve_with((SleepCollector("sleepy", 3.0),), {"name": "main", "dsn": cluster.dsn("postgres")})
    try:
        long = {}
        first = threading.Thread(target=lambda: long.update(
            result=timed_get(served, "/probe?target=main", {"X-Prometheus-Scrape-Timeout-Seconds": "10"})))
        first.start()
        scraper = served.exporter.scrapers["main"]
        wait_until(lambda: cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbperf' "
                                        "AND query LIKE '%pg_sleep(3.0)%' AND state = 'active'").strip() == "1",
                   timeout=5, interval=0.05, message="the long scrape's collectors to run")
        status, text, took = timed_get(served, "/probe?target=main", {"X-Prometheus-Scrape-Timeout-Seconds": "2"})
        assert status == 200, text
        assert took < 2.0, f"the joining scrape took {took:.2f}s against its 2 s deadline"
        joined = Samples(text)
        assert joined.value("pg_up", target="main") == 1
        assert joined.value("dbperf_collector_success", collector="sleepy") == 0
        first.join()
        status, text, took = long["result"]
        assert status == 200 and Samples(text).value("test_sleepy_value", target="main") == 42
        assert scraper.scrapes == 1  # one collection for both
    finally:
        served.close()
