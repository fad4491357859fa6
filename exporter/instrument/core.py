"""The instrumentation object: metric definitions on an injectable registry, the per-request
context (a contextvar the HTTP middleware sets and the SQL hooks read), N+1 detection, the slow
log and the Server-Timing value.

Depends on prometheus_client only; never on the dbperf daemon."""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import deque
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

from . import httpstore
from .fingerprint import Fingerprints
from .httpstore import HELP, UNMATCHED, ClientRoute, InProgress, Observe, OwnRoute, OwnStore, StatementStore
from .sqlcomment import SqlComments

if TYPE_CHECKING:
    from .exposition import Exposition
    from .pool import PoolCollector

log = logging.getLogger("exporter.instrument")

DEFAULT_EXCLUDED = ("/metrics", "/health", "/healthz", "/readyz", "/livez", "/ping")
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DB_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)  # OpenTelemetry's advice
QUERY_COUNT_BUCKETS = (0, 1, 2, 3, 5, 10, 20, 50, 100, 200, 500)
ROW_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
POOL_WAIT_BUCKETS = (0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
POOL_USE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0)
DB_SYSTEM = "postgresql"
# Clients choose the method: anything but the standard ones shares "_OTHER" (as in OpenTelemetry),
# so a scanner sending made-up methods cannot create series.
HTTP_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"))


def _with_threshold(buckets: tuple, threshold: float) -> tuple:
    return tuple(sorted(set(buckets) | {float(threshold)}))


class Resolver(Protocol):
    """What names the route of a request not routed yet (the HTTP middlewares)."""

    def handler_of(self, state: RequestState) -> str: ...


@dataclass(slots=True, eq=False)  # identity: states are kept in a set while served
class RequestState:
    """What one HTTP request did so far; lives in a contextvar for the request's duration.

    ``resolver`` (an object with ``handler_of(state)``, the middleware) is set while the route
    template is not known yet; ``source`` is the ASGI scope or WSGI environ it reads."""
    method: str
    start: float
    handler: str = UNMATCHED
    queries: int = 0
    db_seconds: float = 0.0
    by_fingerprint: dict | None = None  # fingerprint -> executions, made at the first statement
    exception: BaseException | None = None  # set by framework hooks that swallow exceptions
    resolver: Resolver | None = None
    source: object = None
    gauge: Callable[[float], None] | None = None  # multi-process mode: inc of the in-progress child
    framework: str | None = None  # the middleware's, for the SQL comment's framework tag

    def handler_now(self) -> str:
        """The handler as far as known now (the route template once routing is done)."""
        resolver = self.resolver
        return resolver.handler_of(self) if resolver is not None else self.handler


_perf = time.perf_counter
_current: ContextVar[RequestState | None] = ContextVar("dbperf_instrument_request", default=None)


def current_request() -> RequestState | None:
    """The request being served in this context (None outside a request)."""
    return _current.get()


class SlowLog:
    """The last ``size`` slow requests, slow statements and log records at WARNING and above (when
    the log handler is installed), newest last (thread-safe)."""

    def __init__(self, size: int = 100):
        self.requests: deque = deque(maxlen=size)
        self.statements: deque = deque(maxlen=size)
        self.log_records: deque = deque(maxlen=size)
        self._lock = threading.Lock()

    def add_request(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def add_statement(self, entry: dict) -> None:
        with self._lock:
            self.statements.append(entry)

    def add_log_record(self, entry: dict) -> None:
        with self._lock:
            self.log_records.append(entry)

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": list(self.requests), "statements": list(self.statements),
                    "log_records": list(self.log_records)}


