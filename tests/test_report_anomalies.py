"""The report's anomaly maths (exporter/report/anomalies.py) on made-up series: no Prometheus."""

from __future__ import annotations

import pytest

from exporter.report.anomalies import SPECS, TRAILING_POINTS, detect, detect_runs, robust_z

pytestmark = pytest.mark.fast

STEP = 300.0
LATENCY = SPECS["workload_p95_latency"]


def series(values, start=0.0, step=STEP):
    return [(start + i * step, v) for i, v in enumerate(values)]


def test_robust_z_is_the_scaled_distance_from_the_median():
    z, median = robust_z(10.0, [1.0, 2.0, 3.0, 4.0, 5.0])
    assert median == 3.0
    assert z == pytest.approx(0.6745 * 7.0 / 1.0)  # MAD of 1..5 is 1


def test_a_flat_baseline_uses_the_floor_not_a_division_by_zero():
    z, median = robust_z(1.2, [1.0] * 10)
    assert median == 1.0 and z == pytest.approx(0.6745 * 0.2 / 0.05)


def test_one_spike_makes_one_episode_at_its_time():
    values = [0.010 + 0.001 * (i % 3) for i in range(60)]
    values[40:43] = [0.2, 0.25, 0.2]
    points = series(values)
    found = detect(LATENCY, points, start=points[30][0], step=STEP)
    assert len(found) == 1
    episode = found[0]
    assert episode["peak"] == 0.25 and episode["peak_time"] == points[41][0]
    assert episode["end"] == points[42][0] and episode["start"] == points[40][0] - STEP


def test_noise_and_small_departures_are_not_anomalies():
    values = [0.010 + 0.002 * ((i * 7) % 5) for i in range(80)]
    values[50] = 0.019  # within twice the median: below min_factor
    assert detect(LATENCY, series(values), start=0.0, step=STEP) == []


def test_points_before_start_only_serve_as_baseline():
    values = [0.01] * 40
    values[5] = 1.0  # a spike in the baseline part, before start
    points = series(values)
    assert detect(LATENCY, points, start=points[TRAILING_POINTS][0], step=STEP) == []


@pytest.mark.parametrize("every_day,expected", [(True, 0), (False, 1)])
def test_a_busy_hour_at_the_same_time_every_day_is_the_daily_cycle(every_day, expected):
    day_points = int(86400 / STEP)
    values = [0.01] * (day_points * 3)
    for day in range(3) if every_day else [2]:
        start = day * day_points + 100
        values[start:start + 12] = [0.3] * 12  # one busy hour
    points = series(values)
    found = detect(LATENCY, points, start=points[2 * day_points][0], step=STEP)
    assert len(found) == expected


def test_pipeline_runs_are_judged_against_their_own_history():
    spec = SPECS["pipeline_duration"]
    runs = [(i * 3600.0, 60.0 + (i % 3), "etl") for i in range(10)]
    runs += [(i * 3600.0, 600.0 + (i % 3), "batch") for i in range(10)]  # slow but steady
    runs.append((11 * 3600.0, 400.0, "etl"))                            # etl suddenly slow
    runs.sort()
    found = detect_runs(spec, runs, start=0.0)
    assert [a["subject"] for a in found] == ["etl"]
    assert found[0]["peak"] == 400.0
