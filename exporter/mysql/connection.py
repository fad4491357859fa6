"""One long-lived PyMySQL session per MySQL/MariaDB target, with reconnect backoff and a bound on
every call: the MySQL twin of :class:`exporter.postgres.connection.Connection` (same interface,
same exceptions, same :class:`~exporter.postgres.connection.Watchdog`), so the one scrape engine
drives both.

The session is set up so it cannot hurt the server: autocommit, ``SET SESSION TRANSACTION READ
ONLY``, ``lock_wait_timeout = 1`` (a metadata lock held by someone else fails a collector in a
second instead of queueing it behind the lock and everything after it), ``program_name=dbperf``,
and the server's statement timeout (MySQL's ``max_execution_time`` in ms, MariaDB's
``max_statement_time`` in s), set once at connect to the longest timeout of the collectors using the
session; a collector with a shorter one is bounded by the client.

No call blocks its caller past its deadline, whatever the server does:

- a connect runs in a thread of its own; the caller waits only until its deadline. PyMySQL's
  ``connect_timeout`` bounds the TCP connect, ``read_timeout`` each read (the handshake of a server
  that accepts TCP and never answers too).
- a query runs under a watchdog alarm. At its timeout or the deadline, ``KILL QUERY <id>`` is sent
  from a second, short-lived connection (MySQL has no out-of-band cancel; its connect and the KILL
  are bounded by :data:`CANCEL_TIMEOUT`); a query still running :data:`CANCEL_GRACE` after the KILL
  (or after the KILL's own bound) has its socket shut down under it. A session whose query was
  broken off is closed and replaced on the next use.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import Future

import pymysql
from pymysql.constants import CLIENT

from exporter.mysql import dsn as mysqldsn
from exporter.postgres.connection import (
    CANCEL_GRACE, CANCEL_TIMEOUT, HUNG_AFTER, BoundedConnection, ConnectError, DeadlineExceeded, Watchdog, _Run,
)
from exporter.secrets import scrub

__all__ = ["MySQLConnection", "flavour_of", "version_number"]

LOCK_WAIT_TIMEOUT = 1  # seconds (the server's minimum): metadata locks
# errors that say the server interrupted the statement (KILL QUERY, or its own statement timeout)
KILLED = 1317  # ER_QUERY_INTERRUPTED: what KILL QUERY makes the query fail with
INTERRUPTED = frozenset({1317, 1969, 3024})  # ER_QUERY_INTERRUPTED, MariaDB's ER_STATEMENT_TIMEOUT, MySQL's ER_QUERY_TIMEOUT
LOST = frozenset({2006, 2013, 2055})         # server gone away, lost connection


def flavour_of(version_text: str) -> str:
    """``mariadb`` when the server's VERSION() says so, else ``mysql``."""
    return "mariadb" if "mariadb" in version_text.lower() else "mysql"


def version_number(version_text: str) -> int:
    """``8.0.36`` -> 80036, ``10.11.19-MariaDB-0+deb12u1`` -> 101119 (major * 10000 + minor * 100 +
    patch); 0 when the text has no such version. (MariaDB's old ``5.5.5-`` replication prefix is
    dropped.)"""
    text = version_text
    if text.startswith("5.5.5-") and "mariadb" in text.lower():
        text = text[len("5.5.5-"):]
    parts = (text.split("-")[0].split(".") + ["0", "0"])[:3]
    try:
        major, minor, patch = (int("".join(ch for ch in p if ch.isdigit()) or "x") for p in parts)
    except ValueError:
        return 0
    return major * 10000 + minor * 100 + patch


def _connect_args(params: dict, connect_timeout: float, read_timeout: float) -> dict:
    args = {k: v for k, v in params.items() if k not in ("ssl_mode",)}
    mode = params.get("ssl_mode", "").lower()
    if mode == "disabled":
        args["ssl_disabled"] = True
    elif mode in ("verify_ca", "verify_identity"):
        args["ssl_verify_cert"] = True
        args["ssl_verify_identity"] = mode == "verify_identity"
    elif mode == "required" and not any(k in args for k in ("ssl_ca", "ssl_cert")):
        args["ssl"] = {"check_hostname": False}
    return {**args, "connect_timeout": max(1, connect_timeout), "read_timeout": read_timeout,
            "write_timeout": read_timeout, "autocommit": True, "client_flag": CLIENT.MULTI_STATEMENTS,
            "program_name": "dbperf", "charset": params.get("charset", "utf8mb4")}


class _Session:
    """A PyMySQL connection, its server thread id, and a duplicate of its socket (the watchdog shuts
    the duplicate down from another thread with no risk of hitting a reused file descriptor)."""

    def __init__(self, conn: pymysql.connections.Connection):
        self.conn = conn
        self.thread_id = conn.thread_id()
        self.version_text = conn.get_server_info()
        self.sock = socket.socket(fileno=os.dup(conn._sock.fileno()))

    @property
    def open(self) -> bool:
        return bool(self.conn.open)

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            try:
                self.conn._force_close()
            except Exception:
                pass
        self.sock.close()


def _timeout_sql(flavour: str, seconds: float) -> str:
    if flavour == "mariadb":
        return f"SET SESSION max_statement_time = {max(0.001, seconds):.3f}"
    return f"SET SESSION max_execution_time = {max(1, int(seconds * 1000))}"


