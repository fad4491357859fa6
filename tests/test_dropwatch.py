"""exporter.postgres.dropwatch on every major (13..18): a DROP DATABASE (and ALTER DATABASE ...
RENAME) that waits for another session is seen, with its database's name; nothing is seen when no
such command waits; the watch counts as watching only while its checks are recent."""

from __future__ import annotations

import threading

import psycopg
import pytest

import pgdist
from conftest import wait_until
from exporter.pgcluster import Cluster
from exporter.postgres.connection import Connection
from exporter.postgres.dropwatch import MAX_INTERVAL, DropWatch

pytestmark = pytest.mark.pg


class Waiting:
    """``sql`` run in a thread while a session of ours sits in ``datname`` (so the command waits)."""

    def __init__(self, cluster: Cluster, datname: str, sql: str):
        self.session = psycopg.connect(cluster.dsn(datname), autocommit=True)
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(cluster.dsn(), sql))
        self.thread.start()

    def _run(self, dsn: str, sql: str) -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql)
        except Exception as exc:  # noqa: BLE001 - checked by finish()
            self.error = exc

    def finish(self) -> None:
        self.session.close()  # the command goes on within its next 100 ms poll
        self.thread.join(10)
        assert not self.thread.is_alive() and self.error is None, self.error


@pytest.mark.parametrize("major", pgdist.MAJORS)
def test_a_waiting_drop_database_is_seen(major):
    with Cluster(bindir=None if major == 15 else pgdist.bindir(major)) as cluster:
        cluster.psql("CREATE DATABASE victim")
        cluster.psql("CREATE DATABASE other")
        now = [0.0]
        watch = DropWatch(clock=lambda: now[0])
        conn = Connection(cluster.dsn(), None, 3.0, statement_timeout=1.0)
        seen = []
        watch.subscribe(seen.append)
        try:
            assert not watch.watching()
            # an idle session in "other": no command waits
            with psycopg.connect(cluster.dsn("other"), autocommit=True) as idle:
                idle.execute("SELECT 1")
                assert watch.check(conn, 1.0, 1.0) == frozenset()
            assert seen == [] and watch.watching()
            now[0] += 2.0
            assert watch.watching()
            now[0] += 0.1  # more than two intervals since the last check
            assert not watch.watching()
            waiting = Waiting(cluster, "victim", "/* a comment */ drop database victim")
            try:
                wait_until(lambda: watch.check(conn, 1.0, 1.0), timeout=4, interval=0.05,
                           message="the DROP DATABASE seen")
                assert watch.waiting == frozenset({"victim"}) and seen[-1] == frozenset({"victim"})
            finally:
                waiting.finish()
            assert watch.check(conn, 1.0, 1.0) == frozenset()
            if major == 15:
                waiting = Waiting(cluster, "other", "ALTER DATABASE other RENAME TO renamed")
                try:
                    wait_until(lambda: watch.check(conn, 1.0, 1.0), timeout=4, interval=0.05,
                               message="the ALTER DATABASE RENAME seen")
                    assert watch.waiting == frozenset({"other"})
                finally:
                    waiting.finish()
            # an interval too long for a DROP's 5 s: never watching
            watch.check(conn, MAX_INTERVAL + 1, 1.0)
            assert not watch.watching()
        finally:
            conn.close()
