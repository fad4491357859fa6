"""postgres_exporter's metric names (NAMESPACE_COLUMN) fixed to Prometheus's naming rules, each rule
on its own, and for any column name: the result passes dbperf's collector-file name check."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.convert import names
from exporter.postgres import catalog_schema

pytestmark = pytest.mark.fast


@pytest.mark.parametrize("namespace, column, kind, name, factor", [
    ("pg_replication", "lag", "gauge", "pg_replication_lag", 1),                    # namespace_column, as is
    ("pg_stat_user_tables", "seq_scan", "counter", "pg_stat_user_tables_seq_scan_total", 1),
    ("pg_x", "done_total", "counter", "pg_x_done_total", 1),                       # already ends in _total
    ("pg_x", "xact_total", "gauge", "pg_x_xact", 1),                               # _total only on counters
    ("pg_locks", "count", "gauge", "pg_locks", 1),                                 # no _count on a gauge
    ("pg_x", "calls_count", "counter", "pg_x_calls_count_total", 1),               # a counter may say count
    ("pg_x", "lag_sum", "gauge", "pg_x_lag", 1),
    ("pg_x", "queue_gauge", "gauge", "pg_x_queue", 1),                             # no type word
    ("pg_counter", "x", "counter", "pg_x_total", 1),
    ("pg_wal", "xlog_location_b", "counter", "pg_wal_xlog_location_bytes_total", 1),
    ("pg_x", "exec_time_ms", "counter", "pg_x_exec_time_seconds_total", Fraction(1, 1000)),
    ("pg_x", "lag_milliseconds", "gauge", "pg_x_lag_seconds", Fraction(1, 1000)),
    ("pg_x", "wait_us", "gauge", "pg_x_wait_seconds", Fraction(1, 10**6)),
    ("pg_x", "size_kb", "gauge", "pg_x_size_bytes", 1024),                         # PostgreSQL's kB
    ("pg_x", "size_megabytes", "gauge", "pg_x_size_bytes", 10**6),
    ("pg_x", "age_hours", "gauge", "pg_x_age_seconds", 3600),
    ("pg_x", "age_d", "gauge", "pg_x_age_seconds", 86400),                         # d at the end: days
    ("pg_x", "d_thing", "gauge", "pg_x_dthing", 1),                                # d inside: no unit
    ("pg_x", "bytes_per_minutes", "gauge", "pg_x_bytes_per_seconds", Fraction(1, 60)),
    ("pg_x", "wait", "duration", "pg_x_wait_seconds", 1),                          # DURATION: seconds
    ("pg_x", "wait_ms", "duration", "pg_x_wait_seconds", 1),                       # its unit word dropped
    ("pg", "myMetric", "gauge", "pg_my_metric", 1),                                # snake_case
    ("PG_X", "Lag", "gauge", "pg_x_lag", 1),                                       # lower-case
    ("pg-x", "a:x y", "gauge", "pg_x_a_x_y", 1),                                   # only [a-z0-9_]
    ("pg_x", "b_tree_ms", "gauge", "pg_x_btree_seconds", Fraction(1, 1000)),       # an abbreviation inside
    ("ms_stats", "n", "gauge", "msstats_n", 1),                                    # a first word is no unit
])
def test_each_naming_rule(namespace, column, kind, name, factor):
    got = names.metric_name(namespace, column, kind)
    assert (got.name, got.factor) == (name, factor)
    assert bool(got.reasons) == (name != f"{namespace}_{column}" or factor != 1)
    assert catalog_schema.metric_name_problem(got.name, "counter" if kind == "counter" else "gauge") is None


def test_a_unit_no_factor_converts_is_a_name_problem():
    with pytest.raises(names.NameProblem, match="fahrenheit"):
        names.metric_name("pg_x", "temp_fahrenheit", "gauge")


def test_a_joined_word_is_never_read_as_a_unit():
    with pytest.raises(names.NameProblem, match="abbreviated unit 'mb'"):
        names.metric_name("pg_x", "m_b", "gauge")  # m joined to b is no megabyte: not scaled, refused


def test_a_name_longer_than_dbperf_allows_is_a_name_problem():
    with pytest.raises(names.NameProblem, match="longer than"):
        names.metric_name("pg_x", "y" * 300, "gauge")


@pytest.mark.parametrize("column, label", [("datname", "datname"), ("le", "exported_le"),
                                           ("quantile", "exported_quantile"), ("target", "exported_target"),
                                           ("__name__", "exported__name__"), ("userName", "user_name"),
                                           ("Schema Name", "schema_name"), ("1st", "_1st")])
def test_label_names(column, label):
    assert names.label_name(column)[0] == label
    assert catalog_schema.label_name_problem(label) is None


@pytest.mark.parametrize("namespace, collector", [("pg_replication", "pg_replication"), ("myQueries", "my_queries"),
                                                  ("123", "q_123"), ("pg-stat", "pg_stat"), ("a" * 80, "a" * 64)])
def test_collector_names(namespace, collector):
    assert names.collector_name(namespace) == collector
    assert catalog_schema.COLLECTOR_NAME_RE.fullmatch(collector)


def test_every_unit_word_and_abbreviation_dbperf_refuses_has_a_factor():
    for word in catalog_schema.ABBREVIATIONS:
        assert names._unit(word) is not None, word
    for word, base in catalog_schema.BASE_UNITS.items():
        if base != word and word not in names.AFFINE_UNITS:
            assert names._unit(word) is not None, word
        for prefix in catalog_schema.UNIT_PREFIXES:
            if word not in names.AFFINE_UNITS:
                assert names._unit(prefix + word) is not None, prefix + word


_word = st.one_of(st.sampled_from(sorted(catalog_schema.ABBREVIATIONS | set(catalog_schema.BASE_UNITS)
                                         | catalog_schema.TYPE_WORDS | {"total", "count", "sum", "bucket", "per",
                                                                         "milliseconds", "kilobytes"})),
                  st.from_regex(r"[a-zA-Z][a-zA-Z0-9]{0,6}", fullmatch=True))


@settings(max_examples=400, deadline=None)
@given(st.lists(_word, min_size=1, max_size=6), st.sampled_from(["gauge", "counter", "duration"]))
def test_any_column_name_becomes_a_name_dbperf_accepts(words, kind):
    try:
        got = names.metric_name("pg_app", "_".join(words), kind)
    except names.NameProblem:  # named as not converted (test_a_unit_no_factor_converts...)
        return
    assert catalog_schema.metric_name_problem(got.name, "counter" if kind == "counter" else "gauge") is None, got
    assert got.factor > 0
