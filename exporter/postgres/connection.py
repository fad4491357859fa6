"""One long-lived psycopg connection per target and database, with reconnect backoff, and a
client-side bound on every call.

The monitoring session is opened by :func:`exporter.postgres.session.open_session` and set up so
it can never hurt the server: autocommit (no transaction is ever held open), read-only,
``application_name=dbperf``, ``jit=off``, a ``lock_timeout`` and a ``statement_timeout``. How a
kind of server's sessions are set up is its :class:`Flavour` (PgBouncer's admin console takes no
``SET`` at all).

The statement timeout: a connection made with ``statement_timeout=`` (what the scrape engine
does: the largest timeout of the collectors that use the session) sets it once, at connect, and
bounds each query at its own, shorter timeout on the client side (the watchdog's cancel), so that
a scrape sends no ``SET`` (each would be a statement in ``pg_stat_statements``, and a round trip);
the server's timeout stays as the safety net. Without it the session's timeout follows each
query's (a ``SET`` whenever it changes).

No call blocks its caller past its deadline, whatever the server does (a frozen backend, a
frozen postmaster, a cancel that never returns, a TCP connection that hangs):

- a connect runs in a thread of its own (at most one per connection at a time); the caller waits
  for it only until its deadline (psycopg's ``connect_timeout`` is whole seconds, 2 at least). A
  connect that finishes after the caller gave up is kept for the next call.
- a query runs under an alarm of a :class:`Watchdog`. At the deadline a cancel request is sent
  from a short-lived thread with its own timeout; a query still running :data:`CANCEL_GRACE`
  later has its socket shut down under it, so the blocked call fails at once. The session is
  then closed and replaced on the next use.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import os
import socket
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict

from exporter.postgres.session import ConnectError, open_session, session_conninfo, settings_sql
from exporter.postgres.sqlmark import mark
from exporter.secrets import describe_dsn, password_of, scrub

__all__ = ["Backoff", "BoundedConnection", "Busy", "ConnectError", "Connection", "DeadlineExceeded", "Flavour", "POSTGRES", "Watchdog",
           "open_session", "session_conninfo", "shutdown_socket"]

MAX_BACKOFF = 8.0
CANCEL_GRACE = 0.5    # seconds a cancel gets, after a deadline, before the socket is shut down
CANCEL_TIMEOUT = 2.0  # a cancel request's own bound (its thread ends by then)
HUNG_AFTER = 1.0      # a server that has not answered this long after the statement timeout hangs
LOCK_TIMEOUT_MS = 1000


@dataclass(frozen=True)
class Flavour:
    """How the sessions of one kind of server are opened and bounded."""

    settings: tuple = ()            # SET after connecting, in one round trip
    statement_timeout: bool = True  # the server bounds statements (SET statement_timeout); else the
                                    # client alone does, and each query is sent exactly as given
    default_dbname: str | None = None  # the database when neither the DSN nor the caller names one


POSTGRES = Flavour(settings=("jit = off", f"lock_timeout = {LOCK_TIMEOUT_MS}", "default_transaction_read_only = on"))
SETUP_SQL = settings_sql(POSTGRES.settings)  # what a PostgreSQL session sets (plus its statement_timeout)


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


class Busy(RuntimeError):
    """The connection is still running a query of an earlier scrape."""


class DeadlineExceeded(TimeoutError):
    """A connect or a query did not finish before its deadline (the server did not answer)."""


class Alarm:
    """One call armed on a :class:`Watchdog`; ``cancel()`` before it fires disarms it."""

    __slots__ = ("when", "fn", "cancelled")

    def __init__(self, when: float, fn):
        self.when, self.fn, self.cancelled = when, fn, False

    def cancel(self) -> None:
        self.cancelled = True


class Watchdog:
    """Calls functions at given ``time.monotonic()`` times from one daemon thread, which starts
    when an alarm is armed and ends after :attr:`IDLE` seconds without any. The functions must be
    quick (they start threads, shut sockets down)."""

    IDLE = 30.0

    def __init__(self, name: str = "dbperf-watchdog"):
        self.name = name
        self._cond = threading.Condition()
        self._heap: list = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, when: float, fn) -> Alarm:
        alarm = Alarm(when, fn)
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), alarm))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is alarm:  # the thread sleeps until a later alarm: wake it
                self._cond.notify()
        return alarm

    def pending(self) -> int:
        with self._cond:
            return sum(1 for _, _, a in self._heap if not a.cancelled)

    def _next_due(self) -> Alarm | None:
        """Under the lock: wait for the next alarm that is due, None when idle for IDLE."""
        while True:
            while self._heap and self._heap[0][2].cancelled:
                heapq.heappop(self._heap)
            if not self._heap:
                if not self._cond.wait(self.IDLE) and not self._heap:
                    self._thread = None
                    return None
                continue
            delay = self._heap[0][0] - time.monotonic()
            if delay <= 0:
                return heapq.heappop(self._heap)[2]
            self._cond.wait(delay)

    def _loop(self) -> None:
        while True:
            with self._cond:
                alarm = self._next_due()
            if alarm is None:
                return
            if not alarm.cancelled:
                try:
                    alarm.fn()
                except Exception:  # an alarm must never stop the others
                    pass


_SET_PREFIX = "SET statement_timeout = "


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def shutdown_socket(sock: socket.socket | None) -> None:
    """Shut a socket down (both ways): a call blocked on it returns at once, with an error."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Session:
    """A psycopg connection and a duplicate of its socket. The duplicate lets the watchdog shut
    the socket down from another thread with no risk of hitting a reused file descriptor."""

    def __init__(self, conn: psycopg.Connection):
        self.conn = conn
        self.sock = socket.socket(fileno=os.dup(conn.pgconn.socket))
        self.timeout_ms: int | None = None  # the session's statement_timeout, None: unknown

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass
        self.sock.close()


