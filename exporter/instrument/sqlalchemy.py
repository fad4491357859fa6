"""SQLAlchemy hooks: statement timing (``before/after_cursor_execute``, ``handle_error``) and the
pool (checkout wait around ``pool.connect``, use time from checkout to checkin, scrape-time gauges).
Works for sync engines and ``AsyncEngine`` (its ``sync_engine`` is instrumented)."""

from __future__ import annotations

import time

from .core import Instrumentation

_START = "dbperf_statement_start"  # Connection.info is the pooled connection record's info
_CHECKOUT = "dbperf_checkout_start"


def instrument_engine(inst: Instrumentation, engine, pool: str | None = None, max_overflow: int | None = None):
    """Instrument ``engine`` (sync or async). ``pool`` names it in the ``pool`` label (default: the
    URL's host/port/database); ``max_overflow`` is read from the pool when not given. Returns the
    engine."""
    from sqlalchemy import event

    sync_engine = getattr(engine, "sync_engine", engine)
    url = sync_engine.url
    name = pool or f"{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"
    namespace = url.database or ""
    if sync_engine.dialect.name != "postgresql":
        raise ValueError(f"exporter.instrument supports PostgreSQL engines only, got {sync_engine.dialect.name!r}")

    perf = time.perf_counter
    record = inst.record_statement

    def before(conn, cursor, statement, parameters, context, executemany):
        conn.info.setdefault(_START, []).append(perf())

    def after(conn, cursor, statement, parameters, context, executemany):
        stack = conn.info.get(_START)
        if not stack:
            return
        duration = perf() - stack.pop()
        rows = cursor.rowcount if inst.db_rows is not None else None
        record(statement, duration, namespace, name, rows=rows)

    def on_error(context):
        conn = context.connection
        stack = conn.info.get(_START) if conn is not None else None
        if not stack or context.statement is None:
            return
        duration = perf() - stack.pop()
        record(context.statement, duration, namespace, name, error=context.original_exception)

    event.listen(sync_engine, "before_cursor_execute", before)
    event.listen(sync_engine, "after_cursor_execute", after)
    event.listen(sync_engine, "handle_error", on_error)
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
