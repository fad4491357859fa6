"""The instrumentation object: metric definitions on an injectable registry, the per-request
context (a contextvar the HTTP middleware sets and the SQL hooks read), N+1 detection, the slow
log and the Server-Timing value.

Depends on prometheus_client only; never on the dbperf daemon."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from .fingerprint import Fingerprints

log = logging.getLogger("exporter.instrument")

UNMATCHED = "<unmatched>"
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


@dataclass(slots=True)
class RequestState:
    """What one HTTP request did so far; lives in a contextvar for the request's duration."""
    method: str
    start: float
    handler: str = UNMATCHED
    queries: int = 0
    db_seconds: float = 0.0
    by_fingerprint: dict = field(default_factory=dict)
    exception: BaseException | None = None  # set by framework hooks that swallow exceptions


_current: ContextVar[RequestState | None] = ContextVar("dbperf_instrument_request", default=None)


def current_request() -> RequestState | None:
    """The request being served in this context (None outside a request)."""
    return _current.get()


class SlowLog:
    """The last ``size`` slow requests and slow statements, newest last (thread-safe)."""

    def __init__(self, size: int = 100):
        self.requests: deque = deque(maxlen=size)
        self.statements: deque = deque(maxlen=size)
        self._lock = threading.Lock()

    def add_request(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    def add_statement(self, entry: dict) -> None:
        with self._lock:
            self.statements.append(entry)

    def snapshot(self) -> dict:
        with self._lock:
            return {"requests": list(self.requests), "statements": list(self.statements)}


class _Children:
    """labels() is the costly part of a prometheus_client update; keep the children by key."""

    __slots__ = ("metric", "cache")

    def __init__(self, metric):
        self.metric = metric
        self.cache: dict = {}

    def __call__(self, *key):
        child = self.cache.get(key)
        if child is None:
            child = self.cache[key] = self.metric.labels(*key)
        return child


class Instrumentation:
    """All application-side metrics of one process, registered on ``registry`` (a fresh
    ``CollectorRegistry`` when omitted; pass ``prometheus_client.REGISTRY`` to use the global one).

    Options (all keyword): ``slow_request_seconds`` (0.5), ``slow_statement_seconds`` (0.1),
    ``n_plus_one_threshold`` (5 executions of one fingerprint in one request), ``max_fingerprints``
    (500 per process, the rest are ``"other"``), ``excluded_paths`` (exact raw paths not measured),
    ``server_timing`` (add a Server-Timing header), ``slowlog_size`` (100 of each kind),
    ``returned_rows`` (also observe rows returned per statement)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, slow_request_seconds: float = 0.5,
                 slow_statement_seconds: float = 0.1, n_plus_one_threshold: int = 5,
                 max_fingerprints: int = 500, excluded_paths=DEFAULT_EXCLUDED, server_timing: bool = False,
                 slowlog_size: int = 100, returned_rows: bool = False,
                 http_buckets: tuple = HTTP_BUCKETS, db_buckets: tuple = DB_BUCKETS):
        if slow_request_seconds <= 0 or slow_statement_seconds <= 0:
            raise ValueError("slow_request_seconds and slow_statement_seconds must be positive")
        if n_plus_one_threshold < 2:
            raise ValueError(f"n_plus_one_threshold must be at least 2, got {n_plus_one_threshold}")
        if isinstance(excluded_paths, str):
            raise ValueError("excluded_paths must be a list of paths, not a string")
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

        self.http_requests = Counter(
            "http_requests_total", "HTTP requests served, by route template, method and status code.",
            ["handler", "method", "status"], registry=reg)
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Time from receiving an HTTP request to sending the last byte of its response.",
            ["handler", "method"], buckets=http_b, registry=reg)
        self.http_in_progress = Gauge(
            "http_requests_in_progress", "HTTP requests being served now (handler resolved before dispatch).",
            ["handler", "method"], registry=reg, multiprocess_mode="livesum")
        self.http_exceptions = Counter(
            "http_request_exceptions_total", "Unhandled exceptions raised while serving HTTP requests, by type.",
            ["handler", "exception"], registry=reg)
        self.http_slow = Counter(
            "http_slow_requests_total",
            f"HTTP requests slower than the slow threshold ({self.slow_request_seconds} s).",
            ["handler"], registry=reg)
        self.db_duration = Histogram(
            "db_client_operation_duration_seconds", "Duration of database client operations (statements).",
            ["db_system", "db_namespace", "db_operation", "pool", "fingerprint"], buckets=db_b, registry=reg)
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
        self.queries_per_request = Histogram(
            "db_client_queries_per_request", "Statements executed per HTTP request.",
            ["handler"], buckets=QUERY_COUNT_BUCKETS, registry=reg)
        self.db_time_per_request = Histogram(
            "db_client_request_operation_duration_seconds", "Total statement time per HTTP request.",
            ["handler"], buckets=db_b, registry=reg)
        self.pool_wait = Histogram(
            "db_client_connection_wait_time_seconds", "Time spent waiting to check a connection out of a pool.",
            ["pool"], buckets=POOL_WAIT_BUCKETS, registry=reg)
        self.pool_use = Histogram(
            "db_client_connection_use_time_seconds", "Time a connection stayed checked out of a pool.",
            ["pool"], buckets=POOL_USE_BUCKETS, registry=reg)
        self.pool_timeouts = Counter(
            "db_client_connection_timeouts_total", "Pool checkouts that timed out.", ["pool"], registry=reg)

        self._requests = _Children(self.http_requests)
        self._duration = _Children(self.http_duration)
        self._in_progress = _Children(self.http_in_progress)
        self._slow = _Children(self.http_slow)
        self._db_duration = _Children(self.db_duration)
        self._qpr = _Children(self.queries_per_request)
        self._dbpr = _Children(self.db_time_per_request)
        self._pool_collector = None
        self.sqlalchemy_hooks: dict = {}  # pool name -> StatementHooks (for tests and benchmarks)

    # -- requests --------------------------------------------------------------------------------

    def start_request(self, method: str, handler: str) -> tuple[RequestState, object]:
        if method not in HTTP_METHODS:
            method = "_OTHER"
        state = RequestState(method, time.perf_counter(), handler)
        self._in_progress(handler, method).inc()
        return state, _current.set(state)

    def finish_request(self, state: RequestState, status: int, exception: BaseException | None = None,
                       in_progress_handler: str | None = None) -> float:
        """Record one finished request; returns its duration in seconds. The caller resets the
        context with ``end_context(token)`` in the context that started it."""
        duration = time.perf_counter() - state.start
        handler, method = state.handler, state.method
        self._in_progress(in_progress_handler or handler, method).dec()
        self._requests(handler, method, str(status)).inc()
        self._duration(handler, method).observe(duration)
        exception = exception if exception is not None else state.exception
        if exception is not None:
            self.http_exceptions.labels(handler, type(exception).__name__).inc()
        self._qpr(handler).observe(state.queries)
        if state.queries:
            self._dbpr(handler).observe(state.db_seconds)
            self._check_n_plus_one(state)
        if duration >= self.slow_request_seconds:
            self._slow(handler).inc()
            self.slowlog.add_request({
                "time": time.time(), "handler": handler, "method": method, "status": status,
                "duration_seconds": round(duration, 6), "queries": state.queries,
                "db_seconds": round(state.db_seconds, 6)})
        return duration

    @staticmethod
    def end_context(token) -> None:
        _current.reset(token)

    def _check_n_plus_one(self, state: RequestState) -> None:
        threshold = self.n_plus_one_threshold
        for fp, count in state.by_fingerprint.items():
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

    def statement(self, sql) -> tuple[str, str, str]:
        """(operation, fingerprint, normalised text) of a statement (str, bytes or other)."""
        if not isinstance(sql, str):
            sql = sql.decode(errors="replace") if isinstance(sql, (bytes, bytearray)) else str(sql)
        return self.fingerprints.lookup(sql)

    def record_statement(self, sql, duration: float, namespace: str, pool: str,
                         error: BaseException | None = None, rows: int | None = None) -> None:
        """Record one executed statement (called by the SQLAlchemy and psycopg hooks)."""
        found = self.fingerprints._cache.get(sql) if type(sql) is str else None
        op, fp, text = found if found is not None else self.statement(sql)
        self._db_duration(DB_SYSTEM, namespace, op, pool, fp).observe(duration)
        if error is not None:
            self.db_errors.labels(DB_SYSTEM, namespace, op, pool, fp, type(error).__name__).inc()
        elif rows is not None and rows >= 0 and self.db_rows is not None and op == "SELECT":
            self.db_rows.labels(DB_SYSTEM, namespace, op, pool).observe(rows)
        state = _current.get()
        if state is not None:
            state.queries += 1
            state.db_seconds += duration
            counts = state.by_fingerprint
            counts[fp] = counts.get(fp, 0) + 1
        if duration >= self.slow_statement_seconds:
            self.db_slow.labels(namespace, pool, fp).inc()
            self.slowlog.add_statement({
                "time": time.time(), "handler": state.handler if state else None, "db_namespace": namespace,
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

    def slowlog_asgi_app(self, token: str):
        from .slowlog import slowlog_asgi_app
        return slowlog_asgi_app(self, token)

    def slowlog_wsgi_app(self, token: str):
        from .slowlog import slowlog_wsgi_app
        return slowlog_wsgi_app(self, token)
