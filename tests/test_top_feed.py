"""exporter.top.feed on a real server, as a role with only pg_monitor: the sampler's load by wait
event, the sessions and chains, top statements with their texts (pg_stat_statements, or a running
session's), redacted; and a server that cannot be reached."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import wait_until
from exporter.pgcluster import free_port
from exporter.target import Target, WaitEventsOptions
from exporter.top.feed import Feed
from topkit import SECRET_LITERAL, lock_chain, monitor_dsn

pytestmark = pytest.mark.pg


def feed_of(dsn: str, interval: float = 0.2, window: float = 60.0) -> Feed:
    return Feed(Target(name="t", dsn=dsn, wait_events=WaitEventsOptions(interval=interval)), window)


def every_text(snap) -> list[str]:
    return [s.query for s in snap.sessions] + [s.text for s in snap.statements]


def test_the_chain_its_load_and_its_statement_as_pg_monitor(pg):
    feed = feed_of(monitor_dsn(pg))
    try:
        with lock_chain(pg) as (a, b, c):
            def measured():
                snap = feed.refresh()
                assert not snap.error, snap.error
                return snap if snap.span > 0 and snap.statements else None

            snap = wait_until(measured, interval=0.2, message="load measured")
            by_pid = {s.pid: s for s in snap.sessions}
            assert by_pid[b].blocked_by == (a,) and by_pid[c].blocked_by == (b,)
            assert snap.version == int(pg.execute("SHOW server_version_num")[0][0]) and snap.version >= 100000
            lock = sum(r for (d, t, _), r in snap.load.items() if d == "postgres" and t == "Lock")
            assert 1.5 <= lock <= 2.5  # B and C wait all along: two average active sessions
            client = snap.load.get(("postgres", "Client", "ClientRead"), 0.0)
            assert 0.5 <= client <= 1.5  # A, idle in its transaction
            top = snap.statements[0]
            assert top.wait_type == "Lock" and 1.5 <= top.load <= 2.5 and top.queryid == by_pid[b].queryid
            assert top.text.startswith("UPDATE top_chain_") and " SET v = " in top.text  # no literal: placeholders
            assert any(p in top.text for p in ("= ?", "= $1"))
            assert not any(SECRET_LITERAL in t for t in every_text(snap))
            assert feed.sampler.failures == 0 and feed.conn.connects == 1  # one session for all of it
            assert snap.note == ""  # pg_monitor is enough
    finally:
        feed.close()


def test_a_finished_statement_gets_its_text_from_pg_stat_statements(pg):
    stop = threading.Event()

    def workload():
        with psycopg.connect(pg.dsn(application_name="top-load"), autocommit=True) as conn:
            while not stop.is_set():
                conn.execute(f"SELECT pg_sleep(0.05), 'top-pgss-{SECRET_LITERAL}' AS marker")

    thread = threading.Thread(target=workload, daemon=True)
    thread.start()
    feed = feed_of(monitor_dsn(pg), interval=0.1)
    try:
        def from_pgss():
            snap = feed.refresh()
            assert not snap.error, snap.error
            return next((s for s in snap.statements if s.queryid in feed.texts and "pg_sleep" in s.text), None)

        statement = wait_until(from_pgss, interval=0.1, message="a statement with its pg_stat_statements text")
        assert statement.text == "SELECT pg_sleep($1), $2 AS marker"
        assert feed.pgss_schema == "public" and statement.wait_type in ("Timeout", "CPU")
        assert not any(SECRET_LITERAL in t for t in every_text(feed.snapshot))
    finally:
        stop.set()
        thread.join(10)
        feed.close()


def test_a_server_that_cannot_be_reached_is_an_error_without_the_password():
    feed = feed_of(f"host=127.0.0.1 port={free_port()} user=u password=hunter2secret dbname=x", window=5)
    try:
        snap = feed.refresh()
        assert snap.error.startswith("cannot connect to host=127.0.0.1") and "hunter2secret" not in snap.error
        assert snap.sessions == [] and snap.load == {} and snap.refreshes == 1
    finally:
        feed.close()


def test_a_frozen_backend_makes_a_refresh_fail_in_bounded_time_then_it_recovers():
    from exporter.pgcluster import Cluster
    from freezing import frozen

    with Cluster() as cluster:
        feed = feed_of(cluster.dsn(), interval=0.5)
        try:
            assert not feed.refresh().error
            before = feed.refresh()
            assert not before.error and before.version
            pid = feed.conn.backend_pid
            with frozen(pid):
                started = time.monotonic()
                snap = feed.refresh()
                assert time.monotonic() - started < 3.0  # bounded by the sampler's deadline, never a hang
                assert "did not finish before the deadline" in snap.error and snap.version == before.version
            wait_until(lambda: not feed.refresh().error, message="a refresh after the freeze")
            assert feed.conn.backend_pid != pid  # the broken-off session was replaced
        finally:
            feed.close()


def test_the_targets_database_rules_apply_to_the_sessions_as_to_the_load(pg):
    import re

    from conftest import SECOND_DB
    from exporter.target import Databases

    with psycopg.connect(pg.dsn(SECOND_DB, application_name="top-excluded"), autocommit=True) as other:
        other.execute("BEGIN")
        other.execute("SELECT 1")
        pid = other.info.backend_pid
        shown = {}
        for name, databases in (("all", Databases()), ("excluded", Databases(exclude=re.compile(SECOND_DB)))):
            feed = Feed(Target(name="t", dsn=pg.dsn(), databases=databases,
                               wait_events=WaitEventsOptions(interval=0.2)), 60)
            try:
                feed.refresh()
                snap = wait_until(lambda: (s := feed.refresh()).span > 0 and s, message="two samples")
                shown[name] = (pid in {s.pid for s in snap.sessions}, any(d == SECOND_DB for d, _, _ in snap.load))
            finally:
                feed.close()
        other.execute("ROLLBACK")
    assert shown == {"all": (True, True), "excluded": (False, False)}


@pytest.mark.parametrize("major", [13, 18])
def test_the_oldest_and_newest_majors(major):
    """13 has no pg_stat_activity.query_id: its statements are `other`, with the reason."""
    from conftest import PG
    from exporter.pgcluster import Cluster
    from pgdist import bindir

    with Cluster(bindir=bindir(major)) as cluster:
        handle = PG(cluster, None)
        handle.execute("CREATE EXTENSION pg_stat_statements")
        feed = feed_of(monitor_dsn(handle))
        try:
            with lock_chain(handle) as (a, b, c):
                snap = wait_until(lambda: (s := feed.refresh()).statements and s, message="load measured")
                assert not snap.error and snap.version // 10000 == major
                by_pid = {s.pid: s for s in snap.sessions}
                assert by_pid[b].blocked_by == (a,) and by_pid[c].blocked_by == (b,)
                top = snap.statements[0]
                if major == 13:
                    assert top.queryid == "other" and snap.query_ids_off.startswith("pg_stat_activity.query_id needs")
                else:
                    assert top.queryid == by_pid[b].queryid and top.text.startswith("UPDATE top_chain_")
                assert top.wait_type == "Lock"
        finally:
            feed.close()


def bare_role(pg, name: str, *grants: str) -> str:
    pg.execute(f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{name}') THEN "
               f"CREATE ROLE {name} LOGIN; END IF; END $$")
    for grant in grants:
        pg.execute(f"GRANT {grant} TO {name}")
    return pg.dsn(user=name)


def test_a_role_without_pg_monitor_is_told_the_grant(pg):
    feed = feed_of(bare_role(pg, "dbperf_top_bare"))
    try:
        snap = feed.refresh()  # the sampler reads settings only pg_read_all_settings may read
        assert snap.error.startswith("must be superuser or have privileges of pg_read_all_settings")
        assert snap.error.endswith(": GRANT pg_monitor TO dbperf_top_bare")
    finally:
        feed.close()


def test_a_role_that_reads_settings_but_not_stats_is_told_what_it_cannot_see(pg):
    feed = feed_of(bare_role(pg, "dbperf_top_settings", "pg_read_all_settings"))
    try:
        with lock_chain(pg) as (a, b, c):
            snap = wait_until(lambda: (s := feed.refresh()).span > 0 and s, message="two samples")
            assert not snap.error
            assert snap.note == ("role dbperf_top_settings lacks pg_read_all_stats: other roles' sessions and texts "
                                 "are hidden (GRANT pg_monitor TO dbperf_top_settings)")
            assert not {a, b, c} & {s.pid for s in snap.sessions}
    finally:
        feed.close()
