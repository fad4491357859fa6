"""A steady shop workload on a MariaDB source and its replica, for ``dbperf demo``: the source takes
orders (a transaction: the order, its stock update), looks products up, and now and then inserts a
duplicate SKU (an error digest) and runs a report with a temporary table; the replica answers the
reports. Each thread paces itself, reconnects after errors (counted, logged at most once a minute
per kind) and stops within a second or two."""

from __future__ import annotations

import logging
import random
import threading
import time

from exporter.log import RateLimiter

LOG = logging.getLogger("dbperf.mysqlworkload")

N_PRODUCTS = 200
SCHEMA = (
    "CREATE DATABASE IF NOT EXISTS shop",
    "CREATE TABLE IF NOT EXISTS shop.products (id INT PRIMARY KEY AUTO_INCREMENT, sku VARCHAR(20) NOT NULL UNIQUE,"
    " price DECIMAL(10, 2) NOT NULL, stock INT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, product_id INT NOT NULL,"
    " quantity INT NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, KEY (product_id)) ENGINE=InnoDB",
    "INSERT IGNORE INTO shop.products (id, sku, price, stock) SELECT seq, CONCAT('SKU-', LPAD(seq, 5, '0')),"
    f" 1 + seq % 97, 1000000 FROM shop.seq_1_to_{N_PRODUCTS}",
)
REPORT = ("SELECT p.sku, SUM(o.quantity) AS sold FROM shop.orders o JOIN shop.products p ON p.id = o.product_id"
          " GROUP BY p.sku ORDER BY sold DESC LIMIT 10")


class MySQLWorkload:
    """``MySQLWorkload(source, replica, stop).start()`` (exporter.mysqlcluster.MariaDB servers)."""

    def __init__(self, source, replica, stop: threading.Event, rate: float = 20.0):
        self.source, self.replica, self.stop, self.rate = source, replica, stop, rate
        self.stats = {"transactions": 0, "errors": 0}
        self._limit = RateLimiter(60.0)
        for statement in SCHEMA:
            source.execute(statement)
        deadline = time.monotonic() + 30
        applied = ("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'shop'"
                   " AND table_name IN ('products', 'orders')")
        while replica.execute(applied)[0][0] < 2:  # the replica has applied the schema
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not apply the shop schema within 30 s")
            time.sleep(0.1)
        self.threads = [threading.Thread(target=self._run, args=(source, self._source_step, 1 / rate, 1),
                                         name="demo-mysql-source", daemon=True),
                        threading.Thread(target=self._run, args=(replica, self._replica_step, 0.5, 2),
                                         name="demo-mysql-replica", daemon=True)]

    def start(self) -> "MySQLWorkload":
        for thread in self.threads:
            thread.start()
        return self

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)

    def _run(self, server, step, interval: float, seed: int) -> None:
        import pymysql

        rng, conn = random.Random(seed), None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = server.connect(database="shop", read_timeout=10, write_timeout=10)
                with conn.cursor() as cur:
                    step(cur, rng)
                self.stats["transactions"] += 1
            except pymysql.err.MySQLError as exc:  # the replica not caught up yet, a restart: go on
                self.stats["errors"] += 1
                if self._limit.allow((server.port, type(exc).__name__)):
                    LOG.info("mysql workload on port %s: %s (%s)", server.port, exc, type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
                self.stop.wait(1.0)
                continue
            self.stop.wait(interval * rng.uniform(0.5, 1.5))
        if conn is not None:
            conn.close()

    def _source_step(self, cur, rng: random.Random) -> None:
        import pymysql

        product, roll = rng.randint(1, N_PRODUCTS), rng.random()
        if roll < 0.4:
            cur.execute("SELECT id, sku, price, stock FROM shop.products WHERE id = %s", (product,))
            cur.fetchall()
        elif roll < 0.8:  # an order: one transaction
            cur.execute("BEGIN")
            cur.execute("INSERT INTO shop.orders (product_id, quantity) VALUES (%s, %s)", (product, rng.randint(1, 3)))
            cur.execute("UPDATE shop.products SET stock = stock - 1 WHERE id = %s", (product,))
            cur.execute("COMMIT")
        elif roll < 0.95:
            cur.execute(REPORT)
            cur.fetchall()
        else:  # a double-submitted import: a duplicate key, an error on its digest
            try:
                cur.execute("INSERT INTO shop.products (sku, price, stock) VALUES ('SKU-00001', 1, 1)")
            except pymysql.err.IntegrityError:
                pass

    def _replica_step(self, cur, rng: random.Random) -> None:
        cur.execute(REPORT)
        cur.fetchall()
        cur.execute("SELECT COUNT(*) FROM shop.orders WHERE created_at > NOW() - INTERVAL 1 MINUTE")
        cur.fetchall()
