"""Pure logic of ``dbperf report``: when a disk projection is trusted, how a host is named, which
pg_stat_statements rows stay out of the top lists."""

from __future__ import annotations

import math
import random

import pytest

from exporter.report.projection import MIN_HISTORY_SECONDS, project
from exporter.report.queries import host_label, left_out_kind

pytestmark = pytest.mark.fast

GIB = 1024 ** 3
DAY = 86400
END = 1_800_000_000


def points(hours: float, free, step: int = 60) -> list[tuple[float, float]]:
    start = END - int(hours * 3600)
    return [(t, free(t)) for t in range(start, END + 1, step)]


def test_ten_minutes_are_not_enough_whatever_the_slope():
    fit = project(points(10 / 60, lambda t: 50 * GIB + 9 * GIB * (END - t) / DAY), END)
    assert fit["status"] == "not_enough_history" and fit["full_timestamp"] is None
    assert fit["reason"] == "not enough history (10 min of 360 needed)"
    assert fit["needed_seconds"] == MIN_HISTORY_SECONDS == 6 * 3600


def test_just_under_and_at_the_minimum():
    line = lambda t: 50 * GIB + 9 * GIB * (END - t) / DAY  # noqa: E731
    assert project(points(6 - 1 / 60, line), END)["status"] == "not_enough_history"
    fit = project(points(6, line), END)
    assert fit["status"] == "projected"
    assert fit["full_timestamp"] == pytest.approx(END + 50 / 9 * DAY, rel=1e-9)


def test_steady_fall_with_noise_is_projected():
    rng = random.Random(1)
    fit = project(points(24, lambda t: 80 * GIB + 4 * GIB * (END - t) / DAY + rng.gauss(0, 0.2) * GIB), END)
    assert fit["status"] == "projected" and fit["r2"] > 0.9
    assert (fit["full_timestamp"] - END) / DAY == pytest.approx(20, rel=0.05)


def test_flat_with_bursts_is_no_trend():
    # 20 GiB of temporary files for 5 minutes every 2 hours, and one under way at the end
    burst = lambda t: 20 * GIB if (END - t) % 7200 < 300 else 0  # noqa: E731
    fit = project(points(12, lambda t: 40 * GIB - burst(t)), END)
    assert fit["status"] in ("unstable", "not_filling") and fit["full_timestamp"] is None


def test_a_daily_cycle_caught_at_one_phase_is_no_trend():
    """Free space that falls in the day and comes back at night: twelve hours that start in the fall
    and end after it stopped slope down over the whole, but not over the second half."""
    cycle = lambda t: 60 * GIB + 10 * GIB * math.sin(2 * math.pi * (t - END) / DAY + 7 * math.pi / 4)  # noqa: E731
    fit = project(points(12, cycle), END)
    assert fit["status"] == "unstable", fit
    assert fit["reason"].startswith("no stable trend (") and "halves" in fit["reason"]


def test_rising_free_space_is_not_filling():
    fit = project(points(12, lambda t: 10 * GIB + GIB * (t - END + 43200) / DAY), END)
    assert (fit["status"], fit["reason"], fit["full_timestamp"]) == ("not_filling", "not filling", None)


def test_host_named_by_its_target():
    assert host_label("127.0.0.1:9847", ["main"]) == "host of target main (scraped at 127.0.0.1:9847)"
    assert host_label("[::1]:9847", ["main"]) == "host of target main (scraped at [::1]:9847)"
    assert host_label("db1", ["main"]) == "host of target main (instance db1)"
    assert host_label("10.0.0.5:9847", ["a", "b"]) == "host of dbperf serving targets a, b (scraped at 10.0.0.5:9847)"
    assert host_label("db1", []) == "db1"


@pytest.mark.parametrize(("queryid", "text", "kind"), [
    ("transaction_control", None, "transaction_control"),
    ("dbperf", None, "dbperf"),
    ("other", None, "other"),
    ("17", "BEGIN", "transaction_control"),
    ("17", "begin isolation level repeatable read", "transaction_control"),
    ("17", "/* route=/x */ COMMIT", "transaction_control"),
    ("17", "ROLLBACK TO SAVEPOINT sa_1", "transaction_control"),
    ("17", "/*application='dbperf'*/ SELECT datname FROM pg_database", "dbperf"),
    ("17", "SELECT 1 /*application='dbperf'*/", "dbperf"),
    ("17", "SELECT begin_at FROM shifts", None),
    ("17", "BEGINNING", None),
    ("17", "DO $$ BEGIN PERFORM 1; END $$", None),
    ("17", None, None),
])
def test_rows_left_out_of_the_top_lists(queryid, text, kind):
    assert left_out_kind(queryid, text) == kind


def test_the_watchdog_heartbeat_is_never_a_likely_cause():
    """Watchdog fires all the time by design (alerts/rules/monitoring.yml): it overlaps every anomaly."""
    from exporter.report.anomalies import attribute_causes

    found = [{"series": "pipeline_duration", "title": "pipeline run duration (orders_export)", "start": END - 600,
              "end": END - 540, "size": "2x the median", "causes": []}]
    alerts = [{"alertname": "Watchdog", "start": END - 3600, "end": END},
              {"alertname": "PipelineSlow", "start": END - 660, "end": END - 500}]
    attribute_causes(found, {"alerts": alerts}, 60)
    assert found[0]["causes"] == ["alert PipelineSlow firing (01-15 07:49-01-15 07:51)"]
    alone = [dict(found[0], causes=[])]
    attribute_causes(alone, {"alerts": alerts[:1]}, 60)
    assert alone[0]["causes"] == ["no concurrent event found (no restart, connection spike, pipeline run or alert)"]
