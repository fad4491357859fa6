"""kind: mysql on the one scrape engine, over real HTTP, against a real throwaway MariaDB and its
faults: down (mysql_up 0), wrong password (one log line, no password), a server that accepts TCP
and never answers (bounded by the deadline), a collector past its timeout (killed, the others kept)."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from conftest import MYSQL_PASSWORD, Samples, mysql_dsn
from exporter.config import parse
from exporter.pgcluster import free_port
from exporter.scrape import TargetScraper

pytestmark = pytest.mark.pg


def mysql_config(dsn: str, **target):
    return parse({"targets": [{"name": "my", "kind": "mysql", "dsn": dsn, **target}], "listen": "127.0.0.1:0",
                  "scrape_timeout": 3}, source="test-config")


def test_served_over_http_with_the_engines_metrics(serve, mariadb):
    served = serve(mysql_config(mysql_dsn(mariadb)))
    samples = served.metrics()
    assert samples.value("mysql_up", target="my") == 1
    assert samples.value("dbperf_collector_success", target="my", collector="global_status") == 1
    assert samples.value("dbperf_target_connections", target="my") == 1  # one session per target
    assert samples.value("dbperf_scrapes_total", target="my") == 1
    assert not samples.has("pg_up")
    served.metrics()
    (threads,), = mariadb.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE user = 'dbperf'")
    assert threads == 1  # the second scrape reused the session


def test_server_down_is_mysql_up_0(serve, caplog):
    served = serve(mysql_config(f"mysql://dbperf:{MYSQL_PASSWORD}@127.0.0.1:{free_port()}/"))
    with caplog.at_level(logging.WARNING, logger="dbperf"):
        samples = served.metrics()
    assert samples.value("mysql_up", target="my") == 0
    assert samples.value("dbperf_collector_success", target="my", collector="server") == 0
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "Can't connect" in text and MYSQL_PASSWORD not in text


def test_wrong_password_is_one_line_without_the_password(mariadb, caplog):
    secret = "not-" + MYSQL_PASSWORD
    scraper = TargetScraper(mysql_config(mysql_dsn(mariadb, password=secret)).targets[0])
    try:
        with caplog.at_level(logging.WARNING, logger="dbperf"):
            samples = Samples(scraper.scrape(3.0).encode().decode())
        assert samples.value("mysql_up") == 0
        assert "Access denied for user 'dbperf'" in scraper.failure and "\n" not in scraper.failure
        lines = [r.getMessage() for r in caplog.records if "collector=up" in r.getMessage()]
        assert len(lines) == 1 and "Access denied" in lines[0]
        for text in (scraper.failure, *lines, samples.text):
            assert secret not in text and MYSQL_PASSWORD not in text
    finally:
        scraper.close()


def test_a_server_that_never_answers_is_bounded_by_the_deadline():
    with socket.socket() as listener:  # accepts TCP (the kernel's backlog), never says a word
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        config = mysql_config(f"mysql://dbperf:pw@127.0.0.1:{listener.getsockname()[1]}/", connect_timeout=10)
        scraper = TargetScraper(config.targets[0])
        try:
            for _ in range(2):  # the second scrape finds the first connect still waiting
                started = time.monotonic()
                samples = Samples(scraper.scrape(1.0).encode().decode())
                assert time.monotonic() - started < 1.6
                assert samples.value("mysql_up") == 0
                assert "did not answer" in scraper.failure or "does not answer" in scraper.failure
        finally:
            scraper.close()


def test_a_collector_past_its_timeout_is_killed_and_the_others_kept(mariadb):
    from exporter.collector import Collector
    from exporter.metrics import Family

    class Slow(Collector):
        def collect(self, conn, ctx, timeout):
            conn.query("SELECT SLEEP(30)", timeout)
            return [Family("test_never", "gauge", "never")]

    config = mysql_config(mysql_dsn(mariadb))
    from exporter.mysql.kind import MYSQL

    collectors = (*MYSQL.collectors(), Slow(name="slow", default_timeout=0.4))
    scraper = TargetScraper(config.targets[0], collectors)
    try:
        started = time.monotonic()
        samples = Samples(scraper.scrape(5.0).encode().decode())
        assert time.monotonic() - started < 4.0  # not the 30 s of the SLEEP: the timeout, then the KILL
        assert samples.value("dbperf_collector_success", collector="slow") == 0
        assert samples.value("dbperf_collector_success", collector="global_status") == 1
        assert samples.value("mysql_up") == 1
        assert "KILL QUERY" in next(o.error for o in scraper.outcomes if o.collector == "slow")
        assert not mariadb.execute("SELECT 1 FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(30)%'")
    finally:
        scraper.close()
