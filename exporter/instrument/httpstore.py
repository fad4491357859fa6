"""Where a finished HTTP request is counted: the hot path of the middleware.

Single-process mode (the usual case): :class:`OwnStore`, plain numbers per (handler, method) under
one lock per request, turned into the metric families when scraped: no ``labels()``, no
per-metric lock, nothing resolved per request. ``http_requests_in_progress`` is counted when
scraped from the requests being served (:class:`InProgress`).

Multi-process mode (``PROMETHEUS_MULTIPROC_DIR``): the values must live in prometheus_client's
shared files, so :class:`ClientRoute` updates its metric children, reaching past the checks of
``inc``/``observe`` to their values (:func:`inc_of`, :class:`Observe`).

The output is the same in both: names, help, types, label order, bucket bounds, ``_created``."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from typing import Callable

from prometheus_client import metrics as _client_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

UNMATCHED = "<unmatched>"
INF = float("inf")

HELP = {
    "http_requests_total": "HTTP requests served, by route template, method and status code.",
    "http_request_duration_seconds":
        "Time from receiving an HTTP request to sending the last byte of its response.",
    "http_requests_in_progress": "HTTP requests being served now (handler resolved before dispatch).",
    "db_client_queries_per_request": "Statements executed per HTTP request.",
    "db_client_request_operation_duration_seconds": "Total statement time per HTTP request.",
    "db_client_operation_duration_seconds": "Duration of database client operations (statements).",
}
DB_LABELS = ["db_system", "db_namespace", "db_operation", "pool", "fingerprint"]


def slow_help(threshold: float) -> str:
    return f"HTTP requests slower than the slow threshold ({threshold} s)."


def inc_of(child):
    """The increment of a counter/gauge child: its value's ``inc`` (what ``child.inc`` ends in,
    without the checks around it), or ``child.inc`` if prometheus_client's layout differs."""
    value = getattr(child, "_value", None)
    inc = getattr(value, "inc", None)
    return inc if callable(inc) else child.inc


class Observe:
    """A histogram child's pieces for one observation without ``observe``'s overhead:
    ``o.total(v); o.buckets[bisect_left(o.bounds, v)](1)`` is what ``child.observe(v)`` does
    (non-cumulative bucket counts, first bound >= v). Falls back to ``observe`` (``buckets`` None)
    when prometheus_client's layout differs."""

    __slots__ = ("total", "buckets", "bounds")

    def __init__(self, child):
        bounds = getattr(child, "_upper_bounds", None)
        buckets = getattr(child, "_buckets", None)
        total = getattr(getattr(child, "_sum", None), "inc", None)
        if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
            self.total, self.buckets, self.bounds = child.observe, None, ()
        else:
            self.total, self.buckets, self.bounds = total, [inc_of(b) for b in buckets], list(bounds)

    def __call__(self, value: float) -> None:
        self.total(value)
        buckets = self.buckets
        if buckets is not None:
            buckets[bisect_left(self.bounds, value)](1)


class ClientRoute:
    """Multi-process mode: the prometheus_client children of one (handler, method)."""

    __slots__ = ("inst", "handler", "method", "statuses", "duration", "queries", "db_time", "slow")

    def __init__(self, inst, handler: str, method: str):
        self.inst, self.handler, self.method = inst, handler, method
        self.statuses: dict = {}  # status code -> inc
        self.duration = Observe(inst.http_duration.labels(handler, method))
        self.queries = Observe(inst.queries_per_request.labels(handler))
        self.db_time: Observe | None = None  # made when first needed: no series before that
        self.slow: Callable[[float], None] | None = None

    def record(self, status: int, duration: float, queries: int, db_seconds: float) -> None:
        inc = self.statuses.get(status)
        if inc is None:
            inc = self.statuses[status] = inc_of(self.inst.http_requests.labels(self.handler, self.method, str(status)))
        inc(1)
        self.duration(duration)
        self.queries(queries)
        if queries:
            if self.db_time is None:
                self.db_time = Observe(self.inst.db_time_per_request.labels(self.handler))
            self.db_time(db_seconds)

    def count_slow(self) -> None:
        if self.slow is None:
            self.slow = inc_of(self.inst.http_slow.labels(self.handler))
        self.slow(1)


