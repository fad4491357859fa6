"""exporter.postgres.connection without a server: the reconnect backoff (on a fake clock), the
watchdog that bounds every call, the session's connection string, and shutting a socket down
under a blocked reader (a real socket pair)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from psycopg.conninfo import conninfo_to_dict

from exporter.postgres.connection import (MAX_BACKOFF, Backoff, ConnectError, Connection, Watchdog, session_conninfo,
                                          shutdown_socket)

pytestmark = pytest.mark.fast


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_backoff_waits_half_a_second_then_doubles_up_to_the_maximum():
    clock = Clock()
    backoff = Backoff(clock)
    backoff.check("db")  # never failed: no wait
    for delay in (0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0):
        backoff.failed()
        start = clock.now
        clock.now = start + delay - 0.01
        with pytest.raises(ConnectError, match="not retrying db for another"):
            backoff.check("db")
        clock.now = start + delay + 0.01
        backoff.check("db")  # the delay is over: a new attempt may go
    assert MAX_BACKOFF == 8.0


def test_backoff_starts_over_after_a_success():
    clock = Clock()
    backoff = Backoff(clock)
    for _ in range(4):
        backoff.failed()
    backoff.succeeded()
    backoff.failed()
    clock.now += 0.45
    with pytest.raises(ConnectError):
        backoff.check("db")
    clock.now += 0.1
    backoff.check("db")


def test_backoff_message_says_how_long():
    clock = Clock()
    backoff = Backoff(clock)
    backoff.failed()
    backoff.failed()  # 1 s
    clock.now += 0.3
    with pytest.raises(ConnectError, match=r"for another 0\.7s after a failed connect"):
        backoff.check("host=h port=5432")


def test_session_conninfo_names_dbperf_and_bounds_the_connect():
    params = conninfo_to_dict(session_conninfo("host=h port=5 dbname=app user=u password=pw", None, 2.5))
    assert params["application_name"] == "dbperf" and params["connect_timeout"] == "3"
    assert params["dbname"] == "app" and params["password"] == "pw"
    assert conninfo_to_dict(session_conninfo("host=h dbname=app", "other", 0.2))["dbname"] == "other"
    assert conninfo_to_dict(session_conninfo("host=h", None, 0.2))["connect_timeout"] == "1"


def test_a_connection_describes_itself_without_the_password():
    conn = Connection("host=db.example port=5433 dbname=app user=mon password=Hidden-Pw-9", "shop")
    assert conn.description == "host=db.example port=5433 dbname=shop user=mon"
    assert conn.scrub("FATAL: Hidden-Pw-9\nrejected") == "FATAL: *** rejected"
    assert not conn.connected and conn.backend_pid is None
    conn.close()  # never connected: nothing to do, no error


def test_watchdog_fires_alarms_in_time_order_and_skips_cancelled_ones():
    watchdog = Watchdog("dbperf-watchdog-test")
    fired, done = [], threading.Event()
    now = time.monotonic()
    watchdog.arm(now + 0.3, lambda: (fired.append("c"), done.set()))
    watchdog.arm(now + 0.1, lambda: fired.append("a"))
    cancelled = watchdog.arm(now + 0.15, lambda: fired.append("cancelled"))
    watchdog.arm(now + 0.2, lambda: fired.append("b"))
    cancelled.cancel()
    assert done.wait(10)
    assert fired == ["a", "b", "c"]
    assert watchdog.pending() == 0


def test_watchdog_survives_a_failing_alarm_and_its_thread_ends_when_idle():
    watchdog = Watchdog("dbperf-watchdog-idle-test")
    watchdog.IDLE = 0.1
    done = threading.Event()
    watchdog.arm(time.monotonic(), lambda: 1 / 0)
    watchdog.arm(time.monotonic() + 0.05, done.set)
    assert done.wait(10)
    thread = watchdog._thread
    if thread is not None:
        thread.join(10)
        assert not thread.is_alive()
    assert watchdog._thread is None
    again = threading.Event()
    watchdog.arm(time.monotonic(), again.set)  # a new thread on demand
    assert again.wait(10)


def test_shutdown_socket_wakes_a_blocked_reader():
    ours, theirs = socket.socketpair()  # "theirs" never writes: a server that does not answer
    got = []
    reader = threading.Thread(target=lambda: got.append(ours.recv(10)))
    reader.start()
    try:
        shutdown_socket(ours)
        reader.join(10)
        assert not reader.is_alive() and got == [b""]
        shutdown_socket(ours)  # twice: no error
        shutdown_socket(None)
    finally:
        ours.close()
        theirs.close()
