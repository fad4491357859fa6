"""Pool metrics against the real PostgreSQL: SQLAlchemy QueuePool exhaustion through the shop app
under uvicorn, and psycopg_pool read with get_stats() (never reset)."""

from __future__ import annotations

import threading

import httpx
import psycopg_pool
import pytest

from conftest import Samples, promtool_check_metrics, wait_until
from exporter.instrument import Instrumentation
from test_instrument_support import ASGIServer, samples, settle, value

pytestmark = pytest.mark.pg

SHOP_DB = "dbperf_shop"


@pytest.fixture(scope="module")
def shop_dsn(pg):
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(SHOP_DB,)):
        pg.execute(f"CREATE DATABASE {SHOP_DB}")
    return pg.dsn(SHOP_DB)


def test_sqlalchemy_pool_exhaustion_shows_timeout_and_full_pool(shop_dsn):
    from examples.shop_app.app import create_app

    inst = Instrumentation()
    app = create_app(shop_dsn, inst, pool_size=1, max_overflow=0, pool_timeout=0.5)
    server = ASGIServer(app)
    results = {}

    def hit(name, path):
        results[name] = httpx.get(server.url + path, timeout=30).status_code

    try:
        idle = Samples(httpx.get(server.url + "/metrics").text)
        assert idle.value("db_client_connections_usage", pool="shop", state="idle") == 1  # schema setup opened it
        assert idle.value("db_client_connections_usage", pool="shop", state="used") == 0
        holder = threading.Thread(target=hit, args=("holder", "/hold?seconds=2"))
        holder.start()
        wait_until(lambda: value(samples(inst), "db_client_connections_usage", pool="shop", state="used") == 1,
                   message="the holder to check the only connection out")
        waiter = threading.Thread(target=hit, args=("waiter", "/hold?seconds=0.1"))
        waiter.start()
        full = wait_until(lambda: (lambda s: s if value(s, "db_client_connection_pending_requests", pool="shop") == 1
                                   else None)(Samples(httpx.get(server.url + "/metrics").text)),
                          timeout=5, interval=0.05, message="a pending checkout")
        assert full.value("db_client_connections_usage", pool="shop", state="used") == 1
        assert full.value("db_client_connections_usage", pool="shop", state="idle") == 0
        assert full.value("db_client_connection_max", pool="shop") == 1
        assert full.value("db_client_connection_overflow", pool="shop") == 0
        waiter.join(10)
        holder.join(10)
        assert results == {"holder": 200, "waiter": 500}
        settle(inst)
        s = samples(inst)
        assert s.value("db_client_connection_timeouts_total", pool="shop") == 1
        assert s.value("db_client_connection_pending_requests", pool="shop") == 0
        assert s.value("http_request_exceptions_total", handler="/hold", exception="TimeoutError") == 1
        # The timed-out wait lasted the pool timeout (0.5 s): above 0.25 s, within 0.5 s + slack.
        waits = s.value("db_client_connection_wait_time_seconds_count", pool="shop")
        assert s.value("db_client_connection_wait_time_seconds_bucket", pool="shop", le="0.25") == waits - 1
        assert s.value("db_client_connection_wait_time_seconds_bucket", pool="shop", le="1.0") == waits
        # The holder kept its connection ~2 s.
        assert s.value("db_client_connection_use_time_seconds_bucket", pool="shop", le="1.0") == \
            s.value("db_client_connection_use_time_seconds_count", pool="shop") - 1
        assert promtool_check_metrics(httpx.get(server.url + "/metrics").text) == ""
    finally:
        server.close()
        app.state.engine.dispose()


def test_psycopg_pool_gauges_from_get_stats_without_reset(pg):
    inst = Instrumentation()
    pool = psycopg_pool.ConnectionPool(pg.dsn("postgres"), min_size=1, max_size=2, timeout=0.5, open=True,
                                       name="pgpool", kwargs={"autocommit": True})
    inst.instrument_psycopg_pool(pool)
    try:
        pool.wait(10)
        with pool.connection() as conn:
            for _ in range(3):
                conn.execute("SELECT 1").fetchall()
        s = samples(inst)
        assert s.value("db_client_connection_max", pool="pgpool") == 2
        assert s.value("db_client_connection_idle_min", pool="pgpool") == 1
        assert s.value("db_client_connections_usage", pool="pgpool", state="used") == 0
        assert s.value("db_client_operation_duration_seconds_count", pool="pgpool", db_namespace="postgres",
                       fingerprint=inst.statement("SELECT 1")[1]) == 3
        before = pool.get_stats()["requests_num"]

        release = threading.Event()
        holding = threading.Barrier(3)

        def hold():
            with pool.connection():
                holding.wait(10)
                release.wait(10)

        holders = [threading.Thread(target=hold) for _ in range(2)]
        for t in holders:
            t.start()
        holding.wait(10)
        errors = []
        waiter = threading.Thread(target=lambda: errors.append(_try_get(pool)))
        waiter.start()
        wait_until(lambda: value(samples(inst), "db_client_connection_pending_requests", pool="pgpool") == 1,
                   timeout=5, interval=0.02, message="a waiting request")
        s = samples(inst)
        assert s.value("db_client_connections_usage", pool="pgpool", state="used") == 2
        assert s.value("db_client_connections_usage", pool="pgpool", state="idle") == 0
        waiter.join(10)
        release.set()
        for t in holders:
            t.join(10)
        assert errors == ["PoolTimeout"]
        s = samples(inst)
        assert s.value("db_client_connection_timeouts_total", pool="pgpool") == 1
        assert s.value("db_client_connection_use_time_seconds_count", pool="pgpool") == 3
        # Scrapes read get_stats(): the pool's own counters were not reset (pop_stats would).
        assert pool.get_stats()["requests_num"] >= before + 3
        with pytest.raises(ValueError, match="pool named 'pgpool' is instrumented already"):
            inst.instrument_psycopg_pool(pool)
    finally:
        pool.close()


def _try_get(pool) -> str:
    try:
        with pool.connection():
            return "ok"
    except psycopg_pool.PoolTimeout:
        return "PoolTimeout"