def _close_session(future: Future) -> None:
    if future.exception() is None:
        future.result().close()


class _Run:
    """The state of one bounded call, shared with its alarms."""

    def __init__(self, session: _Session):
        self.session = session
        self.lock = threading.Lock()
        self.done = False
        self.cancelled = False  # the deadline passed and a cancel request was sent
        self.severed = False    # ... and the socket was shut down
        self.consumed = False   # the query failed because of that cancel


class BoundedConnection:
    """What every kind's lazily (re)connected session shares (PostgreSQL's :class:`Connection`,
    MySQL's :class:`exporter.mysql.connection.MySQLConnection`): the deadline of the calling
    thread (:meth:`within`), a connect in a thread of its own waited for until the deadline, with
    :class:`Backoff`, one query at a time (:class:`Busy`), one retry on a session found broken, and
    the socket shut down under a query that outlived its cancel (:meth:`_sever`).

    A subclass sets ``description``, ``dbname`` and ``connect_timeout`` and implements
    ``_connect_in_thread`` (resolves a Future with a session that has ``sock`` and ``close()``),
    ``_bounded`` (one call under the watchdog), ``_lost`` and ``connected``."""

    cancel_grace = CANCEL_GRACE  # seconds from the cancel to the shutdown of the socket

    def __init__(self, watchdog: "Watchdog | None"):
        self._session = None
        self._pending: Future | None = None   # a connect running in its thread
        self._lock = threading.Lock()
        self._watchdog = watchdog or Watchdog()
        self._local = threading.local()  # the deadline of the calling thread's scrape
        self._backoff = Backoff()
        self.connects = 0  # successful connects, for tests and self-metrics
        self.queries = 0   # statements sent, for the benchmark
        self.overruns = 0  # calls that hit their deadline

    @contextlib.contextmanager
    def within(self, when: float):
        """Within the block, this thread's queries end by ``when`` (a ``time.monotonic()``
        time): how a scrape bounds a collector, which calls ``query(sql, timeout)`` and knows
        no deadline (the collector keeps seeing the same connection object)."""
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = when
        try:
            yield self
        finally:
            self._local.deadline = previous

    def _lost(self, exc: Exception, session) -> bool | None:
        """None when ``exc`` is no connection error (it is raised as is), else whether ``session``
        is broken (it is then closed, and a batch on a session that was open is retried once)."""
        raise NotImplementedError

    def _connect(self, deadline: float):
        """Under the lock: a new session, waited for until ``deadline`` at most."""
        pending = self._pending
        if pending is None:
            self._backoff.check(self.description)
            pending = self._pending = Future()
            threading.Thread(target=self._connect_in_thread, args=(pending,), daemon=True,
                             name=f"dbperf-connect-{self.dbname or 'main'}").start()
        try:
            session = pending.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:  # still running: the next call waits for the same connect
            self.overruns += 1
            raise DeadlineExceeded(f"connect to {self.description} did not finish before the deadline "
                                   "(the server does not answer)") from None
        except BaseException:
            self._pending = None
            raise
        self._pending = None
        self.connects += 1
        return session

    def query(self, sql: str, timeout: float, wait: float = 0.0, deadline: float | None = None):
        """Run ``sql`` (one or several ``;``-separated statements, no parameters) in one round
        trip and return a list of ``(column_names, rows)``, one per statement that returns rows.

        The query is cancelled at ``deadline`` (a ``time.monotonic()`` time; by default the one
        this thread set with :meth:`within`), or ``timeout`` after it was sent when that is earlier
        (``timeout + HUNG_AFTER`` when the session's statement timeout is that same one, so the
        server's own cancel comes first); a server that does not answer the cancel has the socket shut down
        :data:`CANCEL_GRACE` later, so the call never blocks longer, whatever the server does.
        A connect is waited for until ``deadline`` only.

        Raises :class:`Busy` when an earlier query still holds the connection after ``wait``
        seconds, :class:`ConnectError` when the server cannot be reached,
        :class:`DeadlineExceeded` when it did not answer in time, or the driver's error.
        A connection found broken (the server restarted) is reopened and the batch retried once.
        """
        now = time.monotonic()
        if deadline is None:
            deadline = getattr(self._local, "deadline", None) or now + self.connect_timeout + timeout + HUNG_AFTER
        if deadline - now <= 0:
            raise DeadlineExceeded(f"no time left to query {self.description}")
        if wait > 0:
            acquired = self._lock.acquire(timeout=min(wait, deadline - now))
        else:
            acquired = self._lock.acquire(blocking=False)
        if not acquired:
            raise Busy(f"connection to {self.description} is still busy with an earlier scrape")
        try:
            for attempt in (1, 2):
                was_connected = self.connected
                if not was_connected:
                    self.close_locked()
                    self._session = self._connect(deadline)
                session = self._session
                try:
                    return self._bounded(session, sql, timeout, deadline)
                except DeadlineExceeded:
                    raise
                except Exception as exc:
                    broken = self._lost(exc, session)
                    if broken is None:
                        raise
                    if broken:
                        self.close_locked()
                    if not (broken and was_connected and attempt == 1 and time.monotonic() < deadline):
                        raise
            raise AssertionError("unreachable")
        finally:
            self._lock.release()

    def _on_deadline(self, run) -> None:
        """In the watchdog's thread: the call outlived its deadline: cancel it (the subclass's
        ``_cancel_run``), and shut its socket down if it still runs ``cancel_grace`` later."""
        with run.lock:
            if run.done:
                return
            run.cancelled = True
        self._cancel_run(run)
        self._watchdog.arm(time.monotonic() + self.cancel_grace, lambda: self._sever(run))

    def _sever(self, run) -> None:
        with run.lock:  # the socket is closed only after run.done: never a reused descriptor
            if run.done:
                return
            run.severed = True
            shutdown_socket(run.session.sock)

    def close_locked(self) -> None:
        if self._session is not None:
            self._session.close()
        self._session = None

    def close(self) -> None:
        """Close the session (the next query opens a new one); a query still running on it is
        broken off, never waited for."""
        if self._lock.acquire(timeout=0.2):
            try:
                pending, self._pending = self._pending, None
                if pending is not None:  # a connect still running: its session is closed when it ends
                    pending.add_done_callback(_close_session)
                self.close_locked()
            finally:
                self._lock.release()
        else:
            session = self._session
            if session is not None:
                shutdown_socket(session.sock)  # the query fails now; its thread closes the session


