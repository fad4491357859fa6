"""The ASGI middleware on the example shop app (FastAPI + SQLAlchemy) served by uvicorn on loopback,
against the real PostgreSQL: exact counts, labels, bucket placement, N+1, Server-Timing, slow log,
bounded cardinality."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import BackgroundTasks, FastAPI
from fastapi.responses import StreamingResponse
from prometheus_client import generate_latest

from conftest import Samples, promtool_check_metrics
from exporter.instrument import Instrumentation, PrometheusMiddleware
from exporter.instrument.asgi import _PREMATCH_CACHE
from test_instrument_support import ASGIServer, samples, settle

pytestmark = pytest.mark.pg

SHOP_DB = "dbperf_shop"
TOKEN = "s3cret-token-for-tests"
ORDERS = "/customers/{customer_id}/orders"
PER_KIND = 5_000  # raw paths of each kind in the bounded-cardinality test: ten thousand in all


@pytest.fixture(scope="module")
def shop_dsn(pg):
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(SHOP_DB,)):
        pg.execute(f"CREATE DATABASE {SHOP_DB}")
    return pg.dsn(SHOP_DB)


@pytest.fixture
def shop(shop_dsn):
    from examples.shop_app.app import create_app

    inst = Instrumentation(server_timing=True)
    app = create_app(shop_dsn, inst, slowlog_token=TOKEN)
    server = ASGIServer(app, inst)
    yield server, inst
    server.close()
    app.state.engine.dispose()


def test_counts_labels_and_buckets(shop):
    server, inst = shop
    for _ in range(3):
        assert server.get("/products").status_code == 200
    assert server.get("/products/3").status_code == 200
    assert server.get("/products/999").status_code == 404
    assert server.get("/no/such/page").status_code == 404
    assert server.get("/healthz").status_code == 200
    assert server.get("/metrics").status_code == 200
    assert server.get("/slow").status_code == 200

    s = samples(inst)
    assert s.value("http_requests_total", handler="/products", method="GET", status="200") == 3
    assert s.value("http_requests_total", handler="/products/{product_id}", method="GET", status="200") == 1
    assert s.value("http_requests_total", handler="/products/{product_id}", method="GET", status="404") == 1
    assert s.value("http_requests_total", handler="<unmatched>", method="GET", status="404") == 1
    handlers = {x.labels["handler"] for x in s.series("http_requests_total")}
    assert handlers == {"/products", "/products/{product_id}", "<unmatched>", "/slow"}  # no raw paths, no /metrics
    assert s.value("http_request_duration_seconds_count", handler="/products", method="GET") == 3
    # /slow sleeps 0.6 s in PostgreSQL: above the 0.5 s slow threshold bucket, inside 1 s.
    assert s.value("http_request_duration_seconds_bucket", handler="/slow", method="GET", le="0.5") == 0
    assert s.value("http_request_duration_seconds_bucket", handler="/slow", method="GET", le="1.0") == 1
    assert s.value("http_slow_requests_total", handler="/slow") == 1
    assert not s.has("http_slow_requests_total", handler="/products")
    assert all(x.value == 0 for x in s.series("http_requests_in_progress"))
    # Statements: one SELECT per /products request, the pg_sleep one is slow.
    listing = [x for x in s.series("db_client_operation_duration_seconds_count", db_operation="SELECT",
                                   db_namespace=SHOP_DB, pool="shop", db_system="postgresql")]
    assert sum(x.value for x in listing) >= 6
    sleep_fp = inst.statement("SELECT pg_sleep(0.6)")[1]
    assert s.value("db_client_operation_duration_seconds_bucket", fingerprint=sleep_fp, le="0.5") == 0
    assert s.value("db_client_operation_duration_seconds_bucket", fingerprint=sleep_fp, le="1.0") == 1
    assert s.value("db_client_slow_operations_total", fingerprint=sleep_fp) == 1
    assert s.value("db_client_queries_per_request_sum", handler="/products") == 3


def test_exceptions_counted_as_500_by_type(shop):
    server, inst = shop
    assert server.get("/fail").status_code == 500
    s = samples(inst)
    assert s.value("http_requests_total", handler="/fail", method="GET", status="500") == 1
    assert s.value("http_request_exceptions_total", handler="/fail", exception="ProgrammingError") == 1
    assert s.value("db_client_operation_errors_total", error_type="UndefinedTable", db_operation="SELECT") == 1
    assert s.value("http_requests_in_progress", handler="/fail", method="GET") == 0


def test_n_plus_one_flagged_once_and_clean_endpoint_not(shop, caplog):
    server, inst = shop
    caplog.set_level(logging.WARNING, logger="exporter.instrument")
    response = server.get("/customers/2/orders")
    assert response.status_code == 200 and len(response.json()) == 8
    assert server.get("/products/4").status_code == 200
    assert server.get("/products").status_code == 200
    s = samples(inst)
    per_product = inst.statement("SELECT name, price FROM products WHERE id = %(id)s")[1]
    assert s.value("db_client_n_plus_one_total", handler=ORDERS, fingerprint=per_product) == 1
    assert len(s.series("db_client_n_plus_one_total")) == 1  # /products and /products/{id} are clean
    assert s.value("db_client_queries_per_request_sum", handler=ORDERS) == 9  # 1 + 8 orders
    assert s.value("db_client_queries_per_request_bucket", handler=ORDERS, le="5.0") == 0
    assert s.value("db_client_queries_per_request_bucket", handler=ORDERS, le="10.0") == 1
    assert s.value("db_client_request_operation_duration_seconds_count", handler=ORDERS) == 1
    warnings = [r.getMessage() for r in caplog.records if "N+1" in r.getMessage()]
    assert len(warnings) == 1
    assert ORDERS in warnings[0] and "SELECT name, price FROM products WHERE id = ?" in warnings[0]


def test_server_timing_header(shop):
    server, _ = shop
    header = server.get("/customers/1/orders").headers["server-timing"]
    assert re.fullmatch(r'app;dur=\d+\.\d, db;dur=\d+\.\d;desc="9 queries"', header), header
    assert server.get("/products").headers["server-timing"].endswith('desc="1 query"')


def test_slow_log_needs_token_and_lists_slow_request(shop):
    server, _ = shop
    assert server.get("/slow").status_code == 200
    assert server.get("/debug/slowlog").status_code == 401
    assert server.get("/debug/slowlog", headers={"Authorization": "Bearer wrong-token"}).status_code == 401
    response = server.get("/debug/slowlog", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    data = response.json()
    assert [(r["handler"], r["status"]) for r in data["requests"]] == [("/slow", 200)]
    assert data["requests"][0]["duration_seconds"] >= 0.6
    assert [r["statement"] for r in data["statements"]] == ["SELECT pg_sleep(?)"]
    assert data["statements"][0]["handler"] == "/slow"
    # A token in the URL is refused, even the right one (URLs end up in access logs).
    refused = server.get(f"/debug/slowlog?token={TOKEN}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 400 and TOKEN not in refused.text


def test_metrics_endpoint_passes_promtool(shop):
    server, _ = shop
    for path in ("/products", "/products/1", "/customers/3/orders", "/nothing", "/fail"):
        server.get(path)
    response = httpx.get(server.url + "/metrics")  # uvicorn drops a connection after an app exception
    assert response.status_code == 200
    s = Samples(response.text)
    assert s.value("http_requests_total", handler="/products", method="GET", status="200") == 1
    assert s.value("db_client_connection_max", pool="shop") == 10  # pool_size 5 + max_overflow 5
    assert promtool_check_metrics(response.text) == ""


def _small_app(inst):
    app = FastAPI()
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"id": item_id}

    @app.get("/stream")
    async def stream():
        async def chunks():
            for i in range(3):
                await asyncio.sleep(0.25)
                yield f"chunk {i}\n".encode()
        return StreamingResponse(chunks())

    @app.get("/background")
    async def background(tasks: BackgroundTasks):
        tasks.add_task(asyncio.sleep, 0.8)
        return {"ok": True}

    return app


def test_ten_thousand_raw_paths_stay_bounded():
    inst = Instrumentation()
    server = ASGIServer(_small_app(inst), inst)
    try:
        # each half alone is more than the middleware's per-path table holds (it starts over when full)
        assert PER_KIND > _PREMATCH_CACHE
        paths = [f"/items/{i}" for i in range(PER_KIND)] + [f"/random/{i}/x" for i in range(PER_KIND)]

        def run(chunk):
            with httpx.Client(base_url=server.url, timeout=30) as client:
                return [client.get(p).status_code for p in chunk]

        with ThreadPoolExecutor(4) as pool:
            statuses = [c for part in pool.map(run, [paths[i::4] for i in range(4)]) for c in part]
        assert statuses.count(200) == PER_KIND and statuses.count(404) == PER_KIND
        settle(inst)
        text = generate_latest(inst.registry).decode()
        s = Samples(text)
        assert s.value("http_requests_total", handler="/items/{item_id}", method="GET", status="200") == PER_KIND
        assert s.value("http_requests_total", handler="<unmatched>", method="GET", status="404") == PER_KIND
        assert len(s.series("http_requests_total")) == 2
        assert len(s.series("http_request_duration_seconds_count")) == 2
        assert len(s.series("http_requests_in_progress")) == 2
        assert len(text.splitlines()) < 200
    finally:
        server.close()


@pytest.mark.fast
def test_clock_stops_at_last_body_chunk_not_after_background_tasks():
    inst = Instrumentation()
    server = ASGIServer(_small_app(inst), inst)
    try:
        started = time.perf_counter()
        assert server.get("/stream").text == "chunk 0\nchunk 1\nchunk 2\n"
        assert time.perf_counter() - started >= 0.75
        assert server.get("/background").status_code == 200
        s = samples(inst)
        # Streaming: timed to the last chunk (0.75 s), not to the response start.
        assert s.value("http_request_duration_seconds_bucket", handler="/stream", method="GET", le="0.5") == 0
        assert s.value("http_request_duration_seconds_bucket", handler="/stream", method="GET", le="1.0") == 1
        # Background task (0.8 s) runs after the last chunk: not part of the request time.
        assert s.value("http_request_duration_seconds_bucket", handler="/background", method="GET", le="0.25") == 1
    finally:
        server.close()


@pytest.mark.fast
def test_bad_configuration_is_one_clear_error():
    with pytest.raises(ValueError, match="n_plus_one_threshold must be at least 2"):
        Instrumentation(n_plus_one_threshold=1)
    with pytest.raises(ValueError, match="excluded_paths must be a list"):
        Instrumentation(excluded_paths="/metrics")
    with pytest.raises(ValueError, match="slow log: the token is empty or whitespace only"):
        Instrumentation().slowlog_asgi_app("")
    with pytest.raises(TypeError, match="instrumentation=Instrumentation"):
        PrometheusMiddleware(object(), instrumentation=None)


@pytest.mark.fast
def test_mounted_routes_keep_the_mount_prefix_and_exclusions_are_configurable():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    async def user(request):
        return PlainTextResponse(request.path_params["uid"])

    async def status(request):
        return PlainTextResponse("ok")

    app = Starlette(routes=[Mount("/api", routes=[Route("/users/{uid}", user)]), Route("/status", status),
                            Route("/metrics", status)])
    inst = Instrumentation(excluded_paths=["/status"])
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)
    server = ASGIServer(app, inst)
    try:
        for uid in ("1", "2", "3"):
            assert server.get(f"/api/users/{uid}").text == uid
        assert server.get("/status").status_code == 200
        assert server.get("/metrics").status_code == 200  # no longer excluded
        for method in ("FROB", "XYZZY", "PURGE"):  # made-up methods share one label value
            assert server.client.request(method, "/status").status_code in (200, 405)
            assert server.client.request(method, "/api/users/9").status_code == 405
        settle(inst)
    finally:
        server.close()
    s = samples(inst)
    assert s.value("http_requests_total", handler="/api/users/{uid}", method="GET", status="200") == 3
    assert s.value("http_requests_total", handler="/metrics", method="GET", status="200") == 1
    assert not s.has("http_requests_total", handler="/status")
    assert s.value("http_requests_total", handler="/api/users/{uid}", method="_OTHER", status="405") == 3
    assert {x.labels["method"] for x in s.series("http_requests_total")} == {"GET", "_OTHER"}
