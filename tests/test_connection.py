"""exporter.postgres.connection on a real PostgreSQL: reconnect, scrubbing, busy sessions, and
the client-side bound of every call (cancel, then the socket shut down) when the server hangs.
The tests that freeze processes (SIGSTOP) run a throwaway cluster of their own."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import wait_until
from freezing import frozen, postmaster_pid
from exporter.pgcluster import Cluster, free_port
from exporter.postgres.connection import (CANCEL_GRACE, CANCEL_TIMEOUT, HUNG_AFTER, Busy, ConnectError, Connection,
                                          DeadlineExceeded)

pytestmark = pytest.mark.pg

SECRET = "Pw-In-The-Dsn-4711"


@pytest.fixture
def conn(pg):
    c = Connection(pg.dsn("postgres"))
    yield c
    c.close()


def backend_alive(pg, pid: int) -> bool:
    return bool(pg.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", params=(pid,)))


def test_broken_session_is_reopened_and_the_batch_retried(pg, conn):
    assert conn.query("SELECT 1", 2)[0][1] == [(1,)]
    pid = conn.backend_pid
    pg.execute("SELECT pg_terminate_backend(%s)", params=(pid,))
    wait_until(lambda: not backend_alive(pg, pid), timeout=10, message="the terminated backend to go")
    (_, rows), = conn.query("SELECT pg_backend_pid()", 2)  # no error: reconnected and retried once
    assert rows[0][0] != pid and conn.connects == 2


def test_session_is_read_only_named_and_time_limited(conn):
    results = conn.query("SHOW application_name; SHOW jit; SHOW default_transaction_read_only; "
                         "SHOW lock_timeout", 1.5)
    assert [rows[0][0] for _, rows in results] == ["dbperf", "off", "on", "1s"]
    assert conn.query("SHOW statement_timeout", 1.5)[0][1][0][0] == "1500ms"
    with pytest.raises(psycopg.errors.QueryCanceled):  # the server's own statement timeout
        conn.query("SELECT pg_sleep(3)", 0.2)
    assert conn.query("SELECT 2", 1)[0][1] == [(2,)] and conn.connects == 1


def test_a_session_timeout_set_at_connect_is_raised_once_and_never_lowered(pg):
    """``statement_timeout=``: set with the session, no SET for shorter queries (the client cuts
    them at their own timeout), one SET for a longer one, which the session then keeps."""
    conn = Connection(pg.dsn("postgres"), statement_timeout=3)
    try:
        assert conn.query("SHOW statement_timeout", 1)[0][1] == [("3s",)]
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="ran past its timeout of 0.3s; it was cancelled"):
            conn.query("SELECT pg_sleep(3)", 0.3)
        assert time.monotonic() - start < 0.3 + CANCEL_GRACE
        assert conn.query("SHOW statement_timeout", 5)[0][1] == [("5s",)] and conn.sets == 1
        assert conn.query("SHOW statement_timeout", 1)[0][1] == [("5s",)] and conn.sets == 1
        assert conn.connects == 1
    finally:
        conn.close()


def test_errors_are_scrubbed_of_the_password(pg):
    conn = Connection(pg.dsn("postgres", password=SECRET))  # trust authentication: the password is unused
    try:
        with pytest.raises(psycopg.Error) as err:
            conn.query(f"SELECT '{SECRET}'::int", 2)
        assert SECRET in str(err.value)  # the server quotes it back ...
        scrubbed = conn.scrub(str(err.value))
        assert SECRET not in scrubbed and "***" in scrubbed and "\n" not in scrubbed
        assert SECRET not in conn.description
    finally:
        conn.close()


def test_unreachable_server_is_a_scrubbed_connect_error_then_backed_off():
    port = free_port()
    conn = Connection(f"host=127.0.0.1 port={port} dbname=nowhere user=u password={SECRET}")
    try:
        with pytest.raises(ConnectError) as err:
            conn.query("SELECT 1", 1)
        message = str(err.value)
        assert f"cannot connect to host=127.0.0.1 port={port} dbname=nowhere user=u" in message
        assert SECRET not in message
        start = time.monotonic()
        with pytest.raises(ConnectError, match="not retrying"):  # no new attempt right away
            conn.query("SELECT 1", 1)
        assert time.monotonic() - start < 0.5
    finally:
        conn.close()


def test_busy_session_fails_fast_or_waits_its_turn(conn):
    done = []
    worker = threading.Thread(target=lambda: done.append(conn.query("SELECT pg_sleep(0.8), 1", 5)))
    worker.start()
    try:
        wait_until(lambda: conn._lock.locked(), timeout=5, interval=0.01, message="the first query to start")
        start = time.monotonic()
        with pytest.raises(Busy, match="still busy"):
            conn.query("SELECT 2", 1)
        assert time.monotonic() - start < 0.5
        assert conn.query("SELECT 3", 1, wait=10)[0][1] == [(3,)]  # waits for the first one
        assert done and done[0][0][1][0][1] == 1
    finally:
        worker.join()


def test_deadline_cancels_a_slow_query_and_keeps_the_session(pg, conn):
    conn.query("SELECT 1", 1)
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="cancelled"):
        conn.query("SELECT pg_sleep(10)", 30, deadline=start + 0.5)
    took = time.monotonic() - start
    assert 0.5 <= took < 0.5 + CANCEL_GRACE, f"took {took:.2f}s"  # the cancel worked: nothing shut down
    assert not pg.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = 'dbperf' "
                          "AND query LIKE '%pg_sleep(10)%' AND state = 'active'")
    assert conn.query("SELECT 4", 1)[0][1] == [(4,)] and conn.connects == 1


def test_within_bounds_the_queries_of_this_thread_only(conn):
    """How a scrape bounds a collector that calls query(sql, timeout) and knows no deadline."""
    other = []
    with conn.within(time.monotonic() + 0.4):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            conn.query("SELECT pg_sleep(5)", 30)
        assert time.monotonic() - start < 0.4 + CANCEL_GRACE
        worker = threading.Thread(target=lambda: other.append(conn.query("SELECT pg_sleep(0.6), 6", 5)))
        worker.start()  # another thread: not bound by this one's deadline
        worker.join()
    assert other and other[0][0][1][0][1] == 6
    assert conn.query("SELECT pg_sleep(0.6), 7", 5)[0][1][0][1] == 7  # the block is over


# -- a server that does not answer: a throwaway cluster the tests freeze ------------------------

@pytest.fixture(scope="module")
def own():
    with Cluster() as c:
        yield c


@pytest.fixture
def own_conn(own):
    c = Connection(own.dsn("postgres"), connect_timeout=5)
    yield c
    c.close()


def threads_named(prefix: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith(prefix))


def test_frozen_backend_query_is_broken_off_and_the_session_replaced(own_conn):
    own_conn.query("SELECT 1", 1)
    pid = own_conn.backend_pid
    with frozen(pid):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="socket was shut down"):
            own_conn.query("SELECT 1", 5, deadline=start + 1.0)
        took = time.monotonic() - start
        assert took < 1.0 + CANCEL_GRACE + 0.5, f"took {took:.2f}s"
        assert not own_conn.connected
        (_, rows), = own_conn.query("SELECT pg_backend_pid()", 2)  # a new backend answers
        assert rows[0][0] != pid and own_conn.connects == 2


def test_without_a_deadline_a_hung_query_ends_after_its_timeout(own_conn):
    own_conn.query("SELECT 1", 1)
    with frozen(own_conn.backend_pid):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            own_conn.query("SELECT 1", 0.5)
        took = time.monotonic() - start
        assert took < 0.5 + HUNG_AFTER + CANCEL_GRACE + 0.5, f"took {took:.2f}s"


def test_cancel_that_never_returns_does_not_hold_the_query(own, own_conn):
    """Postmaster frozen too: the cancel request is never answered."""
    own_conn.query("SELECT 1", 1)
    before = threads_named("dbperf-cancel")
    with frozen(own_conn.backend_pid, postmaster_pid(own)):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            own_conn.query("SELECT 1", 5, deadline=start + 0.5)
        took = time.monotonic() - start
        assert took < 0.5 + CANCEL_GRACE + 0.5, f"took {took:.2f}s"
        assert threads_named("dbperf-cancel") <= before + 1
    # the cancel's thread ends by its own timeout
    wait_until(lambda: threads_named("dbperf-cancel") <= before, timeout=CANCEL_TIMEOUT + 5,
               message="the cancel thread to end")


def test_frozen_postmaster_connect_is_bounded_and_its_session_kept_for_later(own, own_conn):
    before = threads_named("dbperf-connect")
    with frozen(postmaster_pid(own)):
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="connect"):
            own_conn.query("SELECT 1", 2, deadline=start + 0.8)  # connect_timeout is 5 s
        took = time.monotonic() - start
        assert took < 0.8 + 0.5, f"took {took:.2f}s"
        with pytest.raises(DeadlineExceeded):  # the next call waits for the same connect
            own_conn.query("SELECT 1", 2, deadline=time.monotonic() + 0.2)
        assert threads_named("dbperf-connect") <= before + 1  # one connect, not one per call
    assert own_conn.query("SELECT 5", 2, deadline=time.monotonic() + 10)[0][1] == [(5,)]
    assert own_conn.connects == 1  # the connect begun during the freeze finished and was used
