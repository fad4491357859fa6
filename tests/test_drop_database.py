"""dbperf never stands in the way of a user's DROP DATABASE, and forgets a dropped database.

A session in a database makes a plain ``DROP DATABASE`` wait 5 s for it and then fail ("being
accessed by other users"): while the target's session sampler runs, dbperf keeps its sessions to
the other databases open and closes them as soon as such a command waits for them
(exporter.postgres.dropwatch); without the sampler it holds a session in a database other than the
target's own only while it refreshes that database's collectors. Once the database is gone, no series of it stays:
not the per-database collectors', not a cluster collector's cached rows (database_size), not the
statements collector's latency histogram, per-statement series or sticky members (whose rows
pg_stat_statements keeps after the drop, under a dbid that no longer exists)."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest

from conftest import Samples, make_config, wait_until
from exporter.scrape import CacheEntry

pytestmark = pytest.mark.pg


@pytest.fixture
def victim(pg):
    """A database of its own with a table and a few statements in pg_stat_statements."""
    name = "dropme_" + uuid.uuid4().hex[:8]
    pg.execute(f"CREATE DATABASE {name}")
    with pg.connect(name) as conn:
        conn.execute("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
        for i in range(5):
            conn.execute(f"SELECT count(*) FROM t WHERE id > {i}")
    yield name
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


SAMPLER_OFF = {"wait_events": False, "statement_wait_events": False, "route_wait_events": False,
               "route_statement_wait_events": False}


def config(pg, name: str, target: str, collectors: dict | None = None, **statements):
    # the target covers its own database (postgres) and the victim only
    return make_config(pg, {"name": target, "databases": {"include": name},
                            "statements": {"limit": 50, "sticky": 600, **statements},
                            **({"collectors": collectors} if collectors else {})})


def drop_in_time(pg, name: str) -> float:
    """A plain DROP DATABASE (no FORCE); how long it took (it fails after 5 s of other sessions)."""
    start = time.monotonic()
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name}")
    took = time.monotonic() - start
    assert took < 4.0, f"DROP DATABASE waited {took:.1f}s for other sessions"
    return took


def mentions(samples: Samples, name: str) -> list:
    return [s for s in samples.samples if name in s.labels.values()]


def dbperf_sessions_in(pg, name: str) -> list:
    return pg.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'dbperf'",
                      params=(name,))


def statements_state(served, target: str):
    scraper = served.exporter.scrapers[target]
    collector = next(c for c in scraper.collectors if c.name == "statements")
    return collector.state


def test_plain_drop_database_right_after_a_scrape_succeeds(pg, victim, serve):
    """Without the sampler: no session is kept in the victim between scrapes."""
    target = "drop_" + victim
    served = serve(config(pg, victim, target, SAMPLER_OFF))
    samples = served.metrics()
    # the victim was covered: its per-database collectors ran there, its statements are ranked
    assert samples.value("dbperf_collector_success", collector="tables", datname=victim) == 1
    assert samples.series("pg_stat_user_tables_seq_scan_total", datname=victim, relname="t")
    assert samples.series("pg_statement_duration_seconds_count", datname=victim)
    assert samples.value("pg_database_size_bytes", datname=victim) > 0
    # between scrapes dbperf holds no session there (its backend exits just after the close)
    wait_until(lambda: not dbperf_sessions_in(pg, victim), timeout=3, message="dbperf's session in the victim closed")
    assert served.exporter.scrapers[target].drop_watch.checks == 0  # no sampler, no watch
    drop_in_time(pg, victim)
    after = served.metrics()
    assert after.value("pg_up", target=target) == 1
    assert mentions(after, victim) == [], mentions(after, victim)[:5]
    # the scrape after that still serves the target's own database
    assert after.value("dbperf_collector_success", collector="tables", datname="postgres") == 1


def test_plain_drop_database_closes_the_warm_session(pg, victim, serve):
    """With the sampler: the session in the victim stays open between scrapes (a warm relation
    cache for the next refresh), and a plain DROP DATABASE still succeeds, well within its 5 s:
    the sampler sees it wait and the scraper closes that session."""
    target = "warm_" + victim
    served = serve(config(pg, victim, target, {"tables": {"ttl": 0}}))  # a refresh in every scrape
    scraper = served.exporter.scrapers[target]
    served.metrics()
    wait_until(scraper.drop_watch.watching, timeout=10, message="the sampler's drop watch")
    served.metrics()  # the first scrape with the watch on: the refresh keeps its session
    session = scraper.conns[victim]
    assert session.connected
    pid = session.backend_pid
    assert [pid] == [row[0] for row in dbperf_sessions_in(pg, victim)]
    served.metrics()  # still the same backend: no connect per refresh
    assert scraper.conns[victim].backend_pid == pid
    checks = scraper.drop_watch.checks
    drop_in_time(pg, victim)
    assert victim in scraper.drop_watch.waiting or scraper.drop_watch.checks > checks
    assert not session.connected
    after = served.metrics()
    assert mentions(after, victim) == [], mentions(after, victim)[:5]
    assert victim not in scraper.conns


def test_drop_database_also_succeeds_during_many_scrapes(pg, victim, serve):
    """Scrapes back to back while DROP DATABASE waits: a refresh that starts then cannot connect
    (the drop holds the database's lock), and the one running ends within DROP's 5 s."""
    import threading

    target = "dropbusy_" + victim
    served = serve(config(pg, victim, target))
    served.metrics()
    stop = threading.Event()
    statuses = []

    def scrape_loop():
        while not stop.is_set():
            statuses.append(served.get("/metrics")[0])

    thread = threading.Thread(target=scrape_loop)
    thread.start()
    try:
        time.sleep(0.3)
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {victim}")
    finally:
        stop.set()
        thread.join(timeout=30)
    assert statuses and set(statuses) == {200}
    wait_for = time.monotonic() + 10
    while mentions(served.metrics(), victim) and time.monotonic() < wait_for:
        time.sleep(0.2)
    assert mentions(served.metrics(), victim) == []


def test_statements_forget_a_dropped_database(pg, victim, serve):
    """Dropped WITH (FORCE), so that this test is about the statements collector's state only."""
    target = "forget_" + victim
    served = serve(config(pg, victim, target))
    served.metrics()
    with pg.connect(victim) as conn:
        for _ in range(3):
            conn.execute("SELECT pg_sleep(0.01)")
    samples = served.metrics()
    assert samples.value("pg_statement_duration_seconds_count", datname=victim) >= 3
    (dbid,), = pg.execute("SELECT oid FROM pg_database WHERE datname = %s", params=(victim,))
    state = statements_state(served, target)
    assert any(key[0] == dbid for key in state.members)
    pg.execute(f"DROP DATABASE {victim} WITH (FORCE)")
    # pg_stat_statements keeps the dropped database's statements, under a dbid without a database
    assert pg.execute("SELECT count(*) FROM pg_stat_statements WHERE dbid = %s", params=(dbid,))[0][0] > 0
    after = served.metrics()
    assert after.value("dbperf_collector_success", collector="statements", datname="") == 1
    assert mentions(after, victim) == [], mentions(after, victim)[:5]
    statement_families = [name for name in after.families if name.startswith("pg_stat_statements_")]
    orphans = [s for name in statement_families for s in after.families[name].samples
               if s.labels.get("datname") == ""]
    assert orphans == [], orphans[:5]
    assert victim not in state.histograms
    for name, keys in (("members", state.members), ("previous", state.previous), ("excluded", state.excluded),
                       ("chosen", state.chosen)):
        assert not [key for key in keys if key[0] == dbid], name


def expected_refreshes(datname: str, ttl: float, times: list) -> int:
    """Refreshes of a database's collectors cached ``ttl`` in scrapes at ``times``: the first, then
    one in the first scrape of each new TTL slot (exporter.scrape.plan_run), or when due."""
    from exporter.scrape import CACHED, phase, plan_run

    count, last = 1, times[0]
    for t in times[1:]:
        if plan_run(CacheEntry(None, last, 0.0), ttl, t, 10.0, 0.0, True, phase(datname)) != CACHED:
            count, last = count + 1, t
    return count


def test_a_session_per_refresh_not_per_scrape(pg, victim):
    """The session in another database is opened by a refresh that queries it, not by a scrape
    that serves its collectors from their cache: every database collector cached 30 s and a
    scrape every 15 s (a clock the test moves) connect there every other scrape (in the first
    scrape of each of the database's TTL slots: refreshes are spread by database); the target's own
    database keeps its one session."""
    from exporter.collector import DATABASE
    from exporter.registry import all_collectors
    from exporter.scrape import TargetScraper

    collectors = all_collectors()
    per_db = [c.name for c in collectors if c.scope == DATABASE and c.enabled_by_default]
    config = make_config(pg, {"name": "refresh_" + victim, "databases": {"include": victim},
                              "collectors": {**{name: {"ttl": "30s"} for name in per_db}, **SAMPLER_OFF}})
    offset = [0.0]
    scraper = TargetScraper(config.targets[0], collectors, clock=lambda: time.monotonic() + offset[0])
    try:
        times = []
        for _ in range(8):  # two simulated minutes
            times.append(time.monotonic() + offset[0])
            scraper.scrape(10)
            assert not scraper.conns[victim].connected
            offset[0] += 15
        assert scraper.conns[victim].connects == expected_refreshes(victim, 30.0, times)
        assert scraper.main.connects == 1
    finally:
        scraper.close()
