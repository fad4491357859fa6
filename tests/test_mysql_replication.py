"""The replication collector against real MariaDB replication between two throwaway servers: the
replica's I/O and SQL threads, its lag and last errors per connection, the server collector's role,
a stopped SQL thread seen as such, the GTID transactions received but not applied, and the lag from
a pt-heartbeat table written on the primary (by the test, as pt-heartbeat --update --utc would)."""

from __future__ import annotations

import time
from datetime import datetime, timezone

import pytest

from conftest import Samples, promtool_check_metrics, wait_until
from exporter.config import parse
from exporter.scrape import TargetScraper
from mysqlpair import beat as beat_on, heartbeat_table

pytestmark = pytest.mark.pg


@pytest.fixture
def pair(mariadb_pair):
    return mariadb_pair


HEARTBEAT = {"heartbeat_table": "replicated.heartbeat", "heartbeat_utc": True}
HEARTBEAT_TABLE = heartbeat_table("replicated")


def scrape_text(server, replication: dict | None = None, outcomes: list | None = None) -> str:
    target = {"name": "r", "kind": "mysql", "dsn": server.dsn()}
    if replication:
        target["replication"] = replication
    scraper = TargetScraper(parse({"targets": [target]}, source="test").targets[0])
    try:
        text = scraper.scrape(5.0).encode().decode()
        if outcomes is not None:
            outcomes.extend(o for o in scraper.outcomes if o.collector == "replication")
        return text
    finally:
        scraper.close()


def scrape(server, replication: dict | None = None, outcomes: list | None = None) -> Samples:
    return Samples(scrape_text(server, replication, outcomes))


def beat(primary) -> float:
    return beat_on(primary, "replicated")


def heartbeat_lag(replica) -> float | None:
    series = scrape(replica, HEARTBEAT).series("mysql_replication_heartbeat_lag_seconds", channel="upstream")
    return series[0].value if series else None


def gtid_behind(replica) -> float | None:
    series = scrape(replica).series("mysql_replication_gtid_transactions_behind", channel="upstream", domain="0")
    return series[0].value if series else None


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


def test_gtid_in_use_and_transactions_behind(pair):
    primary, replica = pair
    primary.execute("CREATE TABLE IF NOT EXISTS replicated.gtid_t (id int PRIMARY KEY AUTO_INCREMENT)")
    wait_until(lambda: gtid_behind(replica) == 0, timeout=20, message="the replica caught up")
    samples = scrape(replica)
    assert samples.value("mysql_replication_using_gtid", channel="upstream", source_host="127.0.0.1") == 1
    assert [s.labels["domain"] for s in samples.series("mysql_replication_gtid_transactions_behind")] == ["0"]
    replica.execute("STOP SLAVE 'upstream' SQL_THREAD")
    try:
        for _ in range(5):  # five transactions (autocommit)
            primary.execute("INSERT INTO replicated.gtid_t VALUES ()")
        wait_until(lambda: (gtid_behind(replica) or 0) >= 5, timeout=20, message="the I/O thread received five")
        assert gtid_behind(replica) == 5  # received, none applied
    finally:
        replica.execute("START SLAVE 'upstream' SQL_THREAD")
    wait_until(lambda: gtid_behind(replica) == 0, timeout=20, message="the replica applied them")
    assert not scrape(primary).series("mysql_replication_gtid_transactions_behind")


def test_heartbeat_lag_and_a_stopped_sql_thread_making_it_grow(pair):
    primary, replica = pair
    primary.execute(HEARTBEAT_TABLE)
    beat(primary)
    wait_until(lambda: (lambda lag: lag is not None and lag < 2)(heartbeat_lag(replica)), timeout=20,
               message="the heartbeat replicated")
    last = replica.execute("SELECT ts FROM replicated.heartbeat WHERE server_id = 1")[0][0]
    newest = datetime.fromisoformat(last).replace(tzinfo=timezone.utc).timestamp()  # the replica's newest beat
    replica.execute("STOP SLAVE 'upstream' SQL_THREAD")
    try:
        wait_until(lambda: scrape(replica).value("mysql_replication_sql_thread_running", channel="upstream") == 0,
                   timeout=20, message="the SQL thread stopped")
        beat(primary)  # the source goes on beating; the replica does not apply them
        before = time.time()
        lag = wait_until(lambda: (lambda v: v if v is not None and v > 1.0 else None)(heartbeat_lag(replica)),
                         timeout=20, message="the heartbeat lag growing")
        after = time.time()
        assert before - newest - 0.01 <= lag <= after - newest + 0.01  # now on the replica - its newest beat
        samples = scrape(replica, HEARTBEAT)
        assert samples.value("mysql_replication_heartbeat_lag_seconds", channel="upstream") > lag
        assert not samples.series("mysql_replication_lag_seconds", channel="upstream")  # Seconds_Behind: unknown
    finally:
        replica.execute("START SLAVE 'upstream' SQL_THREAD")
    beat(primary)
    wait_until(lambda: (lambda v: v is not None and v < 1.0)(heartbeat_lag(replica)), timeout=20,
               message="the heartbeat lag back down once the SQL thread runs")
    assert not scrape(primary, HEARTBEAT).series("mysql_replication_heartbeat_lag_seconds")  # a primary: none
    text = scrape_text(replica, HEARTBEAT)
    assert "mysql_replication_heartbeat_lag_seconds{" in text and "mysql_replication_gtid_transactions_behind{" in text
    assert promtool_check_metrics(text) == ""


@pytest.mark.parametrize("replication, key", [
    ({"heartbeat_table": "replicated.no_such_table"}, "replication.heartbeat_table"),
    ({"heartbeat_table": "replicated.heartbeat", "heartbeat_column": "nope"}, "replication.heartbeat_column"),
    ({"heartbeat_table": "replicated.heartbeat", "server_id_column": "nope"}, "replication.server_id_column"),
])
def test_a_missing_heartbeat_table_or_column_fails_the_collector_naming_the_key(pair, replication, key):
    primary, replica = pair
    primary.execute(HEARTBEAT_TABLE)
    wait_until(lambda: replica.execute("SHOW TABLES IN replicated LIKE 'heartbeat'"), timeout=20,
               message="the heartbeat table replicated")
    outcomes = []
    samples = scrape(replica, replication, outcomes)
    assert samples.value("dbperf_collector_success", collector="replication") == 0
    (outcome,) = outcomes
    assert outcome.supported and outcome.error.startswith(key + ": "), outcome.error


def test_a_heartbeat_that_is_not_a_time_fails_the_collector_naming_the_column(pair):
    primary, replica = pair
    primary.execute(HEARTBEAT_TABLE)
    primary.execute("REPLACE INTO replicated.heartbeat (ts, server_id) VALUES ('yesterday', 77)")  # not a source
    primary.execute("REPLACE INTO replicated.heartbeat (ts, server_id) VALUES ('soon', @@server_id)")
    try:
        wait_until(lambda: replica.execute("SELECT 1 FROM replicated.heartbeat WHERE ts = 'soon'"), timeout=20,
                   message="the bad heartbeat replicated")
        outcomes = []
        assert scrape(replica, HEARTBEAT, outcomes).value("dbperf_collector_success", collector="replication") == 0
        assert outcomes[0].error.startswith("replication.heartbeat_column: replicated.heartbeat.ts holds 'soon', "
                                            "not a time"), outcomes[0].error
    finally:
        beat(primary)
    # the row of a server no channel replicates from is not read: 'yesterday' fails nothing
    wait_until(lambda: heartbeat_lag(replica) is not None, timeout=20, message="a good heartbeat again")
