"""One long-lived psycopg connection per target and database, with reconnect backoff.

The monitoring session is set up so it can never hurt the server: autocommit (no transaction is
ever held open), read-only, ``application_name=dbperf``, ``jit=off``, a ``lock_timeout`` and a
``statement_timeout`` that follows each collector's timeout.
"""

from __future__ import annotations

import threading
import time

import psycopg
from psycopg.conninfo import make_conninfo

from exporter.secrets import describe_dsn, password_of, scrub

MAX_BACKOFF = 8.0


class Backoff:
    """After a failed connect, no new attempt for 0.5 s, doubling up to ``MAX_BACKOFF``."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self._delay = 0.0
        self._next = 0.0

    def check(self, description: str) -> None:
        """Raise :class:`ConnectError` while the last failure's delay runs."""
        now = self.clock()
        if now < self._next:
            raise ConnectError(f"not retrying {description} for another {self._next - now:.1f}s "
                               "after a failed connect")

    def failed(self) -> None:
        self._delay = min(MAX_BACKOFF, max(0.5, self._delay * 2))
        self._next = self.clock() + self._delay

    def succeeded(self) -> None:
        self._delay = 0.0


class ConnectError(RuntimeError):
    """The database cannot be reached now; the message is scrubbed of passwords."""


class Busy(RuntimeError):
    """The connection is still running a query of an earlier scrape."""


def session_conninfo(dsn: str, dbname: str | None, connect_timeout: float) -> str:
    extra = {"application_name": "dbperf", "connect_timeout": max(1, int(round(connect_timeout)))}
    if dbname is not None:
        extra["dbname"] = dbname
    return make_conninfo(dsn, **extra)


class Connection:
    """A lazily (re)connected session. ``query`` runs a batch of statements in one round trip."""

    LOCK_TIMEOUT_MS = 1000

    def __init__(self, dsn: str, dbname: str | None = None, connect_timeout: float = 3.0):
        self._conninfo = session_conninfo(dsn, dbname, connect_timeout)
        self._password = password_of(dsn)
        self.description = describe_dsn(self._conninfo)
        self.dbname = dbname
        self._conn: psycopg.Connection | None = None
        self._timeout_ms: int | None = None
        self._lock = threading.Lock()
        self._backoff = Backoff()
        self.connects = 0  # successful connects, for tests and self-metrics
        self.queries = 0   # statements sent, for the benchmark

    # -- connecting ------------------------------------------------------------------------
    def _connect(self) -> psycopg.Connection:
        self._backoff.check(self.description)
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, prepare_threshold=None)
            conn.execute(f"SET jit = off; SET lock_timeout = {self.LOCK_TIMEOUT_MS}; "
                         "SET default_transaction_read_only = on")
        except Exception as exc:
            self._backoff.failed()
            raise ConnectError(self.scrub(f"cannot connect to {self.description}: {exc}")) from None
        self._backoff.succeeded()
        self._timeout_ms = None
        self.connects += 1
        return conn

    def scrub(self, text: str) -> str:
        return scrub(text, self._password)

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed and not self._conn.broken

    # -- querying --------------------------------------------------------------------------
    def query(self, sql: str, timeout: float, wait: float = 0.0):
        """Run ``sql`` (one or several ``;``-separated statements, no parameters) in one round
        trip and return a list of ``(column_names, rows)``, one per statement that returns rows.

        Raises :class:`Busy` when an earlier query still holds the connection after ``wait``
        seconds, :class:`ConnectError` when the server cannot be reached, or psycopg's error.
        A connection found broken (the server restarted) is reopened and the batch retried once.
        """
        acquired = self._lock.acquire(timeout=wait) if wait > 0 else self._lock.acquire(blocking=False)
        if not acquired:
            raise Busy(f"connection to {self.description} is still busy with an earlier scrape")
        try:
            for attempt in (1, 2):
                was_connected = self.connected
                if not was_connected:
                    self.close_locked()
                    self._conn = self._connect()
                try:
                    return self._run(self._conn, sql, timeout)
                except psycopg.OperationalError:
                    broken = self._conn is None or self._conn.broken or self._conn.closed
                    if broken:
                        self.close_locked()
                    if not (broken and was_connected and attempt == 1):
                        raise
            raise AssertionError("unreachable")
        finally:
            self._lock.release()

    def _run(self, conn: psycopg.Connection, sql: str, timeout: float):
        timeout_ms = max(1, int(timeout * 1000))
        if timeout_ms != self._timeout_ms:
            sql = f"SET statement_timeout = {timeout_ms}; {sql}"
        self._timeout_ms = None  # unknown until the batch succeeds
        results = []
        with conn.cursor() as cur:
            self.queries += sql.count(";") + 1
            cur.execute(sql)
            while True:
                if cur.description is not None:
                    results.append(([c.name for c in cur.description], cur.fetchall()))
                if not cur.nextset():
                    break
        self._timeout_ms = timeout_ms
        return results

    def cancel(self) -> None:
        """Cancel the statement running now (from another thread), if any."""
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.cancel_safe(timeout=1.0)
            except Exception:
                pass

    def close_locked(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None
        self._timeout_ms = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()
