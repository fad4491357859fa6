"""exporter.scrape's decisions without a database, on a fake clock: the TTL cache, the budget
(skip a collector whose last run would not fit, serve its last result with its age), failures,
the stuck state a late caller gets, and single-flight sharing. Collectors here compute their
families in Python (they send no SQL), so nothing is faked but the clock. The scrape against a
real server is tested in test_budget.py, test_faults.py and test_hung_server.py."""

from __future__ import annotations

import threading
import time

import pytest

from exporter.collector import CLUSTER, DATABASE, Collector, ServerInfo
from exporter.config import Target
from exporter.metrics import Family
from exporter.scrape import CACHED, MIN_TIME_LEFT, RUN, SKIP, STALE, CacheEntry, Job, TargetScraper, phase, plan_run
from exporter.singleflight import SingleFlight

pytestmark = pytest.mark.fast

SERVER = ServerInfo(version=160000, in_recovery=False, databases=("postgres",), dbname="postgres")
SECRET = "Scrape-Test-Pw-3"


class Clock:
    def __init__(self, now: float = 500.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Computed(Collector):
    """A collector that takes ``takes`` seconds on the fake clock and counts its runs."""

    def collect(self, conn, ctx, timeout):
        self.runs += 1
        self.clock.now += self.takes
        if self.error:
            raise RuntimeError(self.error)
        family = Family(f"test_{self.name}_runs", "gauge", "test")
        family.add((), self.runs)
        return [family]


def computed(clock: Clock, name: str = "computed", takes: float = 0.1, optional: bool = True, error: str = ""):
    c = Computed(name=name, scope=CLUSTER, optional=optional)
    c.clock, c.takes, c.runs, c.error = clock, takes, 0, error
    return c


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make(clock):
    made = []

    def scraper(*collectors) -> TargetScraper:
        s = TargetScraper(Target(name="t", dsn=f"host=127.0.0.1 port=1 password={SECRET}"), collectors, clock=clock)
        made.append(s)
        return s

    yield scraper
    for s in made:
        s.close()


def run(scraper: TargetScraper, collector, ttl: float, deadline: float):
    job = Job("postgres", scraper.main, [collector])
    return scraper._run_collector(collector, job, SERVER, ttl, 2.0, deadline)


ENTRY = CacheEntry(rendered=None, at=100.0, duration=1.0)


@pytest.mark.parametrize("entry, ttl, now, remaining, last, optional, decision", [
    (ENTRY, 30, 110, 5, 1, True, CACHED),      # younger than its ttl
    (ENTRY, 30, 128.9, 0, 1, True, CACHED),    # ... even with no time left
    (ENTRY, 30, 129.1, 5, 1, True, RUN),       # due within EARLY: refreshed in this scrape, not the next
    (ENTRY, 5, 104.6, 5, 1, True, RUN),        # EARLY is at most a tenth of the ttl
    (ENTRY, 5, 104.4, 5, 1, True, CACHED),
    (ENTRY, 30, 130, 5, 1, True, RUN),         # expired
    (ENTRY, 0, 101, 5, 1, True, RUN),          # ttl 0: never cached
    (None, 30, 110, 5, 1, True, RUN),
    (None, 0, 0, 5, 6, True, SKIP),            # its last run took longer than the time left
    (ENTRY, 10, 130, 5, 6, True, STALE),       # ... its last result is served instead
    (None, 0, 0, 5, 6, False, RUN),            # a core collector runs all the same
    (None, 0, 0, MIN_TIME_LEFT / 2, 0, False, SKIP),  # no time left at all: nothing starts
    (ENTRY, 10, 130, MIN_TIME_LEFT / 2, 0, False, STALE),
    (None, 0, 0, 5, 5, True, RUN),             # exactly fits
])
def test_plan_run(entry, ttl, now, remaining, last, optional, decision):
    assert plan_run(entry, ttl, now, remaining, last, optional) == decision


@pytest.mark.parametrize("now, shift, decision", [
    (119.0, 0.0, CACHED),   # slot [90, 120) of a 30 s TTL, as the entry (collected at 100)
    (120.0, 0.0, RUN),      # a new slot: refreshed although only 20 s old
    (104.0, 25.0, CACHED),  # shifted by 25 s: slot [95, 125)
    (125.5, 25.0, RUN),
    (124.5, 25.0, CACHED),
])
def test_plan_run_refreshes_a_database_collector_in_the_first_scrape_of_a_new_slot(now, shift, decision):
    assert plan_run(ENTRY, 30, now, 5, 1, True, shift) == decision


def test_ttl_cache_serves_the_last_result_with_its_age(clock, make):
    c = computed(clock, takes=0.2)
    scraper = make(c)
    first = run(scraper, c, ttl=30, deadline=clock() + 10)
    assert first.success and c.runs == 1 and first.cache_age == 0 and first.duration == pytest.approx(0.2)
    clock.now += 10
    second = run(scraper, c, ttl=30, deadline=clock() + 10)
    assert second.success and c.runs == 1  # not run again
    assert second.cache_age == pytest.approx(10.2) and second.rendered is first.rendered
    clock.now += 20
    third = run(scraper, c, ttl=30, deadline=clock() + 10)
    assert c.runs == 2 and third.cache_age == 0 and third.rendered is not first.rendered


def test_uncached_collector_runs_every_scrape(clock, make):
    c = computed(clock)
    scraper = make(c)
    for n in range(1, 4):
        assert run(scraper, c, ttl=0, deadline=clock() + 10).success and c.runs == n
    assert scraper.cache == {}


def test_budget_skips_an_optional_collector_whose_last_run_would_not_fit(clock, make):
    cached, uncached = computed(clock, "cached", takes=3.0), computed(clock, "uncached", takes=3.0)
    scraper = make(cached, uncached)
    run(scraper, cached, ttl=1, deadline=clock() + 10)
    run(scraper, uncached, ttl=0, deadline=clock() + 10)
    clock.now += 5  # the cache expired (collected 11 s ago: 3 + 3 + 5); 2 s left, the last run took 3 s
    stale = run(scraper, cached, ttl=1, deadline=clock() + 2)
    assert stale.skipped and stale.success and stale.cache_age == pytest.approx(11) and cached.runs == 1
    skipped = run(scraper, uncached, ttl=0, deadline=clock() + 2)
    assert skipped.skipped and not skipped.success and uncached.runs == 1
    assert "would not fit before the scrape deadline" in skipped.error
    assert run(scraper, uncached, ttl=0, deadline=clock() + 3.5).success and uncached.runs == 2  # fits again


def test_core_collector_runs_whatever_its_last_duration(clock, make):
    core = computed(clock, "core", takes=3.0, optional=False)
    scraper = make(core)
    run(scraper, core, ttl=0, deadline=clock() + 10)
    outcome = run(scraper, core, ttl=0, deadline=clock() + 1)
    assert outcome.success and not outcome.skipped and core.runs == 2


def test_failure_is_counted_timed_and_scrubbed(clock, make):
    c = computed(clock, "failing", takes=0.4, error=f"boom with {SECRET} inside\nsecond line")
    scraper = make(c)
    outcome = run(scraper, c, ttl=30, deadline=clock() + 10)
    assert not outcome.success and outcome.duration == pytest.approx(0.4)
    assert SECRET not in outcome.error and outcome.error == "boom with *** inside second line"
    assert scraper.errors[("failing", "")] == 1 and ("failing", "") not in scraper.cache
    run(scraper, c, ttl=30, deadline=clock() + 10)
    assert scraper.errors[("failing", "")] == 2 and c.runs == 2  # a failure is never cached


def metric_lines(rendered) -> str:
    return b"".join(rendered.chunks()).decode()


def test_late_caller_gets_the_stuck_state(clock, make):
    c = computed(clock)
    scraper = make(c)
    scraper.server = SERVER
    text = metric_lines(scraper._late(None, 2.5))
    assert 'pg_up{target="t"} 0' in text
    assert 'dbperf_collector_success{target="t",collector="computed",datname=""} 0' in text
    assert 'dbperf_scrape_duration_seconds{target="t"} 2.5' in text
    assert scraper.server is None  # /readyz: not up
    failed = metric_lines(scraper._late(RuntimeError(f"bug {SECRET}"), 0.1))
    assert 'pg_up{target="t"} 0' in failed and SECRET not in failed


def test_late_caller_of_a_scrape_whose_probe_answered_sees_the_server_up(clock, make):
    c = computed(clock)
    scraper = make(c)
    scraper.server = scraper._answered = SERVER  # the scrape in flight reached the server
    text = metric_lines(scraper._late(None, 1.75))
    assert 'pg_up{target="t"} 1' in text
    assert 'dbperf_collector_success{target="t",collector="computed",datname=""} 0' in text
    assert scraper.server is SERVER


def test_single_flight_shares_one_call_and_late_callers_get_the_fallback():
    flight = SingleFlight("dbperf-flight-test")
    release, calls = threading.Event(), []

    def slow():
        calls.append(1)
        assert release.wait(10)
        return "result"

    first = flight.begin(slow, wait=10)
    start = time.monotonic()
    late = [flight.begin(slow, wait=0.05, fallback=lambda error: ("late", error)).result() for _ in range(20)]
    assert time.monotonic() - start < 5  # each waited its own 0.05 s, not for the call
    assert late == [("late", None)] * 20
    assert flight.started == 1 and flight.running  # 21 callers, one call, one thread
    joined = flight.begin(slow, wait=10)
    release.set()
    assert first.result() == "result" and joined.result() == "result" and calls == [1]
    deadline = time.monotonic() + 10
    while flight.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert flight.run(lambda: "next", wait=10) == "next" and flight.started == 2


def test_single_flight_failure_reaches_every_caller():
    flight = SingleFlight("dbperf-flight-test")

    def broken():
        raise ValueError("broken collector")

    with pytest.raises(ValueError, match="broken collector"):
        flight.run(broken, wait=10)
    error = flight.run(broken, wait=10, fallback=lambda e: e)
    assert isinstance(error, ValueError)


def test_single_flight_without_fallback_times_out():
    flight = SingleFlight("dbperf-flight-test")
    release = threading.Event()
    flight.begin(lambda: release.wait(10), wait=10)
    try:
        with pytest.raises(TimeoutError):
            flight.run(lambda: None, wait=0.01)
    finally:
        release.set()


def test_database_refreshes_are_spread_over_the_ttl(clock, make):
    """30 databases, a 30 s TTL, a scrape every 15 s: after the first scrape (which runs every
    database) about half of the databases refresh in each scrape, never all in one; each database
    is still refreshed every TTL (never served older than its ttl)."""
    c = computed(clock, "tables", takes=0.0)
    c.scope = DATABASE
    scraper = make(c)
    databases = [f"db{i}" for i in range(30)]
    per_scrape, last = [], {}
    for n in range(41):  # 10 minutes
        before = c.runs
        for d in databases:
            outcome = scraper._run_collector(c, Job(d, scraper.main, [c]), SERVER, 30.0, 2.0, clock() + 10)
            assert outcome.success and outcome.cache_age < 30
            if outcome.cache_age == 0:
                last[d] = clock()
        per_scrape.append(c.runs - before)
        clock.now += 15
    assert per_scrape[0] == 30
    assert max(per_scrape[2:]) <= 20 and min(per_scrape[2:]) >= 10, per_scrape
    # no more refreshes than one per database per TTL once spread (plus the first early ones)
    assert abs(sum(per_scrape[2:]) - 15 * len(per_scrape[2:])) <= 2, per_scrape


def test_a_databases_5_minute_refreshes_land_on_its_30_second_ones(clock, make):
    """Collectors of one database with TTLs 30 s and 5 min: every 5-minute refresh happens in a
    scrape that refreshes the 30 s one too (one session per refresh), never older than its TTL."""
    fast, slow = computed(clock, "tables", takes=0.0), computed(clock, "table_sizes", takes=0.0)
    fast.scope = slow.scope = DATABASE
    scraper = make(fast, slow)
    for _ in range(80):  # 20 minutes
        runs = fast.runs, slow.runs
        for c, ttl in ((fast, 30.0), (slow, 300.0)):
            outcome = scraper._run_collector(c, Job("shop", scraper.main, [c]), SERVER, ttl, 2.0, clock() + 10)
            assert outcome.cache_age <= ttl
        if slow.runs > runs[1]:
            assert fast.runs > runs[0]
        clock.now += 15
    assert 40 <= fast.runs <= 42 and 4 <= slow.runs <= 6


def test_phases_are_stable_and_spread():
    values = [phase(f"db{i}") for i in range(200)]
    assert values == [phase(f"db{i}") for i in range(200)] and all(0 <= v < 3600 for v in values)
    assert len({int(v // 300) for v in values}) == 12  # every 5-minute slot of the hour is used
