"""Connection pool metrics. Gauges are read at scrape time by a custom collector (SQLAlchemy
QueuePool counters, psycopg_pool ``get_stats()`` — never ``pop_stats()``, which would reset the
pool's counters for everyone else); wait time, use time and timeouts are recorded as they happen.

Gauges (label ``pool``): ``db_client_connections_usage{state="idle|used"}`` (OpenTelemetry's earlier
name; the current ``db_client_connection_count`` fails promtool's suffix lint),
``db_client_connection_max``, ``db_client_connection_idle_max`` (SQLAlchemy pool_size),
``db_client_connection_idle_min`` (psycopg_pool min_size), ``db_client_connection_overflow``
(SQLAlchemy, clamped at 0), ``db_client_connection_pending_requests``."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:  # annotations only: core imports this module lazily, no import back at run time
    from .core import Instrumentation


class _SQLAlchemyPool:
    __slots__ = ("pool", "max_overflow", "waiting")

    def __init__(self, pool, max_overflow):
        self.pool = pool
        self.max_overflow = max_overflow
        self.waiting = 0


class PoolCollector:
    """Reads every registered pool at collect time."""

    def __init__(self):
        self._sqlalchemy: dict[str, _SQLAlchemyPool] = {}
        self._psycopg: dict[str, object] = {}
        self._lock = threading.Lock()

    def _check_name(self, name: str) -> None:
        if name in self._sqlalchemy or name in self._psycopg:
            raise ValueError(f"a pool named {name!r} is instrumented already; give each pool its own name")

    def add_sqlalchemy(self, name: str, pool, max_overflow: int | None = None) -> _SQLAlchemyPool:
        with self._lock:
            self._check_name(name)
            if max_overflow is None:
                max_overflow = getattr(pool, "_max_overflow", 0)
            tracker = self._sqlalchemy[name] = _SQLAlchemyPool(pool, max_overflow)
        return tracker

    def add_psycopg(self, name: str, pool) -> None:
        with self._lock:
            self._check_name(name)
            self._psycopg[name] = pool

    def describe(self):
        return []

    def collect(self):
        count = GaugeMetricFamily("db_client_connections_usage",
                                  "Connections in the pool by state (idle, used). Not db_client_connection_count: "
                                  "promtool rejects a _count suffix on a gauge.",
                                  labels=["pool", "state"])
        maximum = GaugeMetricFamily("db_client_connection_max", "Most connections the pool may open.",
                                    labels=["pool"])
        idle_max = GaugeMetricFamily("db_client_connection_idle_max",
                                     "Most idle connections the pool keeps (SQLAlchemy pool_size).", labels=["pool"])
        idle_min = GaugeMetricFamily("db_client_connection_idle_min",
                                     "Fewest connections the pool keeps open (psycopg_pool min_size).",
                                     labels=["pool"])
        overflow = GaugeMetricFamily("db_client_connection_overflow",
                                     "Connections open beyond pool_size (SQLAlchemy).", labels=["pool"])
        pending = GaugeMetricFamily("db_client_connection_pending_requests",
                                    "Checkouts waiting for a connection now.", labels=["pool"])
        with self._lock:
            sqla = list(self._sqlalchemy.items())
            pg = list(self._psycopg.items())
        for name, tracker in sqla:
            pool = tracker.pool
            size = getattr(pool, "size", None)
            if size is None or not hasattr(pool, "checkedin"):  # NullPool, StaticPool...
                pending.add_metric([name], tracker.waiting)
                continue
            size = pool.size()
            idle = pool.checkedin()
            used = pool.checkedout()
            count.add_metric([name, "idle"], idle)
            count.add_metric([name, "used"], used)
            mo = tracker.max_overflow
            if mo is not None and mo >= 0:
                maximum.add_metric([name], size + mo)
            idle_max.add_metric([name], size)
            overflow.add_metric([name], max(0, pool.overflow()))
            pending.add_metric([name], tracker.waiting)
        for name, pool in pg:
            stats = pool.get_stats()
            size = stats.get("pool_size", 0)
            available = stats.get("pool_available", 0)
            count.add_metric([name, "idle"], available)
            count.add_metric([name, "used"], max(0, size - available))
            maximum.add_metric([name], stats.get("pool_max", 0))
            idle_min.add_metric([name], stats.get("pool_min", 0))
            pending.add_metric([name], stats.get("requests_waiting", 0))
        return [f for f in (count, maximum, idle_max, idle_min, overflow, pending) if f.samples]


def instrument_psycopg_pool(inst: Instrumentation, pg_pool, name: str | None = None):
    """Instrument a psycopg_pool ``ConnectionPool`` or ``AsyncConnectionPool``: scrape-time gauges
    from ``get_stats()``, checkout wait time and timeouts around ``getconn``, use time until
    ``putconn``, and statement timing on every connection it hands out. Returns the pool."""
    import psycopg_pool

    from .psycopg import cursor_factories

    name = name or pg_pool.name
    inst.pools.add_psycopg(name, pg_pool)
    wait = inst.pool_wait.labels(name)
    use = inst.pool_use.labels(name)
    timeouts = inst.pool_timeouts.labels(name)
    sync_cls, async_cls = cursor_factories(inst, name)
    perf = time.perf_counter
    checked_out: dict[int, float] = {}
    getconn, putconn = pg_pool.getconn, pg_pool.putconn

    if isinstance(pg_pool, psycopg_pool.AsyncConnectionPool):
        async def timed_getconn(timeout=None):
            start = perf()
            try:
                conn = await getconn(timeout)
            except psycopg_pool.PoolTimeout:
                timeouts.inc()
                raise
            finally:
                wait.observe(perf() - start)
            conn.cursor_factory = async_cls
            checked_out[id(conn)] = perf()
            return conn

        async def timed_putconn(conn):
            start = checked_out.pop(id(conn), None)
            if start is not None:
                use.observe(perf() - start)
            await putconn(conn)
    else:  # the same two, synchronous (mypy: a conditional variant with another return type)
        def timed_getconn(timeout=None):  # type: ignore[misc]
            start = perf()
            try:
                conn = getconn(timeout)
            except psycopg_pool.PoolTimeout:
                timeouts.inc()
                raise
            finally:
                wait.observe(perf() - start)
            conn.cursor_factory = sync_cls
            checked_out[id(conn)] = perf()
            return conn

        def timed_putconn(conn):  # type: ignore[misc]
            start = checked_out.pop(id(conn), None)
            if start is not None:
                use.observe(perf() - start)
            putconn(conn)

    pg_pool.getconn = timed_getconn  # instance attributes: pool.connection() calls these
    pg_pool.putconn = timed_putconn
    return pg_pool
