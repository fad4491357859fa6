"""exporter.top.window: average active sessions over the last N seconds of cumulative counters."""

from __future__ import annotations

import pytest

from exporter.top.window import Window

pytestmark = pytest.mark.fast


def test_rates_are_the_increase_over_the_points_in_the_window():
    w = Window(10)
    assert w.rates() == {} and w.span == 0
    w.add(0, {"Lock": 0.0})
    assert w.rates() == {}  # one point: nothing measured yet
    w.add(1, {"Lock": 2.0, "CPU": 0.5})  # a key absent at the base counts from 0
    assert w.span == 1 and w.rates() == {"Lock": 2.0, "CPU": 0.5}
    for t in range(2, 30):
        w.add(t, {"Lock": 2.0 * t, "CPU": 0.5})
    assert w.span == 10  # only the last 10 s: the CPU burst at 1 s has left the window
    assert w.rates() == {"Lock": 2.0, "CPU": 0.0}


def test_a_counter_that_went_down_counts_zero():
    w = Window(60)
    w.add(0, {"q": 5.0})
    w.add(2, {"q": 1.0})  # forgotten and counted again
    assert w.rates() == {"q": 0.0}


def test_the_base_is_the_last_point_at_or_before_the_start():
    w = Window(5)
    for t in (0, 4, 8):
        w.add(t, {"x": float(t)})
    assert w.span == 8  # 0 is kept: 4 is after the window's start (8 - 5 = 3)
    w.add(9, {"x": 9.0})
    assert w.span == 5 and w.rates() == {"x": 1.0}
