"""activity and locks: sessions, idle transactions, lock waits and connection use, provoked by the
test with real sessions on a real PostgreSQL."""

from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager

import psycopg

from conftest import SECOND_DB, make_config, wait_until
import pytest

pytestmark = pytest.mark.pg


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def only(pg, **collectors_on):
    from exporter.registry import all_collectors

    return make_config(pg, {"collectors": {c.name: collectors_on.get(c.name, False) for c in all_collectors()}})


def test_idle_in_transaction_session_is_aged_and_counted(pg, serve):
    app = unique("idle_app")
    served = serve(only(pg, activity=True))
    with psycopg.connect(pg.dsn(SECOND_DB, application_name=app)) as conn:  # not autocommit
        conn.execute("SELECT 1")  # opens the transaction, then the session sits idle in it
        time.sleep(2.1)
        samples = served.metrics()
        conn.rollback()
    assert samples.value("pg_stat_activity_oldest_idle_in_transaction_age_seconds", datname=SECOND_DB) >= 2
    assert samples.value("pg_stat_activity_oldest_transaction_age_seconds", datname=SECOND_DB) >= 2
    assert samples.value("pg_stat_activity_sessions", datname=SECOND_DB, state="idle in transaction",
                         application_name=app) == 1
    user = pg.execute("SELECT current_user")[0][0]
    assert samples.series("pg_stat_activity_sessions", application_name=app)[0].labels["usename"] == user
    # dbperf's own session is counted as active, under its application_name
    assert samples.value("pg_stat_activity_sessions", datname="postgres", state="active",
                         application_name="dbperf", usename=user) >= 1
    # the session is gone: no series for it, ages back to 0 when nothing else is open there
    after = wait_until(lambda: (s := served.metrics()) and not s.has("pg_stat_activity_sessions", application_name=app)
                       and s, timeout=5, message="the idle session to go")
    assert after.value("pg_stat_activity_oldest_idle_in_transaction_age_seconds", datname=SECOND_DB) < 2


@contextmanager
def lock_wait(pg, sql_holder: str, sql_waiter: str, db: str = SECOND_DB):
    """A holder session runs ``sql_holder`` in an open transaction; a waiter then runs
    ``sql_waiter`` in a thread and blocks; both end when the block exits."""
    holder, waiter = psycopg.connect(pg.dsn(db)), psycopg.connect(pg.dsn(db), autocommit=True)
    app = unique("waiter")
    waiter.execute("SELECT set_config('application_name', %s, false)", (app,))
    thread = threading.Thread(target=lambda: waiter.execute(sql_waiter), daemon=True)
    try:
        holder.execute(sql_holder)
        thread.start()
        wait_until(lambda: pg.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s "
                                      "AND wait_event_type = 'Lock'", db, (app,)),
                   timeout=5, interval=0.05, message="the waiter to block")
        yield
    finally:
        holder.rollback()
        thread.join(timeout=10)
        holder.close()
        waiter.close()


def test_table_lock_wait_shows_blocked_and_waiting_sessions(pg, serve):
    table = unique("lk")
    pg.execute(f"CREATE TABLE {table} (id int)", SECOND_DB)
    served = serve(only(pg, activity=True, locks=True))
    try:
        with lock_wait(pg, f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE", f"SELECT * FROM {table}"):
            samples = served.metrics()
        assert samples.value("pg_stat_activity_blocked_sessions", datname=SECOND_DB) >= 1
        assert samples.value("pg_stat_activity_waiting_sessions", datname=SECOND_DB, wait_event_type="Lock") >= 1
        assert samples.value("pg_locks_waiting", datname=SECOND_DB, mode="AccessShareLock") >= 1
        assert samples.value("pg_locks_granted", datname=SECOND_DB, mode="AccessExclusiveLock") >= 1
        assert samples.value("pg_stat_activity_oldest_transaction_age_seconds", datname=SECOND_DB) > 0
        after = served.metrics()  # the holder is gone: nobody blocked
        assert after.value("pg_stat_activity_blocked_sessions", datname=SECOND_DB) == 0
        assert after.value("pg_locks_waiting", datname=SECOND_DB, mode="AccessShareLock") == 0
    finally:
        pg.execute(f"DROP TABLE {table}", SECOND_DB)


def test_row_lock_wait_is_counted_in_its_database(pg, serve):
    """Two sessions updating the same row: the second waits on the first's transaction ID, a lock
    pg_locks reports without a database."""
    table = unique("rowlk")
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int); INSERT INTO {table} VALUES (1, 0)", SECOND_DB)
    served = serve(only(pg, activity=True, locks=True))
    try:
        with lock_wait(pg, f"UPDATE {table} SET v = 1 WHERE id = 1", f"UPDATE {table} SET v = 2 WHERE id = 1"):
            samples = served.metrics()
        assert samples.value("pg_stat_activity_blocked_sessions", datname=SECOND_DB) >= 1
        assert samples.value("pg_stat_activity_waiting_sessions", datname=SECOND_DB, wait_event_type="Lock") >= 1
        assert samples.value("pg_locks_waiting", datname=SECOND_DB, mode="ShareLock") >= 1
    finally:
        pg.execute(f"DROP TABLE {table}", SECOND_DB)


def test_connections_used_and_limit(pg, serve):
    served = serve(only(pg, activity=True))
    count = "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'"
    before = served.metrics().value("pg_connections_used")
    app = unique("extra")
    extra = [psycopg.connect(pg.dsn(SECOND_DB, application_name=app), autocommit=True) for _ in range(5)]
    try:
        low = pg.execute(count)[0][0]
        samples = served.metrics()
        high = pg.execute(count)[0][0]
    finally:
        for conn in extra:
            conn.close()
    used = samples.value("pg_connections_used")
    assert used >= before + 5
    assert low - 1 <= used <= high  # the direct reads count their own session, dbperf's read does not open one
    assert samples.value("pg_stat_activity_sessions", datname=SECOND_DB, state="idle", application_name=app) == 5
    max_conn, reserved = pg.execute("SELECT current_setting('max_connections')::int, "
                                    "current_setting('superuser_reserved_connections')::int")[0]
    limit = max_conn - reserved
    if pg.execute("SHOW server_version_num")[0][0] >= "160000":
        limit -= int(pg.execute("SHOW reserved_connections")[0][0])
    assert samples.value("pg_connections_limit") == limit
    assert limit == 200 - 3  # the test cluster: max_connections 200, 3 reserved for superusers


def test_long_running_query_age(pg, serve):
    app = unique("sleeper")
    served = serve(only(pg, activity=True))
    conn = psycopg.connect(pg.dsn(SECOND_DB, application_name=app), autocommit=True)
    thread = threading.Thread(target=lambda: conn.execute("SELECT pg_sleep(1.6)"), daemon=True)
    try:
        thread.start()
        wait_until(lambda: pg.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND state = 'active' "
                                      "AND now() - query_start > interval '1 second'", SECOND_DB, (app,)),
                   timeout=5, interval=0.05, message="the query to run for a second")
        samples = served.metrics()
    finally:
        thread.join(timeout=10)
        conn.close()
    assert 1.0 <= samples.value("pg_stat_activity_oldest_query_age_seconds", datname=SECOND_DB) < 10
    assert samples.value("pg_stat_activity_sessions", datname=SECOND_DB, state="active", application_name=app) == 1
    # pg_sleep waits on a Timeout event, not on a lock
    assert samples.value("pg_stat_activity_waiting_sessions", datname=SECOND_DB, wait_event_type="Timeout") >= 1
    assert not samples.has("pg_stat_activity_waiting_sessions", datname=SECOND_DB, wait_event_type="Lock")
