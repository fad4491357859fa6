"""Which databases a ``DROP DATABASE`` (``ALTER DATABASE ... RENAME`` / ``SET TABLESPACE``,
``CREATE DATABASE ... TEMPLATE``) is waiting to have to itself: checked after each sample of the
target's session sampler (:mod:`exporter.postgres.sampler`), on its session, so that the scrape
engine can keep its sessions to the other databases open between refreshes (a warm relation cache:
table_sizes costs about a third on a session that already opened its relations) and close them as
soon as such a command waits for them (:meth:`exporter.scrape.TargetScraper._dropping`).

What the server shows while the command waits, PostgreSQL 13 to 18 alike: its backend is
``active`` in ``pg_stat_activity`` with its query text and no wait event (it polls for the other
sessions every 100 ms, for 5 s, then fails "being accessed by other users"), and it holds the
database's object lock (``pg_locks``: ``locktype 'object'``, ``classid 'pg_database'``, ``objid``
the database's oid; ``AccessExclusiveLock`` to drop, rename or move it, ``ShareLock`` on the
template of a ``CREATE DATABASE``), taken before the wait. The check reads ``pg_locks`` only when
an active client session (not dbperf's) runs a query that says ``DROP``, ``ALTER`` or ``CREATE``
then ``DATABASE`` (usually none: the check is then one read of ``pg_stat_activity``, without a
scan of the lock table, which a busy server fills with thousands of relation locks).
"""

from __future__ import annotations

import threading
import time

from exporter.postgres.session import APPLICATION_NAME
from exporter.postgres.sqlmark import mark

CHECK_SQL = mark(f"""SELECT d.datname::text FROM pg_database d
WHERE EXISTS (SELECT 1 FROM pg_stat_activity a
              WHERE a.state = 'active' AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
                AND a.application_name IS DISTINCT FROM '{APPLICATION_NAME}'
                AND a.query ~* '(drop|alter|create)\\s+database')
  AND d.oid IN (SELECT l.objid FROM pg_locks l
                WHERE l.locktype = 'object' AND l.classid = 'pg_database'::regclass AND l.granted
                  AND l.mode IN ('AccessExclusiveLock', 'ShareLock') AND l.pid <> pg_backend_pid())""")

# the sampler's interval above which its checks come too late for a DROP DATABASE's 5 s: then
# no session is kept warm
MAX_INTERVAL = 2.0


class DropWatch:
    """Fed by the sampler (:meth:`check`, after each successful sample); read by the scrape engine:
    :meth:`watching` (whether its checks are recent enough to keep sessions warm) and
    :meth:`subscribe` (called with the names of the databases a command waits for, in the
    sampler's thread)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.interval: float | None = None  # the sampler's, once it checked
        self.checked_at: float | None = None  # the last successful check
        self.checks = 0
        self.waiting: frozenset = frozenset()  # databases a command waited for at the last check
        self._listeners: list = []
        self._lock = threading.Lock()

    def subscribe(self, listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def watching(self) -> bool:
        """True when the sampler checked within two of its intervals (at most :data:`MAX_INTERVAL`):
        a command that waits now is seen, and the sessions closed, well before its 5 s."""
        at, interval = self.checked_at, self.interval
        return (at is not None and interval is not None and interval <= MAX_INTERVAL
                and self.clock() - at <= 2 * interval)

    def check(self, conn, interval: float, timeout: float, deadline: float | None = None) -> frozenset:
        """One check on ``conn`` (the sampler's session); tells the listeners when a command waits."""
        (_, rows), = conn.query(CHECK_SQL, timeout, deadline=deadline)
        waiting = frozenset(row[0] for row in rows)
        self.waiting, self.interval, self.checked_at = waiting, interval, self.clock()
        self.checks += 1
        if waiting:
            with self._lock:
                listeners = list(self._listeners)
            for listener in listeners:
                listener(waiting)
        return waiting

    def after_sample(self, sampler) -> None:
        """The sampler's hook: one check on its session, bounded as its samples are; a failed check
        keeps no session warm until the next one succeeds."""
        try:
            self.check(sampler.conn, sampler.interval, sampler.timeout,
                       deadline=time.monotonic() + max(sampler.interval, sampler.timeout + 0.1))
        except Exception:  # noqa: BLE001 - the next sample fails too, and says why
            self.checked_at = None
