"""The per-request path of the application library (exporter/instrument/httpstore.py): its numbers
match what prometheus_client's own Counter/Histogram make of the same requests, nothing is matched
before dispatch, and "in progress" is counted when scraped, under the route template."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from conftest import Samples
from exporter.instrument import Instrumentation, PrometheusMiddleware, WSGIMiddleware
from exporter.instrument.core import HTTP_BUCKETS, QUERY_COUNT_BUCKETS
from test_instrument_support import ASGIServer, WSGIThreadServer, samples, settle

pytestmark = pytest.mark.fast


def test_own_store_matches_prometheus_client_for_the_same_requests():
    inst = Instrumentation()
    ref = CollectorRegistry()
    requests = Counter("http_requests_total", "x", ["handler", "method", "status"], registry=ref)
    duration = Histogram("http_request_duration_seconds", "x", ["handler", "method"],
                         buckets=sorted(set(HTTP_BUCKETS) | {0.5}), registry=ref)
    queries = Histogram("db_client_queries_per_request", "x", ["handler"], buckets=QUERY_COUNT_BUCKETS, registry=ref)
    db_time = Histogram("db_client_request_operation_duration_seconds", "x", ["handler"],
                        buckets=inst._db_store.bounds[:-1], registry=ref)
    slow = Counter("http_slow_requests_total", "x", ["handler"], registry=ref)
    rng = random.Random(7)
    edges = [0.0, 0.005, 0.01, 0.5, 0.5000001, 10.0, 11.0]  # on a bound: that bucket, as le says
    for i in range(3000):
        handler = rng.choice(["/a/{x}", "/b", "<unmatched>"])
        method = rng.choice(["GET", "POST"])
        status = rng.choice([200, 200, 201, 404, 500])
        seconds = rng.choice(edges) if i % 5 == 0 else rng.expovariate(20)
        n_queries = rng.choice([0, 0, 1, 3, 7, 600])
        db_seconds = rng.random() * seconds
        state, token = inst.start_request(method, handler)
        state.queries, state.db_seconds = n_queries, db_seconds
        state.start -= seconds  # the request took `seconds` (plus the microseconds of this loop)
        measured = inst.finish_request(state, status)
        inst.end_context(token)
        requests.labels(handler, method, str(status)).inc()
        duration.labels(handler, method).observe(measured)
        queries.labels(handler).observe(n_queries)
        if n_queries:
            db_time.labels(handler).observe(db_seconds)
        if measured >= inst.slow_request_seconds:
            slow.labels(handler).inc()
    ours = Samples(generate_latest(inst.registry).decode())
    theirs = Samples(generate_latest(ref).decode())
    for name in ("http_requests_total", "http_request_duration_seconds_bucket", "http_request_duration_seconds_count",
                 "http_request_duration_seconds_sum", "db_client_queries_per_request_bucket",
                 "db_client_queries_per_request_sum", "db_client_request_operation_duration_seconds_bucket",
                 "db_client_request_operation_duration_seconds_count", "http_slow_requests_total"):
        got = {tuple(sorted(s.labels.items())): s.value for s in ours.series(name)}
        want = {tuple(sorted(s.labels.items())): s.value for s in theirs.series(name)}
        assert got.keys() == want.keys(), name
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-9), (name, key)
    # Same families, types and _created series as prometheus_client's own metrics.
    text = generate_latest(inst.registry).decode()
    for name, kind in (("http_requests_total", "counter"), ("http_request_duration_seconds", "histogram"),
                       ("http_requests_in_progress", "gauge"), ("db_client_queries_per_request", "histogram")):
        assert f"# TYPE {name} {kind}" in text
    assert ours.series("http_requests_created") and ours.series("http_request_duration_seconds_created")


def test_statement_store_matches_prometheus_client():
    inst = Instrumentation()
    ref = CollectorRegistry()
    bounds = inst._db_store.bounds[:-1]
    duration = Histogram("db_client_operation_duration_seconds", "x",
                         ["db_system", "db_namespace", "db_operation", "pool", "fingerprint"], buckets=bounds, registry=ref)
    rng = random.Random(3)
    texts = ["SELECT 1", "SELECT a FROM t WHERE id = %s", "select a from t where id = 5", "UPDATE t SET a = 1"]
    for i in range(2000):
        sql, namespace, pool = rng.choice(texts), rng.choice(["shop", "audit"]), rng.choice(["main", "ro"])
        seconds = rng.choice(bounds + [0.0, 20.0]) if i % 4 == 0 else rng.expovariate(50)
        inst.record_statement(sql, seconds, namespace, pool)
        op, fp, _ = inst.statement(sql)
        duration.labels("postgresql", namespace, op, pool, fp).observe(seconds)
    ours, theirs = samples(inst), Samples(generate_latest(ref).decode())
    for name in ("db_client_operation_duration_seconds_bucket", "db_client_operation_duration_seconds_count",
                 "db_client_operation_duration_seconds_sum"):
        got = {tuple(sorted(x.labels.items())): x.value for x in ours.series(name)}
        want = {tuple(sorted(x.labels.items())): x.value for x in theirs.series(name)}
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), name
    assert ours.series("db_client_operation_duration_seconds_created")


def _counting_app(inst, calls):
    class CountingRoute(Route):
        def matches(self, scope):
            calls.append(scope["path"])
            return super().matches(scope)

    async def item(request):
        return PlainTextResponse(request.path_params["x"])

    app = Starlette(routes=[CountingRoute("/other", item), CountingRoute("/items/{x}", item)])
    if inst is not None:
        app.add_middleware(PrometheusMiddleware, instrumentation=inst)
    return app


def test_nothing_is_matched_before_dispatch():
    """The router matches each request once; the middleware adds no route matching of its own,
    however many distinct paths come (before: one match per new path, and a full re-match of
    every path once its 4,096-entry cache overflowed)."""
    async def call(app, path):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)
        await app({"type": "http", "method": "GET", "path": path, "root_path": "", "query_string": b"",
                   "headers": [], "scheme": "http", "server": ("x", 80)}, receive, send)
        return sent[0]["status"]

    counts = {}
    for label, inst in (("bare", None), ("instrumented", Instrumentation())):
        calls: list = []
        app = _counting_app(inst, calls)

        async def run():
            return [await call(app, f"/items/{i}") for i in range(5000)]
        assert asyncio.run(run()) == [200] * 5000
        counts[label] = len(calls)
        if inst is not None:
            assert samples(inst).value("http_requests_total", handler="/items/{x}", method="GET", status="200") == 5000
    assert counts["instrumented"] == counts["bare"] == 10_000


def _blocking_server(kind: str, inst, release: threading.Event, entered: threading.Event):
    if kind == "asgi":
        async def block(request):
            entered.set()
            while not release.is_set():
                await asyncio.sleep(0.01)
            return PlainTextResponse("done")

        app = Starlette(routes=[Mount("/api", routes=[Route("/jobs/{job_id}", block)])])
        app.add_middleware(PrometheusMiddleware, instrumentation=inst)
        return ASGIServer(app, inst), "/api/jobs/{job_id}"

    def app(environ, start_response):
        entered.set()
        release.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]
    wrapped = WSGIMiddleware(app, inst, resolve=lambda environ: "/jobs/<id>")
    return WSGIThreadServer(wrapped, inst), "/jobs/<id>"


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_in_progress_is_counted_when_scraped(kind):
    inst = Instrumentation()
    release, entered = threading.Event(), threading.Event()
    server, template = _blocking_server(kind, inst, release, entered)
    path = "/api/jobs/7" if kind == "asgi" else "/jobs/7"
    try:
        done = []
        threads = [threading.Thread(target=lambda: done.append(server.client.get(path).status_code))
                   for _ in range(3)]
        for t in threads:
            t.start()
        assert entered.wait(20)
        for _ in range(2000):  # until all three are inside the app
            in_progress = samples(inst).value("http_requests_in_progress", handler=template, method="GET")
            if in_progress == 3:
                break
            threading.Event().wait(0.01)
        assert in_progress == 3
        release.set()
        for t in threads:
            t.join(20)
        assert done == [200, 200, 200]
        settle(inst)
    finally:
        release.set()
        server.close()
    s = samples(inst)
    assert s.value("http_requests_in_progress", handler=template, method="GET") == 0  # the series stays
    assert s.value("http_requests_total", handler=template, method="GET", status="200") == 3
