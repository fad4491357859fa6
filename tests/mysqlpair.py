"""Two throwaway MariaDB servers in replication (exporter.mysqlcluster): a source with a binary log
and a replica applying it, for the tests that need a replica reporting its threads and lag."""

from __future__ import annotations

from contextlib import contextmanager

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
