"""Two throwaway MariaDB servers in replication (exporter.mysqlcluster): a source with a binary log
and a replica applying it, for the tests that need a replica reporting its threads and lag; and
pt-heartbeat's table and its update, written by the tests as pt-heartbeat --update --utc would."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone

from conftest import wait_until
from exporter.mysqlcluster import REPLICA_SETTINGS, SOURCE_SETTINGS, MariaDB, replicate


@contextmanager
def replicated_pair(database: str = "shop"):
    """``with replicated_pair() as (source, replica):`` replication running, ``database`` created on
    the source with a table ``orders (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(40))`` and
    seen on the replica."""
    with MariaDB(settings=SOURCE_SETTINGS) as source, MariaDB(settings=REPLICA_SETTINGS) as replica:
        replicate(source, replica)
        source.execute(f"CREATE DATABASE {database}")
        source.execute(f"CREATE TABLE {database}.orders (id INT PRIMARY KEY AUTO_INCREMENT, note VARCHAR(40)) "
                       "ENGINE=InnoDB")
        wait_until(lambda: replica.execute(f"SHOW TABLES IN {database}"), timeout=30,
                   message="the replica applying the source's CREATE TABLE")
        yield source, replica


def heartbeat_table(database: str) -> str:
    """pt-heartbeat's table (``pt-heartbeat --create-table``) in ``database``."""
    return (f"CREATE TABLE IF NOT EXISTS {database}.heartbeat (ts varchar(26) NOT NULL, "
            "server_id int unsigned NOT NULL PRIMARY KEY, file varchar(255) DEFAULT NULL, "
            "position bigint unsigned DEFAULT NULL, relay_master_log_file varchar(255) DEFAULT NULL, "
            "exec_master_log_pos bigint unsigned DEFAULT NULL)")


def beat(server, database: str) -> float:
    """One heartbeat on ``server`` as pt-heartbeat --update --utc writes it (its own server_id, the
    time in UTC with microseconds); returns that time."""
    now = time.time()
    ts = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    server.execute(f"REPLACE INTO {database}.heartbeat (ts, server_id) VALUES (%s, @@server_id)", (ts,))
    return now
