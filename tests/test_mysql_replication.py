"""The replication collector against real MariaDB replication between two throwaway servers: the
replica's I/O and SQL threads, its lag and last errors per connection, the server collector's role,
and a stopped SQL thread seen as such."""

from __future__ import annotations

import pytest

from conftest import Samples, wait_until
from exporter.config import parse
from exporter.scrape import TargetScraper

pytestmark = pytest.mark.pg


@pytest.fixture
def pair(mariadb_pair):
    return mariadb_pair


def scrape(server) -> Samples:
    config = parse({"targets": [{"name": "r", "kind": "mysql", "dsn": server.dsn()}]}, source="test")
    scraper = TargetScraper(config.targets[0])
    try:
        return Samples(scraper.scrape(5.0).encode().decode())
    finally:
        scraper.close()


def test_a_running_replica(pair):
    primary, replica = pair
    samples = scrape(replica)
    labels = {"channel": "upstream", "source_host": "127.0.0.1"}
    assert samples.value("mysql_replication_io_thread_running", **labels) == 1
    assert samples.value("mysql_replication_sql_thread_running", **labels) == 1
    assert samples.value("mysql_replication_lag_seconds", **labels) == 0
    assert samples.value("mysql_replication_last_io_error_number", **labels) == 0
    assert samples.value("mysql_replication_last_sql_error_number", **labels) == 0
    assert samples.value("mysql_server_read_only") == 1
    assert [s.labels["role"] for s in samples.series("mysql_server_info")] == ["replica"]
    on_primary = scrape(primary)
    assert [s.labels["role"] for s in on_primary.series("mysql_server_info")] == ["primary"]
    assert not on_primary.series("mysql_replication_io_thread_running")


def test_a_stopped_sql_thread(pair):
    _, replica = pair
    replica.execute("STOP SLAVE 'upstream' SQL_THREAD")
    try:
        labels = {"channel": "upstream"}
        samples = wait_until(lambda: (lambda s: s if s.value("mysql_replication_sql_thread_running", **labels) == 0
                                      else None)(scrape(replica)), timeout=20, message="the SQL thread stopped")
        assert samples.value("mysql_replication_io_thread_running", **labels) == 1
        assert not samples.series("mysql_replication_lag_seconds", **labels)  # unknown while it does not apply
    finally:
        replica.execute("START SLAVE 'upstream' SQL_THREAD")