class Connection(BoundedConnection):
    """A lazily (re)connected session. ``query`` runs a batch of statements in one round trip.

    ``flavour``: how the server's sessions are set up (:data:`POSTGRES` by default);
    ``statement_timeout``: the session's statement timeout in seconds, set once at connect (see
    the module's docstring); None: it follows each query's timeout."""

    LOCK_TIMEOUT_MS = LOCK_TIMEOUT_MS

    def __init__(self, dsn: str, dbname: str | None = None, connect_timeout: float = 3.0,
                 watchdog: Watchdog | None = None, *, flavour: Flavour = POSTGRES,
                 statement_timeout: float | None = None):
        if dbname is None and flavour.default_dbname and not conninfo_to_dict(dsn).get("dbname"):
            dbname = flavour.default_dbname
        self._dsn = dsn
        self._password = password_of(dsn)
        self.description = describe_dsn(session_conninfo(dsn, dbname, connect_timeout))
        self.dbname = dbname
        self.flavour = flavour
        self._connect_timeout = connect_timeout
        self.connect_timeout = max(2.0, math.ceil(connect_timeout))  # what psycopg applies
        self._session_timeout_ms = (None if statement_timeout is None or not flavour.statement_timeout
                                    else _ms(statement_timeout))
        super().__init__(watchdog)
        self._cancel_lock = threading.Lock()
        self._canceller: threading.Thread | None = None
        self.sets = 0      # SET statement_timeout sent after the connect (none in steady state)

    def scrub(self, text: str) -> str:
        return scrub(text, self._password)

    @property
    def connected(self) -> bool:
        s = self._session
        return s is not None and not s.conn.closed and not s.conn.broken

    @property
    def backend_pid(self) -> int | None:
        s = self._session
        return s.conn.info.backend_pid if s is not None and not s.conn.closed else None

    # -- connecting ------------------------------------------------------------------------
    def _setup(self) -> tuple[str, ...]:
        settings = self.flavour.settings
        if self._session_timeout_ms is not None:
            settings += (f"statement_timeout = {self._session_timeout_ms}",)
        return settings

    def _connect_in_thread(self, pending: Future) -> None:
        started = time.monotonic()
        made: list[_Session] = []

        def setup(conn, sql: str) -> None:  # bounded like any query: a server may hang right after the connect
            made.append(_Session(conn))
            self._bounded(made[0], sql, self.connect_timeout, started + self.connect_timeout, set_timeout=False)

        try:
            conn = open_session(self._dsn, dbname=self.dbname, connect_timeout=self._connect_timeout,
                                settings=self._setup(), setup=setup)
        except Exception as exc:
            for session in made:
                session.close()
            self._backoff.failed()
            pending.set_exception(exc if isinstance(exc, ConnectError) else ConnectError(self.scrub(str(exc))))
            return
        session = made[0] if made else _Session(conn)
        session.timeout_ms = self._session_timeout_ms
        self._backoff.succeeded()
        pending.set_result(session)

    # -- querying --------------------------------------------------------------------------
    def _bounded(self, session: _Session, sql: str, timeout: float, deadline: float, set_timeout: bool = True):
        """Run ``sql`` on ``session`` under an alarm at ``deadline``, or at its ``timeout`` when
        that is earlier: cancel, then shut down. When the server bounds the query at that same
        timeout, the alarm waits :data:`HUNG_AFTER` more (the server's own cancel comes first)."""
        ms = _ms(timeout)
        sql = self._with_timeout(session, sql, ms) if set_timeout else sql
        server_bounds = not set_timeout or session.timeout_ms == ms
        over = time.monotonic() + timeout + (HUNG_AFTER if server_bounds else 0.0)
        run = _Run(session)
        alarm = self._watchdog.arm(min(deadline, over), lambda: self._on_deadline(run))
        try:
            results = self._run_plain(session.conn, sql)
        except psycopg.Error as exc:
            if set_timeout and session.timeout_ms is not None and sql.startswith(_SET_PREFIX):
                session.timeout_ms = None  # the SET may or may not have gone through
            if not (run.cancelled or run.severed):
                raise
            self.overruns += 1
            # the cancel reached this query (it failed with QueryCanceled): the session is fine
            run.consumed = isinstance(exc, psycopg.errors.QueryCanceled) and not run.severed
            how = "its socket was shut down" if run.severed else "it was cancelled"
            what = (f"ran past its timeout of {timeout:g}s" if over < deadline
                    else "did not finish before the deadline")
            raise DeadlineExceeded(f"query on {self.description} {what}; {how}") from None
        finally:
            alarm.cancel()
            with run.lock:
                run.done = True
            if run.cancelled and not run.consumed and session is self._session:
                # broken off, or it ended on its own just as the cancel went out (which may then
                # reach a later statement): this session is not used again
                self.close_locked()
        return results

    def _cancel_run(self, run: _Run) -> None:
        self._send_cancel(run.session.conn)

    def _send_cancel(self, conn: psycopg.Connection) -> None:
        """A cancel request from a short-lived thread with its own timeout (one at a time: a
        cancel that never returns holds one thread, for CANCEL_TIMEOUT at most)."""
        with self._cancel_lock:
            if self._canceller is not None and self._canceller.is_alive():
                return
            self._canceller = threading.Thread(target=self._cancel, args=(conn,), daemon=True,
                                               name=f"dbperf-cancel-{self.dbname or 'main'}")
            self._canceller.start()

    @staticmethod
    def _cancel(conn: psycopg.Connection) -> None:
        try:
            conn.cancel_safe(timeout=CANCEL_TIMEOUT)
        except Exception:
            pass

    def _with_timeout(self, session: _Session, sql: str, ms: int) -> str:
        """``sql``, prefixed with a ``SET statement_timeout`` when the session's does not bound it:
        never for a flavour without one; with a session timeout set at connect, only for a query
        whose timeout is longer (the session then keeps the longer one); else whenever it changes."""
        if not self.flavour.statement_timeout:
            return sql
        current = session.timeout_ms
        if self._session_timeout_ms is not None:
            if current is not None and ms <= current:
                return sql
            ms = max(ms, current or 0, self._session_timeout_ms)
        elif current == ms:
            return sql
        self.sets += 1
        session.timeout_ms = ms
        return f"{mark(f'{_SET_PREFIX}{ms}')};\n{sql}"

    def _run_plain(self, conn: psycopg.Connection, sql: str):
        results = []
        with conn.cursor() as cur:
            self.queries += sql.count(";") + 1
            cur.execute(sql)
            while True:
                if cur.description is not None:
                    results.append(([c.name for c in cur.description], cur.fetchall()))
                if not cur.nextset():
                    break
        return results

    def _lost(self, exc: Exception, session: _Session) -> bool | None:
        if not isinstance(exc, psycopg.OperationalError):
            return None
        return session.conn.broken or session.conn.closed