class _Histogram:
    """Non-cumulative bucket counts, sum, creation time."""

    __slots__ = ("counts", "sum", "created")

    def __init__(self, size: int):
        self.counts = [0] * size
        self.sum = 0.0
        self.created = time.time()

    def copy(self) -> "_Histogram":
        twin = _Histogram.__new__(_Histogram)
        twin.counts, twin.sum, twin.created = list(self.counts), self.sum, self.created
        return twin


class _Handler:
    """What is labelled by handler only (shared by the methods of one handler)."""

    __slots__ = ("queries", "db_time", "slow", "slow_created")

    def __init__(self, store: "OwnStore"):
        self.queries = _Histogram(len(store.query_bounds))
        self.db_time: _Histogram | None = None  # made at the first request with statements
        self.slow = 0
        self.slow_created = None


class OwnRoute:
    """Single-process mode: the numbers of one (handler, method)."""

    __slots__ = ("store", "handler", "method", "statuses", "created", "duration", "per_handler")

    def __init__(self, store: "OwnStore", handler: str, method: str):
        self.store, self.handler, self.method = store, handler, method
        self.statuses: dict = {}  # status code -> count
        self.created: dict = {}  # status code -> creation time
        self.duration = _Histogram(len(store.http_bounds))
        with store.lock:
            per_handler = store.handlers.get(handler)
            if per_handler is None:
                per_handler = store.handlers[handler] = _Handler(store)
        self.per_handler = per_handler

    def record(self, status: int, duration: float, queries: int, db_seconds: float) -> None:
        store = self.store
        slot = bisect_left(store.http_bounds, duration)
        per_handler = self.per_handler
        with store.lock:
            statuses = self.statuses
            count = statuses.get(status)
            if count is None:
                self.created[status] = time.time()
                count = 0
            statuses[status] = count + 1
            histogram = self.duration
            histogram.counts[slot] += 1
            histogram.sum += duration
            if queries:
                histogram = per_handler.queries
                histogram.counts[bisect_left(store.query_bounds, queries)] += 1
                histogram.sum += queries
                db_time = per_handler.db_time
                if db_time is None:
                    db_time = per_handler.db_time = _Histogram(len(store.db_bounds))
                db_time.counts[bisect_left(store.db_bounds, db_seconds)] += 1
                db_time.sum += db_seconds
            else:
                per_handler.queries.counts[store.zero_queries] += 1

    def count_slow(self) -> None:
        per_handler = self.per_handler
        with self.store.lock:
            if per_handler.slow_created is None:
                per_handler.slow_created = time.time()
            per_handler.slow += 1


def _histogram_family(name: str, labelnames: list, bounds: list, rows) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, HELP[name], labels=labelnames)
    les = [floatToGoString(b) for b in bounds]
    created = _client_metrics._use_created
    for labels, histogram in rows:
        acc, buckets = 0.0, []
        for le, count in zip(les, histogram.counts):
            acc += count
            buckets.append((le, acc))
        family.add_metric(labels, buckets, histogram.sum)
        if created:
            family.samples.append(Sample(name + "_created", dict(zip(labelnames, labels)), histogram.created))
    return family


def _bounds(buckets) -> list:
    """Upper bounds as prometheus_client's Histogram keeps them: floats, +Inf last."""
    bounds = [float(b) for b in buckets]
    return bounds if bounds and bounds[-1] == INF else bounds + [INF]