class Instrumentation:
    """All application-side metrics of one process, registered on ``registry`` (a fresh
    ``CollectorRegistry`` when omitted; pass ``prometheus_client.REGISTRY`` to use the global one).

    Options (all keyword): ``slow_request_seconds`` (0.5), ``slow_statement_seconds`` (0.1),
    ``n_plus_one_threshold`` (5 executions of one fingerprint in one request), ``max_fingerprints``
    (500 per process, the rest are ``"other"``), ``excluded_paths`` (exact raw paths not measured),
    ``server_timing`` (add a Server-Timing header), ``slowlog_size`` (100 of each kind),
    ``returned_rows`` (also observe rows returned per statement), ``sql_comments`` (tag each
    statement sent during a request with its route template, in the sqlcommenter format; see
    :mod:`.sqlcomment`), ``application`` (a name added to those tags)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, slow_request_seconds: float = 0.5,
                 slow_statement_seconds: float = 0.1, n_plus_one_threshold: int = 5,
                 max_fingerprints: int = 500, excluded_paths=DEFAULT_EXCLUDED, server_timing: bool = False,
                 slowlog_size: int = 100, returned_rows: bool = False,
                 http_buckets: tuple = HTTP_BUCKETS, db_buckets: tuple = DB_BUCKETS,
                 sql_comments: bool = False, application: str | None = None):
        if slow_request_seconds <= 0 or slow_statement_seconds <= 0:
            raise ValueError("slow_request_seconds and slow_statement_seconds must be positive")
        if n_plus_one_threshold < 2:
            raise ValueError(f"n_plus_one_threshold must be at least 2, got {n_plus_one_threshold}")
        if isinstance(excluded_paths, str):
            raise ValueError("excluded_paths must be a list of paths, not a string")
        if not isinstance(sql_comments, bool):
            raise TypeError(f"sql_comments must be True or False, got {type(sql_comments).__name__}")
        # None when off: the SQL hooks test that one attribute and change nothing
        self.sql_comments: SqlComments | None = SqlComments(application) if sql_comments else None
        if application is not None and not sql_comments:
            raise ValueError("application= names the SQL comments: it needs sql_comments=True")
        self.registry = registry if registry is not None else CollectorRegistry()
        self.slow_request_seconds = float(slow_request_seconds)
        self.slow_statement_seconds = float(slow_statement_seconds)
        self.n_plus_one_threshold = int(n_plus_one_threshold)
        self.excluded_paths = frozenset(excluded_paths)
        self.server_timing = server_timing
        self.returned_rows = returned_rows
        self.fingerprints = Fingerprints(max_fingerprints)
        self.slowlog = SlowLog(slowlog_size)
        reg = self.registry
        http_b = _with_threshold(http_buckets, self.slow_request_seconds)
        db_b = _with_threshold(db_buckets, self.slow_statement_seconds)

        # Single process: the HTTP families live in OwnStore (plain numbers, one lock per request)
        # and "in progress" is counted when scraped. Multi-process mode needs prometheus_client's
        # shared files: its metric objects, updated per request (ClientRoute).
        self.multiprocess = values.ValueClass is not values.MutexValue
        if self.multiprocess:
            self._http = None
            self.http_requests = Counter("http_requests_total", HELP["http_requests_total"],
                                         ["handler", "method", "status"], registry=reg)
            self.http_duration = Histogram("http_request_duration_seconds", HELP["http_request_duration_seconds"],
                                           ["handler", "method"], buckets=http_b, registry=reg)
            self.http_in_progress: Gauge | InProgress = Gauge(
                "http_requests_in_progress", HELP["http_requests_in_progress"], ["handler", "method"], registry=reg,
                multiprocess_mode="livesum")
            self._routes: dict = {}
            self._active = None
        else:
            self._http = OwnStore(http_b, db_b, QUERY_COUNT_BUCKETS, self.slow_request_seconds)
            reg.register(self._http)
            self._routes = self._http.routes
            in_progress = self.http_in_progress = InProgress(self._routes)
            reg.register(in_progress)
            self._active = in_progress.active
        self.http_exceptions = Counter(
            "http_request_exceptions_total", "Unhandled exceptions raised while serving HTTP requests, by type.",
            ["handler", "exception"], registry=reg)
        if self.multiprocess:
            self.http_slow = Counter("http_slow_requests_total", httpstore.slow_help(self.slow_request_seconds),
                                     ["handler"], registry=reg)
        if self.multiprocess:
            self._db_store = None
            self.db_duration = Histogram(
                "db_client_operation_duration_seconds", HELP["db_client_operation_duration_seconds"],
                httpstore.DB_LABELS, buckets=db_b, registry=reg)
        else:
            self._db_store = StatementStore(db_b)
            reg.register(self._db_store)
        self.db_errors = Counter(
            "db_client_operation_errors_total", "Database client operations that failed, by error type.",
            ["db_system", "db_namespace", "db_operation", "pool", "fingerprint", "error_type"], registry=reg)
        self.db_slow = Counter(
            "db_client_slow_operations_total",
            f"Statements slower than the slow statement threshold ({self.slow_statement_seconds} s).",
            ["db_namespace", "pool", "fingerprint"], registry=reg)
        self.db_rows = Histogram(
            "db_client_response_returned_rows", "Rows returned by database client operations.",
            ["db_system", "db_namespace", "db_operation", "pool"], buckets=ROW_BUCKETS,
            registry=reg) if returned_rows else None
        self.n_plus_one = Counter(
            "db_client_n_plus_one_total",
            f"Requests that ran one statement fingerprint at least {self.n_plus_one_threshold} times.",
            ["handler", "fingerprint"], registry=reg)
        if self.multiprocess:
            self.queries_per_request = Histogram(
                "db_client_queries_per_request", HELP["db_client_queries_per_request"],
                ["handler"], buckets=QUERY_COUNT_BUCKETS, registry=reg)
            self.db_time_per_request = Histogram(
                "db_client_request_operation_duration_seconds", HELP["db_client_request_operation_duration_seconds"],
                ["handler"], buckets=db_b, registry=reg)
        self.pool_wait = Histogram(
            "db_client_connection_wait_time_seconds", "Time spent waiting to check a connection out of a pool.",
            ["pool"], buckets=POOL_WAIT_BUCKETS, registry=reg)
        self.pool_use = Histogram(
            "db_client_connection_use_time_seconds", "Time a connection stayed checked out of a pool.",
            ["pool"], buckets=POOL_USE_BUCKETS, registry=reg)
        self.pool_timeouts = Counter(
            "db_client_connection_timeouts_total", "Pool checkouts that timed out.", ["pool"], registry=reg)

        self._statements: dict = {}  # (sql, namespace, pool) -> (op, fp, text, histogram)
        self._pool_collector: PoolCollector | None = None
        self._open_exposition: Exposition | None = None  # /metrics of metrics_response()
        self.sqlalchemy_hooks: dict = {}  # pool name -> StatementHooks (for tests and benchmarks)

    # -- requests --------------------------------------------------------------------------------

    def start_request(self, method: str, handler: str = UNMATCHED, resolver=None,
                      source=None, framework: str | None = None) -> tuple[RequestState, Token[RequestState | None]]:
        """Open a request: ``handler`` if known, else ``resolver.handler_of(state)`` tells it
        (``source``: what the resolver reads; ``framework``: for the SQL comments). Returns
        (state, context token)."""
        if method not in HTTP_METHODS:
            method = "_OTHER"
        state = RequestState(method, _perf(), handler, 0, 0.0, None, None, resolver, source, None, framework)
        active = self._active
        if active is not None:
            active.add(state)
        else:
            # multi-process mode (no _active): http_in_progress is the Gauge
            inc = httpstore.inc_of(self.http_in_progress.labels(state.handler_now(), method))  # type: ignore[union-attr]
            inc(1)
            state.gauge = inc
        return state, _current.set(state)

    def _route(self, handler: str, method: str):
        route = self._routes.get((handler, method))
        if route is None:
            route = self._routes[(handler, method)] = (
                ClientRoute(self, handler, method) if self._http is None else OwnRoute(self._http, handler, method))
        return route

    def finish_request(self, state: RequestState, status: int, exception: BaseException | None = None) -> float:
        """Record one finished request (``state.handler`` final); returns its duration in seconds.
        The caller resets the context with ``end_context(token)`` in the context that started it."""
        duration = _perf() - state.start
        handler = state.handler
        if self._active is not None:
            self._active.discard(state)
        elif state.gauge is not None:
            state.gauge(-1)
            state.gauge = None
        route = self._routes.get((handler, state.method)) or self._route(handler, state.method)
        queries = state.queries
        route.record(status, duration, queries, state.db_seconds)
        if queries:
            self._check_n_plus_one(state)
        exception = exception if exception is not None else state.exception
        if exception is not None:
            self.http_exceptions.labels(handler, type(exception).__name__).inc()
        if duration >= self.slow_request_seconds:
            route.count_slow()
            self.slowlog.add_request({
                "time": time.time(), "handler": handler, "method": state.method, "status": status,
                "duration_seconds": round(duration, 6), "queries": state.queries,
                "db_seconds": round(state.db_seconds, 6)})
        return duration

    @staticmethod
    def end_context(token: Token[RequestState | None]) -> None:
        _current.reset(token)

    def _check_n_plus_one(self, state: RequestState) -> None:
        threshold = self.n_plus_one_threshold
        for fp, count in (state.by_fingerprint or {}).items():
            if count >= threshold:
                self.n_plus_one.labels(state.handler, fp).inc()
                log.warning("N+1 queries: %s ran %d times in one request to %s %s: %s", fp, count,
                            state.method, state.handler, self.fingerprints.text(fp) or fp)

    def server_timing_value(self, state: RequestState) -> str:
        app_ms = (time.perf_counter() - state.start) * 1000
        return (f'app;dur={app_ms:.1f}, db;dur={state.db_seconds * 1000:.1f};'
                f'desc="{state.queries} quer{"y" if state.queries == 1 else "ies"}"')

    def excluded(self, path: str) -> bool:
        return path in self.excluded_paths

    # -- statements ------------------------------------------------------------------------------

    def tagged(self, sql: str, percent: bool = False) -> str:
        """``sql`` with the SQL comment of the request in progress (see :mod:`.sqlcomment`), or
        unchanged: outside a request, with ``sql_comments`` off, or for a statement left alone.
        ``percent``: double the comment's ``%`` (the driver formats the text with parameters)."""
        comments = self.sql_comments
        state = _current.get()
        if comments is None or state is None:
            return sql
        return comments.tag(sql, state.handler_now(), state.framework, percent)

    def statement(self, sql) -> tuple[str, str, str]:
        """(operation, fingerprint, normalised text) of a statement (str, bytes or other)."""
        if not isinstance(sql, str):
            sql = sql.decode(errors="replace") if isinstance(sql, (bytes, bytearray)) else str(sql)
        return self.fingerprints.lookup(sql)

    def _statement_entry(self, key: tuple) -> tuple:
        sql, namespace, pool = key
        op, fp, text = self.statement(sql)
        labels = (DB_SYSTEM, namespace, op, pool, fp)
        store = self._db_store
        entry = (op, fp, text, store.histogram(labels) if store is not None else Observe(self.db_duration.labels(*labels)))
        if type(sql) is str:  # texts only: bytes and composed statements are not cached here
            if len(self._statements) >= self.fingerprints.cache_size:
                self._statements.clear()
            self._statements[key] = entry
        return entry

    def record_statement(self, sql, duration: float, namespace: str, pool: str,
                         error: BaseException | None = None, rows: int | None = None) -> None:
        """Record one executed statement (called by the SQLAlchemy and psycopg hooks)."""
        key = (sql, namespace, pool)
        entry = self._statements.get(key) if type(sql) is str else None
        if entry is None:
            entry = self._statement_entry(key)
        op, fp, text, histogram = entry
        store = self._db_store
        if store is not None:  # single process: one lock, plain numbers
            slot = bisect_left(store.bounds, duration)
            with store.lock:
                histogram.counts[slot] += 1
                histogram.sum += duration
        else:
            histogram(duration)
        if error is not None:
            self.db_errors.labels(DB_SYSTEM, namespace, op, pool, fp, type(error).__name__).inc()
        elif rows is not None and self.db_rows is not None and rows >= 0 and op == "SELECT":
            self.db_rows.labels(DB_SYSTEM, namespace, op, pool).observe(rows)
        state = _current.get()
        if state is not None:
            state.queries += 1
            state.db_seconds += duration
            counts = state.by_fingerprint
            if counts is None:
                counts = state.by_fingerprint = {}
            counts[fp] = counts.get(fp, 0) + 1
        if duration >= self.slow_statement_seconds:
            self.db_slow.labels(namespace, pool, fp).inc()
            self.slowlog.add_statement({
                "time": time.time(), "handler": state.handler_now() if state else None, "db_namespace": namespace,
                "pool": pool, "operation": op, "fingerprint": fp, "statement": text,
                "duration_seconds": round(duration, 6),
                "error_type": type(error).__name__ if error is not None else None})

    # -- pools -----------------------------------------------------------------------------------

    @property
    def pools(self):
        """The scrape-time pool collector (registered on first use)."""
        if self._pool_collector is None:
            from .pool import PoolCollector
            self._pool_collector = PoolCollector()
            self.registry.register(self._pool_collector)
        return self._pool_collector

    # -- convenience -----------------------------------------------------------------------------

    def instrument_sqlalchemy(self, engine, pool: str | None = None, max_overflow: int | None = None,
                              hooks: str = "auto"):
        from .sqlalchemy import instrument_engine
        return instrument_engine(self, engine, pool=pool, max_overflow=max_overflow, hooks=hooks)

    def instrument_psycopg(self, conn, pool: str = "default"):
        from .psycopg import instrument_connection
        return instrument_connection(self, conn, pool=pool)

    def instrument_psycopg_pool(self, pg_pool, name: str | None = None):
        from .pool import instrument_psycopg_pool
        return instrument_psycopg_pool(self, pg_pool, name=name)

    def metrics_asgi_app(self, **options):
        """The ASGI /metrics app; ``bearer_token=``, ``basic_auth=(user, password)`` or
        ``{user: password}``, ``gzip_level=`` (0 = never compress), see :mod:`.exposition`."""
        from .exposition import metrics_asgi_app
        return metrics_asgi_app(self, **options)

    def metrics_wsgi_app(self, **options):
        """The WSGI /metrics app; the options of ``metrics_asgi_app``."""
        from .exposition import metrics_wsgi_app
        return metrics_wsgi_app(self, **options)

    def metrics_response(self, headers, query: str = "", method: str = "GET"):
        """/metrics behind the application's own authentication: (status, headers, body), see
        :func:`.exposition.metrics_response`."""
        from .exposition import metrics_response
        return metrics_response(self, headers, query, method)

    def install_log_handler(self, logger=None, *, max_loggers: int = 50, keep_level: int = logging.WARNING,
                            max_message: int = 1000):
        """Count the application's log records (``app_log_messages_total{level,logger}``) and keep
        the last ones at ``keep_level`` and above in the slow log: adds a
        :class:`.applog.LogHandler` to ``logger`` (a name or Logger; the root logger by default)
        once, and returns it."""
        from .applog import install
        return install(self, logger, max_loggers=max_loggers, keep_level=keep_level, max_message=max_message)

    # the request in progress in this context (thread or task), or None outside one; for the
    # modules core imports lazily, which may not import core back
    request_state = staticmethod(current_request)

    def slowlog_asgi_app(self, token: str):
        from .slowlog import slowlog_asgi_app
        return slowlog_asgi_app(self, token)

    def slowlog_wsgi_app(self, token: str):
        from .slowlog import slowlog_wsgi_app
        return slowlog_wsgi_app(self, token)
