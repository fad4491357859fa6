"""exporter.mysql.connection against a real throwaway MariaDB: the session is read-only and bounded
by the server's max_statement_time, a query past its timeout is killed (KILL QUERY from a second
connection) and the session kept, a server that never answers is bounded by the deadline, a wrong
password is one line without the password, a restarted server is reconnected to."""

from __future__ import annotations

import socket
import time

import pymysql
import pytest

from conftest import MYSQL_PASSWORD, mysql_dsn, wait_until
from exporter.mysql.connection import MySQLConnection, flavour_of, version_number
from exporter.postgres.connection import ConnectError, DeadlineExceeded

pytestmark = pytest.mark.pg


@pytest.fixture
def conn(mariadb):
    c = MySQLConnection(mysql_dsn(mariadb), statement_timeout=5.0)
    yield c
    c.close()


def test_version_and_flavour_from_version_text():
    assert version_number("10.11.19-MariaDB-0+deb12u1") == 101119
    assert version_number("5.5.5-10.6.12-MariaDB-log") == 100612
    assert version_number("8.0.36") == 80036
    assert version_number("8.4.0-commercial") == 80400
    assert version_number("garbage") == 0
    assert flavour_of("10.11.19-MariaDB-0+deb12u1") == "mariadb"
    assert flavour_of("8.0.36") == "mysql"


def test_session_is_read_only_with_the_statement_timeout_set_once(conn, mariadb):
    results = conn.query("SELECT @@SESSION.tx_read_only, @@SESSION.max_statement_time, @@SESSION.lock_wait_timeout;"
                         "SELECT 1", timeout=2.0)
    assert [rows for _, rows in results] == [[(1, 5.0, 1)], [(1,)]]
    with pytest.raises(pymysql.err.MySQLError) as caught:
        conn.query("CREATE TABLE dbperf_test.must_not_exist (id int)", timeout=2.0)
    assert caught.value.args[0] in (1792, 1142, 1044)  # read-only transaction (or no privilege)
    assert not mariadb.execute("SELECT 1 FROM information_schema.tables WHERE table_name = 'must_not_exist'")
    assert conn.connects == 1  # one session for all of it


def test_query_past_its_timeout_is_killed_on_the_server_and_the_session_kept(conn, mariadb):
    conn.query("SELECT 1", timeout=2.0)
    thread_id = conn.backend_pid
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="KILL QUERY"):
        conn.query("SELECT SLEEP(20)", timeout=0.5)
    assert time.monotonic() - started < 3.0  # the KILL's connect and statement: CANCEL_TIMEOUT at most
    assert conn.kills == 1
    # the server is no longer running it, and the same session answers the next query
    assert not mariadb.execute("SELECT 1 FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(20)%'")
    assert conn.query("SELECT 2", timeout=2.0) == [(["2"], [(2,)])]
    assert conn.backend_pid == thread_id


def test_the_servers_own_statement_timeout_interrupts_first(mariadb):
    conn = MySQLConnection(mysql_dsn(mariadb), statement_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="statement timeout"):
            conn.query("SELECT SLEEP(20) FROM information_schema.tables LIMIT 1", timeout=0.3)
        assert time.monotonic() - started < 2.0
        assert conn.kills == 0  # MariaDB's max_statement_time did it
    finally:
        conn.close()


def test_deadline_bounds_a_query(conn):
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="before the deadline"):
        conn.query("SELECT SLEEP(20)", timeout=10.0, deadline=time.monotonic() + 0.4)
    assert time.monotonic() - started < 3.0  # the deadline, then the KILL (its connect: CANCEL_TIMEOUT at most)


def test_wrong_password_is_one_line_without_the_password(mariadb):
    secret = "wrong-" + MYSQL_PASSWORD
    conn = MySQLConnection(mysql_dsn(mariadb, password=secret))
    with pytest.raises(ConnectError) as caught:
        conn.query("SELECT 1", timeout=2.0)
    message = str(caught.value)
    assert "Access denied" in message and "\n" not in message
    assert secret not in message and MYSQL_PASSWORD not in message
    assert f"port={mariadb.port}" in message and "user=dbperf" in message
    # the next attempt waits for the backoff instead of hammering the server
    with pytest.raises(ConnectError, match="not retrying"):
        conn.query("SELECT 1", timeout=2.0)


def test_a_server_that_accepts_tcp_and_never_answers_is_bounded():
    with socket.socket() as listener:  # the kernel completes the TCP handshake; nobody ever answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        conn = MySQLConnection(f"mysql://dbperf:pw@127.0.0.1:{port}/", connect_timeout=5.0)
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="does not answer"):
            conn.query("SELECT 1", timeout=1.0, deadline=time.monotonic() + 0.5)
        assert time.monotonic() - started < 1.0
        conn.close()


def test_reconnects_after_a_server_restart(mariadb):
    conn = MySQLConnection(mysql_dsn(mariadb))
    try:
        conn.query("SELECT 1", timeout=2.0)
        mariadb.stop()
        with pytest.raises((ConnectError, pymysql.err.OperationalError)):
            conn.query("SELECT 1", timeout=2.0)
        mariadb.start()

        def answers():
            try:
                return conn.query("SELECT 3", timeout=2.0) == [(["3"], [(3,)])]
            except ConnectError:  # the backoff's delay
                return False

        wait_until(answers, timeout=30, message="the connection answering after the restart")
        assert conn.connects == 2
    finally:
        mariadb.start()
        conn.close()
