"""The scrape engine's sessions on a real PostgreSQL: no ``SET statement_timeout`` per scrape
(issue 16: each session's timeout is set once, at connect, to the longest of its collectors'),
and a collector with a shorter timeout is still cut at its own, by the client, on a session that
stays open."""

from __future__ import annotations

import time

import pytest

from conftest import Samples
from exporter.collector import CLUSTER, Collector
from exporter.config import parse
from exporter.metrics import Family
from exporter.postgres.connection import CANCEL_GRACE
from exporter.registry import collectors_for
from exporter.scrape import TargetScraper

pytestmark = pytest.mark.pg


def set_calls(pg) -> float:
    """``SET statement_timeout`` statements the server ran, as pg_stat_statements counts them."""
    return pg.execute("SELECT coalesce(sum(calls), 0)::float8 FROM pg_stat_statements "
                      "WHERE query ILIKE 'SET statement_timeout%'")[0][0]


def test_no_set_is_sent_after_the_warm_up_scrape(pg):
    # collectors of several timeouts on the target's main session (the probe's is 2 s): a session
    # whose timeout followed each collector's would send a SET for each change, every scrape
    target = parse({"targets": [{"name": "sets", "dsn": pg.dsn(), "databases": {"discover": False},
                                 "collectors": {"settings": {"timeout": "3s", "ttl": 0},
                                                "server": {"timeout": "4s"}, "activity": {"timeout": "1500ms"},
                                                "live_queries": {"timeout": "2500ms"}}}]}).targets[0]
    scraper = TargetScraper(target, collectors_for(target))
    try:
        before = set_calls(pg)
        warm = Samples(scraper.scrape(10).text())
        assert warm.value("pg_up") == 1
        assert not [s.labels for s in warm.series("dbperf_collector_success") if s.value != 1]
        warmed = set_calls(pg)
        assert warmed > before  # the connects' own SET: the count sees them
        sessions = [scraper.main, *scraper.conns.values()]
        for _ in range(3):
            samples = Samples(scraper.scrape(10).text())
            assert not [s.labels for s in samples.series("dbperf_collector_success") if s.value != 1]
        assert set_calls(pg) == warmed
        assert sum(c.sets for c in sessions) == 0 and all(c.connects == 1 for c in sessions)
    finally:
        scraper.close()


class Sleeps(Collector):
    def collect(self, conn, ctx, timeout):
        (_, rows), = conn.query(self.sql, timeout)
        family = Family(f"test_{self.name}_value", "gauge", "test")
        family.add((), rows[0][0])
        return [family]


def sleeps(name: str, sql: str, timeout: float) -> Sleeps:
    c = Sleeps(name=name, scope=CLUSTER, default_timeout=timeout, optional=False)
    c.sql = sql
    return c


def test_a_collector_is_cut_at_its_own_timeout_on_a_session_with_a_longer_one(pg):
    target = parse({"targets": [{"name": "cut", "dsn": pg.dsn(), "databases": {"discover": False}}]}).targets[0]
    slow = sleeps("slow", "SELECT pg_sleep(5)", 0.5)
    scraper = TargetScraper(target, (sleeps("long", "SELECT 7", 4.0), slow, sleeps("after", "SELECT 8", 1.0)))
    try:
        start = time.monotonic()
        samples = Samples(scraper.scrape(10).text())
        took = time.monotonic() - start
        assert pg.execute("SELECT 1")  # the server is fine
        assert took < 0.5 + CANCEL_GRACE + 1.5, f"took {took:.2f}s"  # not the session's 4 s, nor the 10 s budget
        assert samples.value("dbperf_collector_success", collector="slow") == 0
        assert samples.value("dbperf_collector_success", collector="after") == 1
        assert samples.value("test_long_value") == 7 and samples.value("test_after_value") == 8
        outcome = next(o for o in scraper.outcomes if o.collector == "slow")
        assert "ran past its timeout of 0.5s; it was cancelled" in outcome.error, outcome.error
        (_, rows), = scraper.main.query("SHOW statement_timeout", 1)
        assert rows == [("4s",)]  # the longest of the session's collectors, set at connect
        assert scraper.main.connects == 1 and scraper.main.sets == 0  # the cancel left the session usable
    finally:
        scraper.close()