class OwnStore:
    """The collector of the single-process HTTP families (registered on the instrumentation's
    registry). ``routes`` is shared with :class:`InProgress`."""

    def __init__(self, http_buckets: tuple, db_buckets: tuple, query_buckets: tuple, slow_threshold: float):
        self.http_bounds = _bounds(http_buckets)
        self.db_bounds = _bounds(db_buckets)
        self.query_bounds = _bounds(query_buckets)
        self.zero_queries = bisect_left(self.query_bounds, 0)
        self.slow_help = slow_help(slow_threshold)
        self.lock = threading.Lock()
        self.routes: dict = {}  # (handler, method) -> OwnRoute
        self.handlers: dict = {}  # handler -> _Handler

    def describe(self):
        return [CounterMetricFamily("http_requests_total", HELP["http_requests_total"], labels=["handler", "method", "status"]),
                HistogramMetricFamily("http_request_duration_seconds", HELP["http_request_duration_seconds"],
                                      labels=["handler", "method"]),
                CounterMetricFamily("http_slow_requests_total", self.slow_help, labels=["handler"]),
                HistogramMetricFamily("db_client_queries_per_request", HELP["db_client_queries_per_request"],
                                      labels=["handler"]),
                HistogramMetricFamily("db_client_request_operation_duration_seconds",
                                      HELP["db_client_request_operation_duration_seconds"], labels=["handler"])]

    def _copy(self):
        """A consistent copy of every number, taken under the lock."""
        hist = _Histogram.copy
        with self.lock:
            routes = [(r.handler, r.method, dict(r.statuses), dict(r.created), hist(r.duration))
                      for r in list(self.routes.values())]
            handlers = [(name, hist(h.queries), hist(h.db_time) if h.db_time is not None else None, h.slow,
                         h.slow_created) for name, h in list(self.handlers.items())]
        return routes, handlers

    def collect(self):
        routes, handlers = self._copy()
        created = _client_metrics._use_created
        requests = CounterMetricFamily("http_requests_total", HELP["http_requests_total"],
                                       labels=["handler", "method", "status"])
        for handler, method, statuses, made, _ in routes:
            for status, count in statuses.items():
                requests.add_metric([handler, method, str(status)], float(count),
                                    created=made[status] if created else None)
        yield requests
        yield _histogram_family("http_request_duration_seconds", ["handler", "method"], self.http_bounds,
                                [([h, m], hist) for h, m, _, _, hist in routes])
        slow = CounterMetricFamily("http_slow_requests_total", self.slow_help, labels=["handler"])
        for name, _, _, count, made in handlers:
            if made is not None:
                slow.add_metric([name], float(count), created=made if created else None)
        yield slow
        yield _histogram_family("db_client_queries_per_request", ["handler"], self.query_bounds,
                                [([name], q) for name, q, _, _, _ in handlers])
        yield _histogram_family("db_client_request_operation_duration_seconds", ["handler"], self.db_bounds,
                                [([name], d) for name, _, d, _, _ in handlers if d is not None])


class StatementStore:
    """Single-process mode: ``db_client_operation_duration_seconds`` as plain numbers, one
    histogram per label set, updated under one lock per statement (see
    ``Instrumentation.record_statement``)."""

    def __init__(self, db_buckets: tuple):
        self.bounds = _bounds(db_buckets)
        self.lock = threading.Lock()
        self.series: dict = {}  # label values -> _Histogram

    def histogram(self, labels: tuple) -> _Histogram:
        with self.lock:
            found = self.series.get(labels)
            if found is None:
                found = self.series[labels] = _Histogram(len(self.bounds))
        return found

    def describe(self):
        name = "db_client_operation_duration_seconds"
        return [HistogramMetricFamily(name, HELP[name], labels=DB_LABELS)]

    def collect(self):
        with self.lock:
            rows = [(list(labels), h.copy()) for labels, h in list(self.series.items())]
        yield _histogram_family("db_client_operation_duration_seconds", DB_LABELS, self.bounds, rows)


class InProgress:
    """``http_requests_in_progress{handler,method}`` counted when scraped, from the requests being
    served (single-process mode): per request, one set entry and nothing to resolve. A request not
    routed yet is asked for its handler (``RequestState.handler_now``). Every (handler, method)
    seen keeps its series, at 0 when idle."""

    def __init__(self, routes: dict):
        self.active: set = set()  # RequestState objects being served
        self.routes = routes

    def describe(self):
        return [GaugeMetricFamily("http_requests_in_progress", HELP["http_requests_in_progress"],
                                  labels=["handler", "method"])]

    def collect(self):
        family = self.describe()[0]
        counts = dict.fromkeys(list(self.routes), 0)
        for state in list(self.active):
            try:
                key = (state.handler_now(), state.method)
            except Exception:  # a router that cannot match this request now
                key = (UNMATCHED, state.method)
            counts[key] = counts.get(key, 0) + 1
        for (handler, method), count in counts.items():
            family.add_metric([handler, method], count)
        yield family
