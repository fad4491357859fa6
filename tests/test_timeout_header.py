"""Any X-Prometheus-Scrape-Timeout-Seconds gives a 200 with the target's series within a bounded
time: the configured ``max_scrape_timeout`` (issue 13, item 6; every other value is in
test_webconfig.py's test of parse_budget). Before, the clamp was a constant
300 s, so a huge header let a slow collector hold the scrape for as long as it ran."""

from __future__ import annotations

import time

import pytest

from conftest import Samples, Served, SleepCollector, make_config
from exporter.registry import all_collectors
from exporter.server import Exporter

pytestmark = pytest.mark.pg

MAXIMUM = 2.0     # max_scrape_timeout
SLEEP = 6.0       # a collector that takes longer than that
MARGIN = 1.5      # rendering and a loaded machine


@pytest.fixture
def served(pg):
    config = make_config(pg, host_metrics=False, scrape_timeout="1s", max_scrape_timeout=f"{MAXIMUM}s")
    s = Served(Exporter(config, collectors=all_collectors() + (SleepCollector("sleepy", SLEEP, optional=False),)))
    yield s
    s.close()


@pytest.mark.parametrize("header", ["inf", "1e400", "garbage", "99999999999999999999", "3600"])
def test_every_header_value_answers_200_within_the_maximum(served, header):
    start = time.monotonic()
    status, text = served.get("/probe?target=main", headers={"X-Prometheus-Scrape-Timeout-Seconds": header},
                              timeout=SLEEP + 10)
    took = time.monotonic() - start
    assert status == 200, text[:300]
    samples = Samples(text)
    assert samples.value("pg_up", target="main") == 1
    assert samples.value("dbperf_collector_success", target="main", collector="sleepy", datname="") == 0
    assert took < MAXIMUM + MARGIN, f"header {header[:20]!r}: {took:.2f}s against max_scrape_timeout {MAXIMUM:g}s"
    # the next scrape joins the stuck one or starts afresh, and answers by its own deadline too
    start = time.monotonic()
    status, _ = served.get("/probe?target=main", headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"})
    assert status == 200 and time.monotonic() - start < 1.5 + MARGIN
