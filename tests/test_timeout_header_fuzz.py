"""Property tests of the scrape-timeout header (issue 13): whatever Prometheus (or anyone) sends in
X-Prometheus-Scrape-Timeout-Seconds, the budget is a finite number within its bounds, and nothing
raises."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.server import MIN_BUDGET, parse_budget

pytestmark = pytest.mark.fast

HEADERS = st.one_of(
    st.none(),
    st.text(max_size=80),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-10**30, max_value=10**30).map(str),
    st.sampled_from(["inf", "-inf", "nan", "1e400", "-0", "0x10", "1_0", " 10 ", "10s", "", "９"]),
)


@settings(max_examples=300, deadline=None, database=None)
@given(header=HEADERS, offset=st.floats(0, 60), default=st.floats(0.001, 3600), maximum=st.floats(1, 3600))
def test_any_header_gives_a_bounded_finite_budget(header, offset, default, maximum):
    budget = parse_budget(header, offset, default, maximum)
    assert math.isfinite(budget)
    assert budget <= maximum
    assert budget >= min(MIN_BUDGET, default, maximum)


@settings(max_examples=200, deadline=None, database=None)
@given(seconds=st.floats(0.2, 3000), offset=st.floats(0, 0.1))
def test_a_plain_header_is_honoured_minus_the_offset(seconds, offset):
    assert parse_budget(repr(seconds), offset, 10.0, 3600.0) == pytest.approx(max(MIN_BUDGET, seconds - offset))
