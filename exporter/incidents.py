"""What a shop's server log is made of, for ``dbperf demo``: the moments beside the steady workload
(exporter/workload.py) that PostgreSQL logs with the settings of docs/server-log.md.

``Incidents(admin_dsn, login_dsn, password, stop).start()`` runs one thread that, on a schedule:

- logs in as the password role of ``login_dsn`` every second (a short session: connection,
  authentication, disconnection), with a wrong password every 20th time (15 in 5 minutes: below
  the production PostgreSQLAuthFailuresBurst threshold);
- inserts a product whose SKU exists (a unique violation, 23505), as a double-submitted import does;
- holds a row lock for half a second while another session wants it (a lock wait over
  deadlock_timeout, logged when it waits and when it gets the lock);
- sorts the order lines with a tiny work_mem (a temporary file);
- rebuilds a summary table (DROP TABLE, CREATE TABLE AS: DDL);
- now and then runs two transactions that lock two rows in opposite orders (a deadlock);
- runs a CHECKPOINT at the start and then once an hour, as before maintenance (the timed ones
  follow every checkpoint_timeout).

Slow statements, checkpoints and autovacuum runs come from the workload and the server settings.
Every expected failure is counted in ``stats``, never logged; anything else is logged at most once
a minute per kind."""

from __future__ import annotations

import logging
import threading
import time

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from exporter.log import RateLimiter

LOG = logging.getLogger("dbperf.incidents")

LOGIN_ROLE = "shop_user"
SETUP = f"""
CREATE TABLE IF NOT EXISTS stock_reservations (id int PRIMARY KEY, reserved int NOT NULL DEFAULT 0);
INSERT INTO stock_reservations VALUES (1, 0), (2, 0), (3, 0) ON CONFLICT DO NOTHING;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{LOGIN_ROLE}') THEN
    CREATE ROLE {LOGIN_ROLE} LOGIN;
  END IF;
END $$;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO {LOGIN_ROLE};
"""
# (name, every so many seconds, first after so many seconds)
SCHEDULE = (("checkpoint", 3600, 0), ("login", 1, 0), ("wrong_password", 20, 1), ("unique_violation", 5, 2), ("lock_wait", 10, 3),
            ("temp_file", 10, 4), ("ddl", 15, 5), ("deadlock", 30, 6))


def setup(dsn: str, password: str) -> None:
    """The table the lock incidents use and the login role (with ``password``), in the database of ``dsn``."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(SETUP)
        conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(LOGIN_ROLE), sql.Literal(password)))


class Incidents:
    def __init__(self, admin_dsn: str, login_dsn: str, password: str, stop: threading.Event):
        self.admin_dsn, self.login_dsn, self.password, self.stop = admin_dsn, login_dsn, password, stop
        self.stats = {name: 0 for name, *_ in SCHEDULE}
        self.failures = 0
        self._limit = RateLimiter(60.0)
        self.thread = threading.Thread(target=self._run, name="demo-incidents", daemon=True)

    def start(self) -> "Incidents":
        self.thread.start()
        return self

    def join(self) -> None:
        self.thread.join(10)

    def run_each_once(self) -> None:
        """Every incident once, in the order of SCHEDULE (a test: every kind of log entry appears)."""
        for name, *_ in SCHEDULE:
            getattr(self, "_" + name)()
            self.stats[name] += 1

    def _run(self) -> None:
        started = time.monotonic()
        due = {name: started + first for name, _, first in SCHEDULE}
        while not self.stop.is_set():
            now = time.monotonic()
            for name, every, _ in SCHEDULE:
                if now >= due[name] and not self.stop.is_set():
                    due[name] = now + every
                    try:
                        getattr(self, "_" + name)()
                        self.stats[name] += 1
                    except Exception as exc:  # the server restarting, a timeout: counted, logged rarely
                        self.failures += 1
                        if self._limit.allow(name):
                            LOG.info("demo incident %s did not happen: %s (%s)", name,
                                     (str(exc).strip().splitlines() or [""])[0], type(exc).__name__)
            self.stop.wait(max(0.05, min(due.values()) - time.monotonic()))

    def _connect(self, dsn: str | None = None, **extra) -> psycopg.Connection:
        return psycopg.connect(make_conninfo(dsn or self.admin_dsn, connect_timeout=3, application_name="shop-jobs",
                                             options="-c statement_timeout=5000", **extra), autocommit=True)

    # -- the incidents ------------------------------------------------------------------------
    def _login(self, password: str | None = None) -> None:
        with self._connect(self.login_dsn, password=password or self.password) as conn:
            conn.execute("SELECT count(*) FROM products WHERE stock > 0").fetchone()

    def _wrong_password(self) -> None:
        try:
            self._login("not-the-" + self.password)
        except psycopg.OperationalError as exc:
            if "password authentication failed" not in str(exc):
                raise
        else:
            raise RuntimeError(f"{LOGIN_ROLE} logged in with a wrong password (pg_hba.conf does not ask for one)")

    def _unique_violation(self) -> None:
        with self._connect() as conn:
            try:
                conn.execute("INSERT INTO products (sku, name, price, stock) VALUES ('SKU-00001', 'Imported twice', 1, 1)")
            except psycopg.errors.UniqueViolation:
                return
        raise RuntimeError("the duplicate SKU was inserted (products.sku has no unique index)")

    def _lock_wait(self) -> None:
        with self._connect() as holder, self._connect() as waiter:
            with holder.transaction():
                holder.execute("UPDATE stock_reservations SET reserved = reserved + 1 WHERE id = 3")
                wanting = threading.Thread(target=lambda: waiter.execute(
                    "UPDATE stock_reservations SET reserved = reserved - 1 WHERE id = 3"), daemon=True)
                wanting.start()
                self.stop.wait(0.5)  # longer than deadlock_timeout: logged as still waiting
            wanting.join(6)

    def _temp_file(self) -> None:
        with self._connect() as conn:
            conn.execute("SET work_mem = '64kB'")
            conn.execute("SELECT order_id, line_no, price FROM order_items ORDER BY price DESC, order_id").fetchall()

    def _checkpoint(self) -> None:
        with self._connect() as conn:
            conn.execute("CHECKPOINT")

    def _ddl(self) -> None:
        with self._connect() as conn:
            conn.execute("DROP TABLE IF EXISTS sales_summary")
            conn.execute("CREATE TABLE sales_summary AS SELECT product_id, sum(quantity) AS sold"
                         " FROM order_items GROUP BY product_id")

    def _deadlock(self) -> None:
        """Two transactions lock rows 1 and 2 in opposite orders; the server aborts one of them."""
        both_locked = threading.Barrier(2, timeout=5)
        outcomes: list[str] = []

        def side(first: int, second: int) -> None:
            with self._connect() as conn:
                try:
                    with conn.transaction():
                        conn.execute("UPDATE stock_reservations SET reserved = reserved + 1 WHERE id = %s", (first,))
                        both_locked.wait()
                        conn.execute("UPDATE stock_reservations SET reserved = reserved + 1 WHERE id = %s", (second,))
                    outcomes.append("committed")
                except psycopg.errors.DeadlockDetected:
                    outcomes.append("deadlock")

        other = threading.Thread(target=side, args=(2, 1), daemon=True)
        other.start()
        side(1, 2)
        other.join(10)
        if "deadlock" not in outcomes:
            raise RuntimeError(f"no deadlock: {outcomes}")
