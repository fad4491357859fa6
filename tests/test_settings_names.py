"""Setting names become metric names promtool accepts, by one predictable rule
(exporter.postgres.settings.NAMING_RULE); names that already passed are unchanged."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.postgres.settings import RESERVED_SUFFIXES, TYPE_WORDS, metric_name

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("setting, suffix, metric", [
    ("wal_summary_keep_time", "_seconds", "pg_settings_wal_summaries_keep_time_seconds"),  # 17+
    ("tcp_keepalives_count", "", "pg_settings_tcp_keepalives_count_value"),
    ("shared_buffers", "_bytes", "pg_settings_shared_buffers_bytes"),
    ("pg_stat_statements.max", "", "pg_settings_pg_stat_statements_max"),
    ("summarize_wal", "", "pg_settings_summarize_wal"),  # not the word itself: unchanged
    ("my.histogram_buckets", "", "pg_settings_my_histograms_buckets"),
    ("x.gauge", "", "pg_settings_x_gauges"),
    ("x_total", "", "pg_settings_x_total_value"),
    ("x_created", "", "pg_settings_x_created_value"),
])
def test_names(setting, suffix, metric):
    assert metric_name(setting, suffix) == metric


def promtool_problems(name: str) -> list[str]:
    """promtool check metrics' name rules for a gauge (promlint: type words, reserved suffixes)."""
    lower = name.lower()
    found = [f"type {t}" for t in TYPE_WORDS if f"_{t}_" in lower or lower.endswith(f"_{t}")]
    found += [f"suffix {s}" for s in RESERVED_SUFFIXES if lower.endswith(s)]
    if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
        found.append("characters")
    return found


words = st.sampled_from(["wal", "summary", "count", "total", "sum", "bucket", "info", "created", "counter",
                         "gauge", "histogram", "time", "max", "keep", "a.b", "x-y", "Summary"])


@given(st.lists(words, min_size=1, max_size=5), st.sampled_from(["", "_seconds", "_bytes"]))
def test_every_name_passes_the_rules(parts, suffix):
    name = metric_name("_".join(parts), suffix)
    assert not promtool_problems(name), (parts, name)