class MySQLConnection(BoundedConnection):
    """A lazily (re)connected MySQL session. ``query`` runs ``;``-separated statements in one round
    trip and returns ``[(column_names, rows)]``, one per statement that returns rows."""

    def __init__(self, dsn: str, dbname: str | None = None, connect_timeout: float = 3.0,
                 watchdog: Watchdog | None = None, *, statement_timeout: float | None = None):
        self._params = mysqldsn.parse(dsn)
        if dbname:
            self._params["database"] = dbname
        self._password = self._params.get("password") or None
        self.description = mysqldsn.describe(dsn)
        self.dbname = dbname
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self._read_timeout = connect_timeout + (statement_timeout or 30.0) + 5.0  # the socket's safety net
        super().__init__(watchdog)
        self.kills = 0  # KILL QUERY sent

    def scrub(self, text: str) -> str:
        return scrub(str(text), self._password)

    @property
    def connected(self) -> bool:
        s = self._session
        return s is not None and s.open

    @property
    def backend_pid(self) -> int | None:
        s = self._session
        return s.thread_id if s is not None and s.open else None

    @property
    def flavour(self) -> str:
        s = self._session
        return flavour_of(s.version_text) if s is not None else ""

    # -- connecting ------------------------------------------------------------------------
    def _open(self, connect_timeout: float, read_timeout: float) -> pymysql.connections.Connection:
        return pymysql.connect(**_connect_args(self._params, connect_timeout, read_timeout))

    def _connect_in_thread(self, pending: Future) -> None:
        try:
            conn = self._open(self.connect_timeout, self._read_timeout)
            try:
                session = _Session(conn)
                setup = ["SET SESSION TRANSACTION READ ONLY", f"SET SESSION lock_wait_timeout = {LOCK_WAIT_TIMEOUT}"]
                if self.statement_timeout is not None:
                    setup.append(_timeout_sql(flavour_of(session.version_text), self.statement_timeout))
                with conn.cursor() as cur:
                    cur.execute(";\n".join(setup))
                    while cur.nextset():
                        pass
            except BaseException:
                conn.close()
                raise
        except Exception as exc:
            self._backoff.failed()
            message = self.scrub(" ".join(str(exc).split())) or type(exc).__name__
            pending.set_exception(ConnectError(f"cannot connect to MySQL at {self.description}: {message}"))
            return
        self._backoff.succeeded()
        pending.set_result(session)

    # -- querying (BoundedConnection.query) -------------------------------------------------
    def _lost(self, exc: Exception, session: _Session) -> bool | None:
        if not isinstance(exc, pymysql.err.OperationalError):
            return None
        return bool(exc.args and exc.args[0] in LOST) or not session.open

    def _bounded(self, session: _Session, sql: str, timeout: float, deadline: float):
        server_bounds = self.statement_timeout is not None and abs(self.statement_timeout - timeout) < 1e-9
        over = time.monotonic() + timeout + (HUNG_AFTER if server_bounds else 0.0)
        run = _Run(session)
        alarm = self._watchdog.arm(min(deadline, over), lambda: self._on_deadline(run))
        consumed = False
        try:
            return self._run_plain(session.conn, sql)
        except pymysql.err.MySQLError as exc:
            code = exc.args[0] if exc.args else None
            if not (run.cancelled or run.severed):
                if code in INTERRUPTED:  # the server's own statement timeout
                    self.overruns += 1
                    raise DeadlineExceeded(f"query on {self.description} ran past the server's statement "
                                           f"timeout; it was interrupted ({self.scrub(exc.args[-1])})") from None
                raise
            self.overruns += 1
            consumed = code == KILLED and not run.severed  # the server's own timeout: the KILL may still land
            how = "its socket was shut down" if run.severed else "it was killed (KILL QUERY)"
            what = f"ran past its timeout of {timeout:g}s" if over < deadline else "did not finish before the deadline"
            raise DeadlineExceeded(f"query on {self.description} {what}; {how}") from None
        finally:
            alarm.cancel()
            with run.lock:
                run.done = True
            if run.cancelled and not consumed and session is self._session:
                # broken off, or it ended just as the KILL went out (which may then hit a later
                # statement): this session is not used again
                self.close_locked()

    def _run_plain(self, conn, sql: str):
        results = []
        with conn.cursor() as cur:
            self.queries += sql.count(";") + 1
            cur.execute(sql)
            while True:
                if cur.description is not None:
                    results.append(([c[0] for c in cur.description], list(cur.fetchall())))
                if not cur.nextset():
                    break
        return results

    # the KILL needs a connect of its own (bounded by CANCEL_TIMEOUT): the socket is shut down
    # CANCEL_GRACE after the KILL went out (see _kill_then_sever), or after this when it hangs
    cancel_grace = CANCEL_TIMEOUT + CANCEL_GRACE

    def _cancel_run(self, run: _Run) -> None:
        """MySQL has no out-of-band cancel: ``KILL QUERY`` from a second connection, in a thread."""
        threading.Thread(target=self._kill_then_sever, args=(run,), daemon=True, name="dbperf-mysql-kill").start()

    def _kill_then_sever(self, run: _Run) -> None:
        self._kill(run.session.thread_id)
        self._watchdog.arm(time.monotonic() + CANCEL_GRACE, lambda: self._sever(run))

    def _kill(self, thread_id: int) -> None:
        """``KILL QUERY`` from a short-lived second connection, bounded by :data:`CANCEL_TIMEOUT`."""
        try:
            conn = self._open(CANCEL_TIMEOUT, CANCEL_TIMEOUT)
        except Exception:
            return
        try:
            with conn.cursor() as cur:
                cur.execute(f"KILL QUERY {int(thread_id)}")
            self.kills += 1
        except Exception:
            pass
        finally:
            try:
                conn.close()
            except Exception:
                pass
