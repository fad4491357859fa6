"""The workload latency histogram's bucket placement (exporter/postgres/statements.py), no server:
new calls fall in the bucket of their mean over the interval, and the output is cumulative."""

from __future__ import annotations

import math

import pytest

from exporter.postgres.statements import BUCKETS, Histogram

pytestmark = pytest.mark.fast


def test_calls_fall_in_the_bucket_of_their_mean_and_bounds_are_inclusive():
    h = Histogram()
    h.observe(0.05, 20, 1.0)    # exactly on a bound: le="0.05"
    h.observe(0.3, 5, 1.5)      # between 0.25 and 0.5
    h.observe(0.0001, 100, 0.01)
    cumulative = dict(h.cumulative())
    assert cumulative[0.0005] == 100
    assert cumulative[0.025] == 100 and cumulative[0.05] == 120
    assert cumulative[0.25] == 120 and cumulative[0.5] == 125
    assert cumulative[math.inf] == 125
    assert h.total == pytest.approx(2.51)


def test_means_above_the_last_bound_count_only_in_inf():
    h = Histogram()
    h.observe(BUCKETS[-1] * 3, 2, 60.0)
    cumulative = h.cumulative()
    assert all(count == 0 for bound, count in cumulative[:-1])
    assert cumulative[-1] == (math.inf, 2)


def test_cumulative_counts_never_decrease_and_end_with_inf():
    h = Histogram()
    for i, bound in enumerate(BUCKETS):
        h.observe(bound, i + 1, 0.0)
    counts = [count for _, count in h.cumulative()]
    assert counts == sorted(counts)
    assert h.cumulative()[-1][0] == math.inf and counts[-1] == sum(range(1, len(BUCKETS) + 1))
