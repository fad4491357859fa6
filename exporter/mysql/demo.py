"""The demo's MariaDB (``dbperf demo`` when Debian's mariadb-server is installed): a throwaway server
(exporter.mysqlcluster) inside the demo's directory with a small shop schema and a paced workload
(inserts, point reads, a join, updates, deletes, now and then a slower report), so that every
panel of the dbperf / MySQL dashboard has data."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

LOG = logging.getLogger("dbperf.demo")

SCHEMA_SQL = (
    "CREATE DATABASE shop",
    "CREATE TABLE shop.customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100), city VARCHAR(50), "
    "KEY (city)) ENGINE=InnoDB",
    "CREATE TABLE shop.orders (id INT PRIMARY KEY AUTO_INCREMENT, customer_id INT, total DECIMAL(10, 2), "
    "status VARCHAR(20), KEY (customer_id)) ENGINE=InnoDB",
    "INSERT INTO shop.customers (name, city) SELECT CONCAT('customer ', seq), ELT(1 + seq % 4, 'Oslo', 'Lyon', "
    "'Porto', 'Graz') FROM shop.seq_1_to_500",
    "INSERT INTO shop.orders (customer_id, total, status) SELECT 1 + seq % 500, seq % 97 + 0.5, 'new' "
    "FROM shop.seq_1_to_2000",
)


class MySQLLoad:
    """A few statements a loop, paced, on one connection of its own (reconnects when it drops)."""

    def __init__(self, server, stop: threading.Event, pause: float = 0.05):
        self.server, self.stop, self.pause = server, stop, pause
        self.thread = threading.Thread(target=self._run, name="demo-mysql-load", daemon=True)
        self.statements = 0

    def start(self) -> "MySQLLoad":
        self.thread.start()
        return self

    def _step(self, cur, rng: random.Random) -> None:
        customer = rng.randint(1, 500)
        cur.execute("INSERT INTO orders (customer_id, total, status) VALUES (%s, %s, 'new')",
                    (customer, round(rng.uniform(1, 200), 2)))
        cur.execute("SELECT id, name FROM customers WHERE id = %s", (customer,))
        cur.fetchall()
        cur.execute("SELECT c.city, COUNT(*), SUM(o.total) FROM orders o JOIN customers c ON c.id = o.customer_id "
                    "WHERE c.city = %s GROUP BY c.city", (rng.choice(("Oslo", "Lyon", "Porto", "Graz")),))
        cur.fetchall()
        cur.execute("UPDATE orders SET status = 'paid' WHERE customer_id = %s AND status = 'new' LIMIT 1", (customer,))
        if rng.random() < 0.1:
            cur.execute("DELETE FROM orders WHERE status = 'paid' ORDER BY id LIMIT 1")
        if rng.random() < 0.05:  # a report without an index: a full scan
            cur.execute("SELECT status, COUNT(*), AVG(total) FROM orders WHERE total > %s GROUP BY status",
                        (rng.uniform(0, 100),))
            cur.fetchall()
        self.statements += 5

    def _run(self) -> None:
        rng = random.Random(19)
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = self.server.connect(database="shop")
                with conn.cursor() as cur:
                    self._step(cur, rng)
            except Exception as exc:  # the server stopping under it: wait, reconnect
                LOG.debug("demo MariaDB workload: %s", exc)
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:
                        pass
                conn = None
                self.stop.wait(1.0)
            self.stop.wait(self.pause)
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def join(self) -> None:
        self.thread.join(10)


def start_mariadb(workdir: Path, stop: threading.Event):
    """``(server, load)``: a MariaDB in ``workdir`` with the shop schema and its workload running;
    :class:`exporter.mysqlcluster.MariaDBError` when the binaries are missing or it does not start."""
    from exporter.mysqlcluster import MariaDB

    server = MariaDB(base_dir=str(workdir))
    try:
        server.init().start()
        for sql in SCHEMA_SQL:
            server.execute(sql)
    except BaseException:
        server.cleanup()
        raise
    return server, MySQLLoad(server, stop).start()
