"""A lock chain on a real server for the ``dbperf top`` tests, and a role with only pg_monitor.

:func:`lock_chain`: session A (application ``top-holder``) updates a row in an open transaction
with a literal that must never be shown; B (``top-waiter-b``) and then C (``top-waiter-c``)
update the same row and wait on locks: B on A's transaction, C on B's tuple lock. The context
gives the three pids once both wait; on exit A rolls back and the waiters finish."""

from __future__ import annotations

import contextlib
import threading
import uuid

import psycopg

from conftest import wait_until

SECRET_LITERAL = "do-not-show-7f3a"
MONITOR_ROLE = "dbperf_top_monitor"


def monitor_dsn(pg) -> str:
    """A DSN of a login role that has pg_monitor and nothing else (created once)."""
    pg.execute(f"""DO $$ BEGIN
      IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{MONITOR_ROLE}') THEN
        CREATE ROLE {MONITOR_ROLE} LOGIN;
      END IF; END $$""")
    pg.execute(f"GRANT pg_monitor TO {MONITOR_ROLE}")
    return pg.dsn(user=MONITOR_ROLE)


@contextlib.contextmanager
def lock_chain(pg, dbname: str = "postgres"):
    table = f"top_chain_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v text)", dbname)
    pg.execute(f"INSERT INTO {table} VALUES (1, 'start')", dbname)
    conns = [psycopg.connect(pg.dsn(dbname, application_name=name), autocommit=True)
             for name in ("top-holder", "top-waiter-b", "top-waiter-c")]
    holder, b, c = conns
    threads = []
    try:
        holder.execute("BEGIN")
        holder.execute(f"UPDATE {table} SET v = '{SECRET_LITERAL}' WHERE id = 1")
        pids = [conn.info.backend_pid for conn in conns]

        def waiting(pid_list):
            rows = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event_type = 'Lock'",
                              params=(pid_list,))
            return rows[0][0] == len(pid_list)

        for conn, name in ((b, "b"), (c, "c")):
            thread = threading.Thread(target=conn.execute, args=(f"UPDATE {table} SET v = '{name}' WHERE id = 1",),
                                      daemon=True)
            thread.start()
            threads.append(thread)
            wait_until(lambda: waiting(pids[1:1 + len(threads)]), message=f"session {name} waiting on a lock")
        yield tuple(pids)
    finally:
        with contextlib.suppress(Exception):
            holder.execute("ROLLBACK")
        for thread in threads:
            thread.join(10)
        for conn in conns:
            conn.close()
        pg.execute(f"DROP TABLE IF EXISTS {table}", dbname)
