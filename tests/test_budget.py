"""The scrape budget: optional collectors whose last run would not fit before the deadline are
skipped (and said so), core collectors always run, and a TTL cache is served as rendered text."""

from conftest import Samples, make_config
from exporter.collector import CLUSTER, Collector
from exporter.metrics import Family
from exporter.registry import all_collectors
from exporter.server import Exporter


class SlowCollector(Collector):
    """A real query that takes a known time."""

    def __init__(self, name, seconds):
        super().__init__(name=name, scope=CLUSTER, optional=True, default_timeout=5)
        self.seconds = seconds

    def collect(self, conn, ctx, timeout):
        (_, rows), = conn.query(f"SELECT pg_sleep({self.seconds}), 42", timeout)
        fam = Family(f"test_{self.name}_value", "gauge", "test")
        fam.add((), rows[0][1])
        return [fam]


def probe(exporter, budget):
    return Samples(exporter.probe("main", budget).decode())


def test_optional_collector_that_does_not_fit_is_skipped_and_served_from_cache(pg):
    exporter = Exporter(make_config(pg), collectors=all_collectors() + (SlowCollector("slow", 0.6),))
    try:
        first = probe(exporter, 5.0)
        assert first.value("test_slow_value") == 42
        assert first.value("dbperf_collector_skipped", collector="slow") == 0
        second = probe(exporter, 0.4)
        assert second.value("dbperf_collector_skipped", collector="slow") == 1
        assert second.value("dbperf_collector_success", collector="slow") == 1
        assert second.value("dbperf_collector_cache_age_seconds", collector="slow") > 0
        assert second.value("test_slow_value") == 42  # the last good value, with its age
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
