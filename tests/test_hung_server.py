"""A hung database never breaks the scrape deadline (issue 13, item 1).

The test owns a throwaway cluster and freezes parts of it with SIGSTOP: dbperf's own backend
processes (found in pg_stat_activity by application_name through a separate superuser session),
and the postmaster. Whatever is frozen, /probe and /metrics answer within the deadline Prometheus
announces with ``pg_up 0`` and the failed collectors, /readyz tells, concurrent scrapes share one
collection instead of piling up, and after SIGCONT the scrapes recover on their own.
"""

from __future__ import annotations

import json
import threading
import time

import psycopg
import pytest

from conftest import Samples, Served, wait_until
from freezing import frozen, postmaster_pid
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.server import Exporter

pytestmark = pytest.mark.pg

HEADER = {"X-Prometheus-Scrape-Timeout-Seconds": "3"}
DEADLINE = 3.0   # what Prometheus waits (the header); dbperf's budget is 2.5 s (offset 0.5 s)
MARGIN = 0.5     # for a loaded machine: the scrape ends at its budget, 0.5 s before the deadline
CORE = ("stat_database", "activity", "locks", "server")


@pytest.fixture(scope="module")
def cluster():
    with Cluster() as c:
        c.psql("CREATE EXTENSION pg_stat_statements")
        c.psql("CREATE DATABASE hung_second")
        yield c


@pytest.fixture
def served(cluster):
    config = parse({"listen": "127.0.0.1:0", "host_metrics": False,
                    "targets": [{"name": "main", "dsn": cluster.dsn("postgres"), "connect_timeout": "6s"}]},
                   source="hung-test")
    s = Served(Exporter(config))
    yield s
    s.close()


def dbperf_backends(cluster) -> list[int]:
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as admin:
        rows = admin.execute("SELECT pid FROM pg_stat_activity WHERE application_name = 'dbperf'").fetchall()
    return [pid for pid, in rows]


def timed_get(served: Served, path: str) -> tuple[int, str, float]:
    start = time.monotonic()
    status, text = served.get(path, headers=HEADER, timeout=15)
    return status, text, time.monotonic() - start


