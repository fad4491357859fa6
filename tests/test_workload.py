"""The shop workload against a real throwaway PostgreSQL: it does the work it claims, stops
promptly, and keeps going when the server restarts or goes away for a while."""

from __future__ import annotations

import time

import psycopg
import pytest

from exporter.pgcluster import Cluster
from exporter.workload import N_CUSTOMERS, N_PRODUCTS, Workload, setup_schema
from conftest import wait_until

pytestmark = pytest.mark.pg


@pytest.fixture(scope="module")
def shop():
    with Cluster() as cluster:
        cluster.psql("CREATE DATABASE shop")
        setup_schema(cluster.dsn("shop"))
        yield cluster


def query(cluster: Cluster, sql: str, params=None, dbname: str = "shop"):
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def db_counters(cluster: Cluster) -> tuple[int, int]:
    # a fresh connection sees a fresh statistics snapshot
    return tuple(query(cluster, "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = 'shop'")[0])


def test_schema_is_seeded_with_keys_indexes_and_an_unindexed_filter_column(shop):
    counts = dict(query(shop, "SELECT 'customers', count(*) FROM customers UNION ALL SELECT 'products', count(*)"
                              " FROM products UNION ALL SELECT 'orders', count(*) FROM orders"
                              " UNION ALL SELECT 'order_items', count(*) FROM order_items"))
    assert counts["customers"] == N_CUSTOMERS and counts["products"] == N_PRODUCTS
    assert counts["orders"] >= 1000 and counts["order_items"] >= counts["orders"]
    with_pk = {r[0] for r in query(shop, "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'p'")}
    assert {"customers", "products", "orders", "order_items"} <= with_pk
    indexed = {r[0] for r in query(shop, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")}
    assert any("(customer_id)" in d for d in indexed)
    assert not any("(email" in d for d in indexed), "customers.email must stay unindexed (the demo's seq scans)"
    analyzed = query(shop, "SELECT count(*) FROM pg_stat_user_tables WHERE last_analyze IS NOT NULL")[0][0]
    assert analyzed == 4


def test_workload_really_works_and_stops_promptly(shop):
    commits0, rollbacks0 = db_counters(shop)
    orders0 = query(shop, "SELECT count(*) FROM orders")[0][0]
    seqscan0 = query(shop, "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'customers'")[0][0]
    workload = Workload(shop.dsn("shop"), threads=2, rate=60.0, seed=7).start()
    try:
        apps = wait_until(lambda: {r[0] for r in query(
            shop, "SELECT DISTINCT application_name FROM pg_stat_activity WHERE datname = 'shop'")}
            >= {"shop-web", "shop-batch", "shop-idle"}, timeout=10, message="the three session roles")
        assert apps
        wait_until(lambda: query(shop, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'shop-idle'"
                                       " AND state = 'idle in transaction'"),
                   timeout=15, message="a session idle in transaction")
        # running until it has done each kind of work below (and the server has counted a login's seq scan)
        wait_until(lambda: (s := workload.stats)["transactions"] > 100 and s["inserts"] > 10 and s["updates"] > 10
                   and s["slow_queries"] > 0 and s["rollbacks"] > 0 and query(
                       shop, "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'customers'")[0][0] > seqscan0,
                   timeout=30, message="transactions, inserts, updates, slow queries, rollbacks and a seq scan")
    finally:
        started = time.monotonic()
        workload.stop()
        took = time.monotonic() - started
    assert took < 3.0, f"stop() took {took:.1f}s"
    assert not workload.running
    stats = workload.stats
    assert stats["transactions"] > 100, stats
    assert stats["inserts"] > 10 and stats["updates"] > 10 and stats["slow_queries"] > 0, stats
    assert stats["rollbacks"] > 0, stats
    assert stats["errors"] == 0, stats
    # the server saw it: committed and rolled back transactions, new orders, sequential scans by email
    commits1, rollbacks1 = wait_until(lambda: (c := db_counters(shop))[0] >= commits0 + stats["transactions"] // 2 and c,
                                      timeout=10, message="pg_stat_database.xact_commit to grow")
    assert rollbacks1 > rollbacks0
    orders1 = query(shop, "SELECT count(*) FROM orders")[0][0]
    assert orders1 > orders0
    seqscan1 = query(shop, "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = 'customers'")[0][0]
    assert seqscan1 > seqscan0
    # every connection is closed
    left = wait_until(lambda: not query(shop, "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'shop-%'"),
                      timeout=5, message="the workload's sessions to disappear")
    assert left


def test_workload_survives_restart_and_outage_without_busy_looping(shop):
    workload = Workload(shop.dsn("shop"), threads=2, rate=40.0, seed=11).start()
    try:
        wait_until(lambda: workload.stats["transactions"] > 20, timeout=10, message="some transactions")
        shop.restart()
        wait_until(lambda: workload.stats["reconnects"] >= 1, timeout=15, message="a reconnect after restart")
        after_restart = workload.stats["transactions"]
        wait_until(lambda: workload.stats["transactions"] > after_restart + 20, timeout=10,
                   message="transactions after the restart")
        assert workload.stats["errors"] >= 1  # the restart was noticed and counted

        shop.stop()
        errors_before = workload.stats["errors"]
        time.sleep(4)
        during_outage = workload.stats["errors"] - errors_before
        # 4 sessions with a backoff of 0.2 s doubling to 2 s: about 5 attempts each in 4 s
        assert 1 <= during_outage <= 40, f"{during_outage} errors in a 4 s outage: busy loop?"
        assert workload.running
        shop.start()
        resumed = workload.stats["transactions"]
        wait_until(lambda: workload.stats["transactions"] > resumed + 20, timeout=15,
                   message="transactions after the outage")
    finally:
        if not query_ok(shop):
            shop.start()
        started = time.monotonic()
        workload.stop()
        assert time.monotonic() - started < 3.5
    assert not workload.running


def query_ok(cluster: Cluster) -> bool:
    try:
        query(cluster, "SELECT 1", dbname="postgres")
        return True
    except psycopg.Error:
        return False
