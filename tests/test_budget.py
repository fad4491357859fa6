"""The scrape budget: optional collectors whose last run would not fit before the deadline are
skipped (and said so), core collectors always run, and a TTL cache is served as rendered text."""

from conftest import Samples, SleepCollector, make_config
from exporter.registry import all_collectors
from exporter.server import Exporter
import pytest

pytestmark = pytest.mark.pg


def probe(exporter, budget):
    return Samples(exporter.probe("main", budget).decode())


def test_optional_collector_that_does_not_fit_is_skipped_and_served_from_cache(pg):
    # "slow" is cached for 1 ms (so it is stale on the second scrape), "slow_uncached" not at all
    slow = (SleepCollector("slow", 0.6, ttl=0.001), SleepCollector("slow_uncached", 0.6))
    exporter = Exporter(make_config(pg), collectors=all_collectors() + slow)
    try:
        first = probe(exporter, 5.0)
        assert first.value("test_slow_value") == 42
        assert first.value("dbperf_collector_skipped", collector="slow") == 0
        second = probe(exporter, 0.4)
        assert second.value("dbperf_collector_skipped", collector="slow") == 1
        assert second.value("dbperf_collector_success", collector="slow") == 1
        assert second.value("dbperf_collector_cache_age_seconds", collector="slow") > 0
        assert second.value("test_slow_value") == 42  # the last good value, with its age
        # without a cache there is nothing to serve: not run, and said so
        assert second.value("dbperf_collector_skipped", collector="slow_uncached") == 1
        assert second.value("dbperf_collector_success", collector="slow_uncached") == 0
        assert not second.has("test_slow_uncached_value")
        # the core collectors ran in full
        for core in ("server", "stat_database", "activity", "locks"):
            assert second.value("dbperf_collector_success", collector=core) == 1
            assert second.value("dbperf_collector_skipped", collector=core) == 0
        assert second.value("dbperf_scrape_duration_seconds") < 0.4
    finally:
        exporter.close()


def size_query_calls(pg) -> int:
    rows = pg.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements "
                      "WHERE query LIKE '%pg_database_size(oid)%' AND query NOT LIKE '%pg_stat_statements%'")
    return int(rows[0][0])


def test_ttl_cache_serves_the_same_text_without_running_queries(pg):
    exporter = Exporter(make_config(pg, {"collectors": {"database_size": {"ttl": "1h"}}}))
    try:
        first = probe(exporter, 5.0)
        calls = size_query_calls(pg)
        assert calls >= 1
        second = probe(exporter, 5.0)
        assert size_query_calls(pg) == calls  # served from the cache: no query reached the server
        assert second.value("dbperf_collector_cache_age_seconds", collector="database_size") > 0
        assert second.value("dbperf_collector_success", collector="database_size") == 1
        assert (second.value("pg_database_size_bytes", datname="postgres")
                == first.value("pg_database_size_bytes", datname="postgres"))
    finally:
        exporter.close()
