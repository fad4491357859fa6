"""exporter/mysqlworkload.py on a real MariaDB source and replica (tests/mysqlpair.py): it creates its
schema, the replica applies it, both threads run transactions, and the only errors are none (the
duplicate SKU it inserts on purpose is caught)."""

from __future__ import annotations

import threading

import pytest

from conftest import wait_until
from exporter.mysqlworkload import MySQLWorkload
from mysqlpair import replicated_pair

pytestmark = pytest.mark.pg


def test_orders_on_the_source_reach_the_replica():
    stop = threading.Event()
    with replicated_pair("pairdb") as (source, replica):
        load = MySQLWorkload(source, replica, stop, rate=50.0).start()
        try:
            wait_until(lambda: load.stats["transactions"] >= 60, timeout=30, message="60 transactions")
            orders = source.execute("SELECT COUNT(*) FROM shop.orders")[0][0]
            assert orders > 0
            wait_until(lambda: replica.execute("SELECT COUNT(*) FROM shop.orders")[0][0] >= orders, timeout=30,
                       message="the replica applying the orders")
        finally:
            stop.set()
            load.join()
        assert not any(t.is_alive() for t in load.threads)
        assert load.stats["errors"] == 0, load.stats
