"""SQLAlchemy hooks: statement timing (``before/after_cursor_execute``, ``handle_error``) and the
pool (checkout wait around ``pool.connect``, use time from checkout to checkin, scrape-time gauges).
Works for sync engines and ``AsyncEngine`` (its ``sync_engine`` is instrumented)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: core imports this module lazily, no import back at run time
    from .core import Instrumentation

_START = "dbperf_statement_start"  # Connection.info is the pooled connection record's info
_CHECKOUT = "dbperf_checkout_start"


class StatementHooks:
    """The engine event listeners. The start time goes on the statement's execution context (one
    per execution, so nested executions need nothing more); executions without a context use a
    stack in ``conn.info``, the recipe of SQLAlchemy's own slow-query FAQ."""

    __slots__ = ("inst", "namespace", "pool", "rows")

    def __init__(self, inst: Instrumentation, namespace: str, pool: str):
        self.inst = inst
        self.namespace = namespace
        self.pool = pool
        self.rows = inst.db_rows is not None

    def before(self, conn, cursor, statement, parameters, context, executemany):
        if context is not None:
            context._dbperf_start = time.perf_counter()
            return
        info = conn.info
        stack = info.get(_START)
        if stack is None:
            stack = info[_START] = []
        stack.append(time.perf_counter())

    def _start(self, conn, context):
        if context is not None:  # set by before() for this very execution (or batch of it)
            return getattr(context, "_dbperf_start", None)
        stack = conn.info.get(_START) if conn is not None else None
        return stack.pop() if stack else None

    def after(self, conn, cursor, statement, parameters, context, executemany):
        end = time.perf_counter()
        start = self._start(conn, context)
        if start is None:
            return
        self.inst.record_statement(statement, end - start, self.namespace, self.pool, None,
                                   cursor.rowcount if self.rows else None)

    def on_error(self, context):
        self._failed(context, context.statement)

    def _failed(self, context, statement) -> None:
        end = time.perf_counter()
        start = self._start(context.connection, context.execution_context)
        if start is None or statement is None:
            return
        self.inst.record_statement(statement, end - start, self.namespace, self.pool, context.original_exception)


class TaggingHooks(StatementHooks):
    """StatementHooks that also send each statement with the request's SQL comment
    (``sql_comments=True``): ``before`` is a ``retval=True`` listener returning the tagged text;
    the metrics keep the text as SQLAlchemy compiled it. Server-side cursors (``stream_results``)
    and executions without an execution context are sent unchanged."""

    __slots__ = ()

    def before(self, conn, cursor, statement, parameters, context, executemany):
        super().before(conn, cursor, statement, parameters, context, executemany)
        if context is None or getattr(context, "_is_server_side", False):
            return statement, parameters
        # format/pyformat drivers read % as a placeholder whenever parameters are passed, which
        # SQLAlchemy does unless the execution has none and asked for no_parameters
        percent = conn.dialect.paramstyle in ("format", "pyformat") and bool(parameters or not context.no_parameters)
        sent = self.inst.tagged(statement, percent)
        if sent is not statement:
            context._dbperf_sql = statement
        return sent, parameters

    def after(self, conn, cursor, statement, parameters, context, executemany):
        if context is not None:
            statement = getattr(context, "_dbperf_sql", statement)
        super().after(conn, cursor, statement, parameters, context, executemany)

    def on_error(self, context):
        self._failed(context, getattr(context.execution_context, "_dbperf_sql", None) or context.statement)


def instrument_engine(inst: Instrumentation, engine, pool: str | None = None, max_overflow: int | None = None,
                      hooks: str = "auto"):
    """Instrument ``engine`` (sync or async). ``pool`` names it in the ``pool`` label (default: the
    URL's host/port/database); ``max_overflow`` is read from the pool when not given.

    ``hooks="events"`` times statements with SQLAlchemy's cursor events, for any PostgreSQL
    driver. ``hooks="driver"`` (psycopg 3 engines only) gives each new DB-API connection the timed
    psycopg cursor instead: the same metrics without SQLAlchemy's per-statement event dispatch,
    which costs about as much as the timing itself. ``hooks="auto"`` (default) takes ``driver`` for
    psycopg 3 engines and ``events`` for the others. With ``sql_comments`` on, either way tags the
    statements sent during a request. Returns the engine."""
    from sqlalchemy import event

    sync_engine = getattr(engine, "sync_engine", engine)
    url = sync_engine.url
    name = pool or f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    namespace = url.database or ""
    if sync_engine.dialect.name != "postgresql":
        raise ValueError(f"exporter.instrument supports PostgreSQL engines only, got {sync_engine.dialect.name!r}")

    if hooks == "auto":
        hooks = "driver" if sync_engine.dialect.driver == "psycopg" else "events"
    if hooks == "events":
        tagging = inst.sql_comments is not None
        listeners = (TaggingHooks if tagging else StatementHooks)(inst, namespace, name)
        inst.sqlalchemy_hooks[name] = listeners
        event.listen(sync_engine, "before_cursor_execute", listeners.before, retval=tagging)
        event.listen(sync_engine, "after_cursor_execute", listeners.after)
        event.listen(sync_engine, "handle_error", listeners.on_error)
    elif hooks == "driver":
        if sync_engine.dialect.driver != "psycopg":
            raise ValueError(f"hooks='driver' needs the psycopg (3) driver, this engine uses "
                             f"{sync_engine.dialect.driver!r}; use hooks='events'")
        from .psycopg import instrument_connection

        def on_connect(dbapi_conn, record):
            instrument_connection(inst, getattr(dbapi_conn, "driver_connection", dbapi_conn), pool=name)

        event.listen(sync_engine.pool, "connect", on_connect)
    else:
        raise ValueError(f"hooks must be 'events' or 'driver', got {hooks!r}")
    instrument_pool(inst, sync_engine.pool, name, max_overflow)
    return engine


def instrument_pool(inst: Instrumentation, pool, name: str, max_overflow: int | None = None):
    """Checkout wait time, timeouts, pending checkouts and use time for a SQLAlchemy pool; its
    gauges are read at scrape time."""
    from sqlalchemy import event
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    wait = inst.pool_wait.labels(name)
    use = inst.pool_use.labels(name)
    timeouts = inst.pool_timeouts.labels(name)
    tracker = inst.pools.add_sqlalchemy(name, pool, max_overflow)
    original = pool.connect
    perf = time.perf_counter

    def connect():
        start = perf()
        tracker.waiting += 1
        try:
            conn = original()
        except PoolTimeout:
            timeouts.inc()
            raise
        finally:
            tracker.waiting -= 1
            wait.observe(perf() - start)
        return conn

    pool.connect = connect  # instance attribute: the engine calls pool.connect()

    def on_checkout(dbapi_conn, record, proxy):
        record.info[_CHECKOUT] = perf()

    def on_checkin(dbapi_conn, record):
        start = record.info.pop(_CHECKOUT, None) if record is not None else None
        if start is not None:
            use.observe(perf() - start)

    event.listen(pool, "checkout", on_checkout)
    event.listen(pool, "checkin", on_checkin)
    return pool
