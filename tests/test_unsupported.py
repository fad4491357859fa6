"""A collector that cannot run on the server (its version, a missing view) never reports success:
``dbperf_collector_supported 0``, no success or failure series, one log line; a collector whose SQL
is wrong for the server (a missing column) still fails, visibly. Real PostgreSQL, real queries."""

from __future__ import annotations

import logging

import pytest

from conftest import Samples
from exporter.collector import DATABASE, Collector
from exporter.config import parse
from exporter.metrics import Family
from exporter.scrape import TargetScraper

pytestmark = pytest.mark.pg

VIEW = "dbperf_test_unsupported_view"


class Reads(Collector):
    """A collector reading one value with ``sql``."""

    def __init__(self, name: str, sql: str, **kw):
        super().__init__(name=name, families=(f"test_{name}_value",), **kw)
        self.sql = sql

    def collect(self, conn, ctx, timeout):
        (_, rows), = conn.query(self.sql, timeout)
        family = Family(f"test_{self.name}_value", "gauge", "test")
        family.add((), rows[0][0])
        return [family]


def scraper_for(pg, *collectors) -> TargetScraper:
    target = parse({"targets": [{"name": "t", "dsn": pg.dsn()}]}, source="test").targets[0]
    return TargetScraper(target, collectors)


def scrape(scraper) -> Samples:
    return Samples(scraper.scrape(10).encode().decode())


def self_series(samples: Samples, collector: str) -> dict:
    return {s.name: s.value for s in samples.samples
            if s.name.startswith("dbperf_collector_") and s.labels.get("collector") == collector}


def test_a_collector_for_a_newer_postgresql_reports_unsupported_once(pg, caplog):
    future = Reads("future", "SELECT 1", min_version=990000)
    per_db = Reads("future_db", "SELECT 1", min_version=990000, scope=DATABASE)
    scraper = scraper_for(pg, future, per_db, Reads("now", "SELECT 7"))
    try:
        with caplog.at_level(logging.INFO, logger="dbperf"):
            first, second = scrape(scraper), scrape(scraper)
    finally:
        scraper.close()
    for samples in (first, second):
        assert self_series(samples, "future") == {"dbperf_collector_supported": 0}
        assert samples.value("dbperf_collector_supported", collector="future_db", datname="postgres") == 0
        assert not samples.has("dbperf_collector_success", collector="future_db")
        assert samples.value("dbperf_collector_supported", collector="now") == 1
        assert samples.value("dbperf_collector_success", collector="now") == 1
        assert not samples.has("test_future_value")
    lines = [r.getMessage() for r in caplog.records if "unsupported" in r.getMessage()]
    assert len([m for m in lines if "collector=future " in m]) == 1, lines
    assert "needs PostgreSQL >= 99" in next(m for m in lines if "collector=future " in m)
    assert scraper.unsupported[("future", "")] == "needs PostgreSQL >= 99"


def test_a_missing_view_is_unsupported_until_it_exists_and_a_missing_column_fails(pg, caplog):
    pg.execute(f"DROP VIEW IF EXISTS {VIEW}")
    view = Reads("view", f"SELECT v FROM {VIEW}")
    column = Reads("column", "SELECT no_such_column FROM pg_stat_database LIMIT 1")
    scraper = scraper_for(pg, view, column)
    try:
        with caplog.at_level(logging.INFO, logger="dbperf"):
            missing, again = scrape(scraper), scrape(scraper)
        pg.execute(f"CREATE VIEW {VIEW} AS SELECT 42 AS v")
        there = scrape(scraper)
    finally:
        scraper.close()
        pg.execute(f"DROP VIEW IF EXISTS {VIEW}")
    for samples in (missing, again):
        assert self_series(samples, "view") == {"dbperf_collector_supported": 0}
        # a column the server lacks is the collector's bug: a failure, counted and alerted on
        assert samples.value("dbperf_collector_supported", collector="column") == 1
        assert samples.value("dbperf_collector_success", collector="column") == 0
    assert again.value("dbperf_collector_errors_total", collector="column") == 2
    unsupported = [r.getMessage() for r in caplog.records if "collector=view" in r.getMessage()]
    assert len(unsupported) == 1 and f'relation "{VIEW}" does not exist' in unsupported[0], unsupported
    assert there.value("dbperf_collector_supported", collector="view") == 1
    assert there.value("dbperf_collector_success", collector="view") == 1
    assert there.value("test_view_value") == 42


def test_an_unreachable_server_says_nothing_about_support(pg):
    target = parse({"targets": [{"name": "t", "dsn": "host=127.0.0.1 port=1 dbname=x user=x",
                                 "connect_timeout": 1}]}, source="test").targets[0]
    scraper = TargetScraper(target, (Reads("now", "SELECT 1"),))
    try:
        samples = scrape(scraper)
    finally:
        scraper.close()
    assert samples.value("pg_up") == 0
    assert samples.value("dbperf_collector_success", collector="now") == 0
    assert not samples.has("dbperf_collector_supported")