def concurrently(served: Served, paths: list[str]) -> list[tuple[int, str, float]]:
    results: list = [None] * len(paths)

    def one(i, path):
        try:
            results[i] = timed_get(served, path)
        except Exception as exc:  # a client timeout: the scrape did not answer
            results[i] = (0, repr(exc), 15.0)

    threads = [threading.Thread(target=one, args=(i, p)) for i, p in enumerate(paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def dbperf_threads() -> int:
    """dbperf's own worker threads: scrape flights, workers, connects, cancels, watchdogs."""
    return sum(1 for t in threading.enumerate() if t.name.startswith("dbperf-") and t.name != "dbperf-http")


class ThreadPeak:
    """The most dbperf threads seen while the block runs (sampled every 20 ms)."""

    def __init__(self):
        self.peak = dbperf_threads()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, dbperf_threads())

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def assert_down_in_time(result, what: str) -> Samples:
    status, text, took = result
    assert status == 200, f"{what}: {status} {text[:300]}"
    assert took < DEADLINE + MARGIN, f"{what} took {took:.2f}s against a {DEADLINE:g}s deadline"
    samples = Samples(text)
    assert samples.value("pg_up", target="main") == 0, what
    for collector in CORE:
        assert samples.value("dbperf_collector_success", target="main", collector=collector) == 0, (what, collector)
    assert not samples.has("pg_stat_database_xact_commit_total")
    return samples


def assert_recovers(served: Served) -> None:
    def healthy():
        samples = served.metrics("/probe?target=main", headers=HEADER)
        failed = [s.labels["collector"] for s in samples.series("dbperf_collector_success") if s.value != 1]
        return samples.value("pg_up", target="main") == 1 and not failed
    scrapes = served.exporter.scrapers["main"].scrapes
    wait_until(healthy, timeout=20, interval=0.3, message="pg_up 1 and every collector back after SIGCONT")
    assert served.exporter.scrapers["main"].scrapes - scrapes <= 5, "recovery took more than a few scrapes"


def test_frozen_backends_probe_and_metrics_answer_within_the_deadline(cluster, served):
    assert served.metrics("/probe?target=main").value("pg_up", target="main") == 1  # sessions open
    pids = dbperf_backends(cluster)
    assert len(pids) >= 2  # the target's session and a per-database one at least
    with frozen(*pids):
        probe, metrics = concurrently(served, ["/probe?target=main", "/metrics"])
        assert_down_in_time(probe, "/probe")
        assert_down_in_time(metrics, "/metrics")  # pg_up is there (it was missing)
        ready = json.loads(served.get("/readyz")[1])
        assert ready["main"]["up"] is False
        print(f"frozen backends: /probe {probe[2]:.2f}s, /metrics {metrics[2]:.2f}s; deadline {DEADLINE:g}s, "
              f"budget {served.exporter.budget(HEADER['X-Prometheus-Scrape-Timeout-Seconds']):g}s")
    assert_recovers(served)
    assert json.loads(served.get("/readyz")[1])["main"]["up"] is True


def test_frozen_server_scrapes_share_one_collection_and_threads_stay_bounded(cluster, served):
    """Backends and postmaster frozen: the stuck query, a cancel that never returns (the cancel
    request goes to the postmaster) and a connect that hangs, three rounds in a row."""
    scraper = served.exporter.scrapers["main"]
    assert served.metrics("/probe?target=main").value("pg_up", target="main") == 1
    sessions = len(dbperf_backends(cluster))
    idle_threads = dbperf_threads()
    started = scraper.scrapes
    rounds, per_round = 3, 8
    with frozen(*dbperf_backends(cluster), postmaster_pid(cluster)), ThreadPeak() as threads:
        for n in range(rounds):
            paths = ["/probe?target=main"] * (per_round - 2) + ["/metrics"] * 2
            results = concurrently(served, paths)
            for path, result in zip(paths, results):
                assert_down_in_time(result, f"round {n + 1}: {path}")
            print(f"frozen server, round {n + 1}: slowest of {per_round} scrapes "
                  f"{max(r[2] for r in results):.2f}s against {DEADLINE:g}s")
    # each round of concurrent scrapes was one collection, not one per request
    assert scraper.scrapes - started <= rounds + 1, f"{scraper.scrapes - started} collections"
    # on top of the idle ones: one flight, the target's workers, one watchdog, a connect and a
    # cancel per session at most (not a thread per scrape)
    bound = 1 + served.exporter.config.targets[0].max_connections + 1 + 2 * (sessions + 1)
    grew = threads.peak - idle_threads
    assert grew <= bound, f"{grew} more dbperf threads during the freeze (bound {bound})"
    print(f"frozen server: {grew} more dbperf threads at most (bound {bound}) "
          f"for {rounds * per_round} scrapes in {scraper.scrapes - started} collections")
    assert_recovers(served)
    wait_until(lambda: dbperf_threads() <= idle_threads + 2, timeout=15,
               message="the connect and cancel threads of the freeze to end")


def test_frozen_postmaster_first_scrape_is_bounded_by_its_budget(cluster, served):
    """No session yet, the postmaster frozen: the connect cannot finish (connect_timeout is 6 s,
    longer than the 2.5 s budget)."""
    with frozen(postmaster_pid(cluster)):
        result = timed_get(served, "/probe?target=main")
        assert_down_in_time(result, "first /probe")
        budget = served.exporter.budget(HEADER["X-Prometheus-Scrape-Timeout-Seconds"])
        assert result[2] < budget + MARGIN, f"first scrape took {result[2]:.2f}s against a {budget:g}s budget"
        print(f"frozen postmaster: first scrape {result[2]:.2f}s against a {budget:g}s budget")
    assert_recovers(served)
