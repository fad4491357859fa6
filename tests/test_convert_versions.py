"""runonserver ranges (blang/semver syntax) as server_version_num ranges: each comparison, and for
any range, a server is admitted exactly when postgres_exporter's semver comparison admits it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.convert.versions import RangeError, describe, parse_range

pytestmark = pytest.mark.fast

# servers as postgres_exporter reads their version (semver) and their server_version_num
SERVERS = ([((9, m, p), 90000 + m * 100 + p) for m in (4, 5, 6) for p in (0, 1, 5, 24)]
           + [((major, minor, 0), major * 10000 + minor) for major in range(10, 19) for minor in (0, 1, 2, 9, 23)])


def admitted(ranges, num: int) -> bool:
    return any(low <= num and (high is None or num < high) for low, high in ranges)


def semver_holds(op: str, server: tuple, bound: tuple) -> bool:
    return {"=": server == bound, "!=": server != bound, ">": server > bound, ">=": server >= bound,
            "<": server < bound, "<=": server <= bound}[op]


@pytest.mark.parametrize("text, ranges", [
    (">=10.0.0", [(100000, None)]),
    (">9.6.24", [(90625, None)]),
    ("<9.6.0", [(0, 90600)]),
    ("<=10.1.0", [(0, 100002)]),
    ("=11.0.0", [(110000, 110001)]),
    ("11.2.0", [(110002, 110003)]),
    ("==13.4.0", [(130004, 130005)]),
    ("!=14.0.0", [(0, 140000), (140001, None)]),
    ("!14.0.0", [(0, 140000), (140001, None)]),
    (">=13.1.5", [(130002, None)]),          # no server is 13.1.5: the first above is 13.2
    (">=9.6.5", [(90605, None)]),
    (">=10.0.0 <14.0.0", [(100000, 140000)]),
    (">= 10.0.0  < 14.0.0", [(100000, 140000)]),  # spaces after operators, as blang allows
    ("<9.6.0 || >=11.0.0", [(0, 90600), (110000, None)]),
    (">=10.0.0 <14.0.0 || >=15.0.0", [(100000, 140000), (150000, None)]),
    (">=10.0.0 <13.0.0 || >=12.0.0 <16.0.0", [(100000, 160000)]),  # overlapping alternatives merge
    ("13.x", [(130000, 140000)]),
    ("9.6.x", [(90600, 90700)]),
    (">=13.x", [(130000, None)]),
    (">13.x", [(140000, None)]),
    ("<=13.x", [(0, 140000)]),
    ("<13.x.x", [(0, 130000)]),
    ("!=12.x", [(0, 120000), (130000, None)]),
    (">=14.0.0-beta1", [(140000, None)]),    # a prerelease sorts below its release
    ("=14.0.0-beta1", []),
    ("=13.1.5", []),
    (">=14.0.0 <13.0.0", []),
    (">=13.0.0+build.7", [(130000, None)]),  # build metadata is ignored
])
def test_each_comparison_is_the_range_of_server_versions_it_admits(text, ranges):
    assert parse_range(text) == ranges


@pytest.mark.parametrize("text", ["9.5, 9.6", "9.5", "13", ">=13", "||", ">=10.0.0 ||", "|| >=10.0.0",
                                  ">=10.0.0 || || <9.0.0", "~1.0.0", "^13.0.0", "", "   ", "x", ">=09.6.0",
                                  ">=a.b.c", ">=1.2.3.4", "=>13.0.0", "x" * 600])
def test_what_semver_would_refuse_is_a_range_error(text):
    with pytest.raises(RangeError):
        parse_range(text)


def test_ranges_are_described_in_postgresql_versions():
    assert describe([(100000, 140000), (150000, None)]) == ">= 10.0 and < 14.0, >= 15.0"
    assert describe([(0, 90605)]) == "< 9.6.5"
    assert describe([(0, None)]) == "every version"
    assert describe([]) == "no version"


_versions = st.tuples(st.integers(9, 18), st.integers(0, 30), st.integers(0, 30))
_comparison = st.tuples(st.sampled_from(["=", "!=", ">", ">=", "<", "<="]), _versions)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_comparison, min_size=1, max_size=3), min_size=1, max_size=3))
def test_a_server_is_admitted_exactly_when_the_semver_range_holds_for_its_version(alternatives):
    text = " || ".join(" ".join(f"{op}{a}.{b}.{c}" for op, (a, b, c) in group) for group in alternatives)
    ranges = parse_range(text)
    for semver, num in SERVERS:
        holds = any(all(semver_holds(op, semver, bound) for op, bound in group) for group in alternatives)
        assert admitted(ranges, num) == holds, f"{text}: {semver} ({num})"
