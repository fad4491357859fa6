"""Live queries on the real cluster: a running pg_sleep is one slow query, a lock wait is seen."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest

from conftest import make_config as _make_config, promtool_check_metrics, wait_until

pytestmark = pytest.mark.pg


def make_config(pg, extra_target=None, **top):
    """The test's config, without database-scoped collectors: dbperf then runs no statements in
    the test's own database, so what the test compares there is only its own workload."""
    return _make_config(pg, {"databases": {"discover": False}, **(extra_target or {})}, **top)



@pytest.fixture
def db(pg):
    name = "live_test_" + uuid.uuid4().hex[:8]
    pg.execute(f"CREATE DATABASE {name}")
    pg.execute("CREATE TABLE lt (id int)", dbname=name)
    yield name
    pg.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def in_thread(fn) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


SLEEP = "SELECT pg_sleep(4)"


def sleeping(pg, db) -> threading.Thread:
    """SLEEP in ``db``, from a thread, until it ends or ``wake`` cancels it."""
    def sleep():
        try:
            pg.execute(SLEEP, dbname=db)
        except psycopg.errors.QueryCanceled:
            pass
    return in_thread(sleep)


def wake(pg, sleeper: threading.Thread) -> None:
    """Cancel the sleep once the test has seen what it needed, and wait for its session to be idle."""
    pg.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = %s", params=(SLEEP,))
    sleeper.join(10)
    assert not sleeper.is_alive()


def test_a_running_sleep_is_one_slow_query(pg, db, serve):
    served = serve(make_config(pg, {"statements": {"slowest_query_info": True}}))
    samples = served.metrics()
    assert samples.value("pg_stat_activity_slow_queries", datname=db) == 0
    assert samples.value("pg_stat_activity_oldest_lock_wait_seconds", datname=db) == 0
    sleeper = sleeping(pg, db)
    try:
        # live_queries and activity read pg_stat_activity at two moments of one scrape: wait for a
        # scrape where both see the sleep past a second (activity may have run a moment earlier)
        samples = wait_until(
            lambda: (s := served.metrics()).value("pg_stat_activity_slow_queries", datname=db) == 1
            and s.value("pg_stat_activity_oldest_query_age_seconds", datname=db) > 1 and s,  # from `activity`
            timeout=3.5, message="one slow query")
        (query_id,), = pg.execute("SELECT query_id::text FROM pg_stat_activity WHERE query = %s", params=(SLEEP,))
        assert samples.value("pg_stat_activity_slowest_query_info", datname=db, queryid=query_id) == 1
        assert promtool_check_metrics(samples.text) == ""
    finally:
        wake(pg, sleeper)
    assert served.metrics().value("pg_stat_activity_slow_queries", datname=db) == 0  # the query has ended


def test_slow_threshold_is_configurable_and_info_is_off_by_default(pg, db, serve):
    served = serve(make_config(pg, {"statements": {"slow_threshold": "5s"}}))
    sleeper = sleeping(pg, db)
    try:
        wait_until(lambda: served.metrics().value("pg_stat_activity_oldest_query_age_seconds", datname=db) > 1.2,
                   timeout=3.5, message="the sleep running for over a second")
        samples = served.metrics()
        assert samples.value("pg_stat_activity_slow_queries", datname=db) == 0
        assert not samples.has("pg_stat_activity_slowest_query_info")
    finally:
        wake(pg, sleeper)


def test_lock_wait_is_measured(pg, db, serve):
    served = serve(make_config(pg))
    holder = pg.connect(db)
    try:
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE lt IN ACCESS EXCLUSIVE MODE")
        waiter = in_thread(lambda: pg.execute("SELECT count(*) FROM lt", dbname=db))
        samples = wait_until(
            lambda: (s := served.metrics()).value("pg_stat_activity_oldest_lock_wait_seconds", datname=db) > 0.5 and s,
            timeout=10, message="a lock wait over 0.5s")
        assert samples.value("pg_stat_activity_blocked_sessions", datname=db) == 1  # from `activity`
        # one name, one collector: live_queries does not emit what activity already does
        assert len(samples.series("pg_stat_activity_blocked_sessions", datname=db)) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    waiter.join(timeout=10)
    assert served.metrics().value("pg_stat_activity_oldest_lock_wait_seconds", datname=db) == 0
