"""Each rule of the queries.yaml -> collector file mapping (docs/migrating-from-postgres-exporter.md),
through `dbperf convert-queries` itself: what it writes, what it names on stderr, its exit code.
The SQL's meaning is tested on a real server in test_convert_sqlwrap.py and test_convert_pg.py."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import yaml

from exporter.cli import main
from exporter.postgres.catalog_schema import parse_collectors

pytestmark = pytest.mark.fast

FIXTURES = Path(__file__).parent / "fixtures" / "postgres_exporter"


class Result:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out = code, out
        self.lines = [line for line in err.splitlines() if line]
        self.doc = yaml.safe_load(out) if out else None
        self.collectors = (self.doc or {}).get("collectors", {})

    def about(self, key: str) -> list[str]:
        """The stderr lines about ``key`` (namespace or namespace.column)."""
        return [line.split(f": {key}: ", 1)[1] for line in self.lines if f": {key}: " in line]

    def metrics(self, collector: str) -> dict:
        return {m["name"]: m for q in self.collectors[collector]["queries"] for m in q["metrics"]}


def convert(tmp_path, capsys, text: str, *args) -> Result:
    path = tmp_path / "queries.yaml"
    path.write_text(textwrap.dedent(text))
    code = main(["convert-queries", str(path), *args])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


ONE = """\
    app_outbox:
      query: "SELECT topic, count(*) AS waiting FROM outbox GROUP BY topic"
      metrics:
        - topic:
            usage: "LABEL"
            description: "Topic"
        - waiting:
            usage: "GAUGE"
            description: "Messages waiting"
"""


def test_a_namespace_is_a_collector_and_its_metrics_prefix(tmp_path, capsys):
    r = convert(tmp_path, capsys, ONE)
    assert r.code == 0 and list(r.collectors) == ["app_outbox"]
    (query,) = r.collectors["app_outbox"]["queries"]
    assert query["labels"] == ["topic"]
    assert query["metrics"] == [{"name": "app_outbox_waiting", "column": "app_outbox_waiting", "type": "gauge",
                                 "help": "Messages waiting"}]
    assert "SELECT topic, count(*) AS waiting FROM outbox GROUP BY topic" in query["sql"]  # verbatim inside
    assert r.lines[-1].endswith("1 collectors, 1 metrics converted")


def test_the_converted_file_passes_dbperfs_collector_file_checks(tmp_path, capsys):
    for fixture in sorted(FIXTURES.glob("*.yaml")):
        code = main(["convert-queries", str(fixture)])
        out = capsys.readouterr().out
        assert code in (0, 3)
        specs = parse_collectors(yaml.safe_load(out), str(fixture), user=True)
        assert specs, fixture


def test_master_true_is_scope_cluster_otherwise_database(tmp_path, capsys):
    text = ONE + """\
    app_settings:
      query: "SELECT current_setting('max_connections') AS max_connections"
      master: true
      metrics:
        - max_connections:
            usage: "GAUGE"
            description: "max_connections"
"""
    r = convert(tmp_path, capsys, text)
    assert r.collectors["app_outbox"]["scope"] == "database"
    assert r.collectors["app_settings"]["scope"] == "cluster"
    assert any("dbperf adds the label datname" in line for line in r.about("app_outbox"))
    assert r.code == 0  # a note is no omission
    r = convert(tmp_path, capsys, text, "--no-auto-discover-databases")
    assert {spec["scope"] for spec in r.collectors.values()} == {"cluster"}


def test_cache_seconds_is_the_ttl(tmp_path, capsys):
    r = convert(tmp_path, capsys, ONE.replace("  metrics:", "  cache_seconds: 45\n      metrics:", 1))
    assert r.collectors["app_outbox"]["ttl"] == 45
    assert "ttl" not in convert(tmp_path, capsys, ONE).collectors["app_outbox"]


def test_runonserver_is_one_query_per_version_range(tmp_path, capsys):
    r = convert(tmp_path, capsys, ONE.replace("  metrics:", '  runonserver: ">=10.0.0 <14.0.0 || >=15.0.0"\n'
                                                           "      metrics:", 1))
    queries = r.collectors["app_outbox"]["queries"]
    assert [(q.get("min_version"), q.get("max_version")) for q in queries] == [(100000, 140000), (150000, None)]
    assert queries[0]["sql"] == queries[1]["sql"] and queries[0]["metrics"] == queries[1]["metrics"]
    assert "&id" not in r.out and "*id" not in r.out  # each query written out, no YAML alias
    assert r.code == 0


@pytest.mark.parametrize("runonserver, why", [("9.5, 9.6", "is not a range"), ("=13.1.5", "matches no PostgreSQL")])
def test_a_runonserver_that_cannot_be_converted_leaves_the_namespace_out(tmp_path, capsys, runonserver, why):
    r = convert(tmp_path, capsys, ONE.replace("  metrics:", f'  runonserver: "{runonserver}"\n      metrics:', 1))
    assert r.code == 3 and r.collectors == {}
    assert any(why in line for line in r.about("app_outbox.runonserver"))


def test_usages(tmp_path, capsys):
    r = convert(tmp_path, capsys, """\
        app_mix:
          query: "SELECT 'a' AS kind, 1 AS calls, 2 AS rows_now, '5s' AS wait, 'on' AS state, 3 AS pid"
          master: true
          metrics:
            - kind: {usage: "LABEL", description: "Kind"}
            - calls: {usage: "COUNTER", description: "Calls"}
            - rows_now: {usage: "GAUGE", description: "Rows"}
            - wait: {usage: "DURATION", description: "Wait"}
            - state: {usage: "MAPPEDMETRIC", description: "State", metric_mapping: {"on": 1, "off": 0}}
            - pid: {usage: "DISCARD", description: "Not wanted"}
    """)
    assert r.code == 0
    metrics = r.metrics("app_mix")
    assert {name: m["type"] for name, m in metrics.items()} == {
        "app_mix_calls_total": "counter", "app_mix_rows_now": "gauge", "app_mix_wait_seconds": "gauge",
        "app_mix_state": "gauge"}
    assert r.collectors["app_mix"]["queries"][0]["labels"] == ["kind"]
    assert any("a counter ends in _total" in line for line in r.about("app_mix.calls"))
    assert any("served in seconds" in line for line in r.about("app_mix.wait"))
    assert any("metric_mapping applied" in line for line in r.about("app_mix.state"))
    assert r.about("app_mix.pid") == []  # DISCARD: dropped, as the user asked
    assert "WHEN 'on' THEN 1.0::float8" in r.collectors["app_mix"]["queries"][0]["sql"]


@pytest.mark.parametrize("options, why", [
    ('{usage: "HISTOGRAM", description: "H"}', "no histogram type"),
    ('{usage: "gauge", description: "lower-case"}', "case matters"),
    ('{usage: "SUMMARY", description: "S"}', "is none of"),
    ('{description: "no usage"}', "no usage"),
    ('{usage: "MAPPEDMETRIC", description: "no mapping"}', "without metric_mapping"),
    ('{usage: "GAUGE", description: "F", pg_version: ">=10.0.0"}', "ignores pg_version"),
    ('{usage: "GAUGE", description: "typo", mapping: {"a": 1}}', "not a postgres_exporter key"),
])
def test_what_a_column_asks_that_cannot_be_converted_is_named(tmp_path, capsys, options, why):
    r = convert(tmp_path, capsys, f"""\
        app_x:
          query: "SELECT 1 AS n, 2 AS v"
          master: true
          metrics:
            - n: {{usage: "GAUGE", description: "N"}}
            - v: {options}
    """)
    assert r.code == 3
    assert any(why in line for line in r.about("app_x.v") + r.about("app_x.v.pg_version") + r.about("app_x.v.mapping"))
    assert "app_x_n" in r.metrics("app_x")  # the rest is converted


def test_a_histogram_takes_its_bucket_sum_and_count_columns_along(tmp_path, capsys):
    r = convert(tmp_path, capsys, """\
        app_hist:
          query: "SELECT ARRAY[1.0] AS age, ARRAY[3] AS age_bucket, 2.5 AS age_sum, 3 AS age_count, 3 AS sessions"
          master: true
          metrics:
            - age: {usage: "HISTOGRAM", description: "Ages"}
            - sessions: {usage: "GAUGE", description: "Sessions"}
    """)
    assert r.code == 3
    assert r.about("app_hist.age") == ["HISTOGRAM: a dbperf collector file has no histogram type (age, age_bucket, "
                                       "age_sum and age_count are left out)"]
    assert r.about("app_hist.age_sum") == [] and r.about("app_hist.age_bucket") == []  # not reported as unlisted
    assert list(r.metrics("app_hist")) == ["app_hist_sessions"]


def test_unknown_namespace_keys_are_named(tmp_path, capsys):
    r = convert(tmp_path, capsys, ONE.replace("  metrics:", "  master_only: true\n      metrics:", 1))
    assert r.code == 3 and any("not a postgres_exporter key" in line for line in r.about("app_outbox.master_only"))


def test_a_name_dbperf_serves_built_in_is_not_converted(tmp_path, capsys):
    r = convert(tmp_path, capsys, """\
        pg_postmaster:
          query: "SELECT pg_postmaster_start_time() AS start_time_seconds"
          master: true
          metrics:
            - start_time_seconds: {usage: "GAUGE", description: "Start"}
    """)
    assert r.code == 3 and r.collectors == {}
    assert any("built-in collector server serves pg_postmaster_start_time_seconds" in line
               for line in r.about("pg_postmaster.start_time_seconds"))


def test_two_columns_with_one_name_keep_the_first(tmp_path, capsys):
    r = convert(tmp_path, capsys, """\
        app_y:
          query: "SELECT 1 AS lag_ms, 2 AS lag_seconds"
          master: true
          metrics:
            - lag_ms: {usage: "GAUGE", description: "ms"}
            - lag_seconds: {usage: "GAUGE", description: "s"}
    """)
    assert r.code == 3 and list(r.metrics("app_y")) == ["app_y_lag_seconds"]
    assert any("already app_y.lag_ms's name" in line for line in r.about("app_y.lag_seconds"))


def test_a_unit_is_converted_to_its_base_unit_in_the_sql(tmp_path, capsys):
    r = convert(tmp_path, capsys, """\
        app_z:
          query: "SELECT 1500 AS wait_ms"
          master: true
          metrics:
            - wait_ms: {usage: "GAUGE", description: "Wait"}
    """)
    assert list(r.metrics("app_z")) == ["app_z_wait_seconds"]
    assert "q.wait_ms::float8) / 1000 AS app_z_wait_seconds" in r.collectors["app_z"]["queries"][0]["sql"]
    assert any("(value x 1/1000)" in line for line in r.about("app_z.wait_ms"))


def test_columns_the_query_returns_and_metrics_do_not_list_are_named(tmp_path, capsys):
    r = convert(tmp_path, capsys, ONE.replace("count(*) AS waiting", "count(*) AS waiting, max(id) AS newest"))
    assert r.code == 3
    assert any("served it as the untyped metric app_outbox_newest" in line for line in r.about("app_outbox.newest"))


def test_a_metric_column_the_query_lacks_is_left_out_and_a_label_column_leaves_the_namespace_out(tmp_path, capsys):
    r = convert(tmp_path, capsys, ONE.replace("- waiting:", "- missing: {usage: GAUGE}\n        - waiting:"))
    assert r.code == 3 and list(r.metrics("app_outbox")) == ["app_outbox_waiting"]
    assert any("returns no such column" in line for line in r.about("app_outbox.missing"))
    r = convert(tmp_path, capsys, ONE.replace("- topic:", "- region: {usage: LABEL}\n        - topic:"))
    assert r.code == 3 and r.collectors == {}
    assert any("first column's value" in line for line in r.about("app_outbox.region"))


@pytest.mark.parametrize("query, why", [
    ("SELECT 1 AS n; SELECT 2 AS n", "2 statements"),
    ("SHOW max_connections", "not a SELECT"),
    ("SELECT 'unterminated AS n", "cannot be read"),
    ("SELECT set_config('work_mem', '1GB', false) AS n", "dbperf would refuse"),
    ("", "no query"),
    ("SELECT 1 AS n, 2 AS n", "two columns named n"),
])
def test_sql_dbperf_cannot_run_leaves_the_namespace_out(tmp_path, capsys, query, why):
    r = convert(tmp_path, capsys, f"""\
        app_q:
          query: {json.dumps(query)}
          master: true
          metrics:
            - n: {{usage: "GAUGE", description: "N"}}
    """)
    assert r.code == 3 and r.collectors == {}
    assert any(why in line for line in r.about("app_q") + r.about("app_q.query")), r.lines


def test_a_namespace_left_out_keeps_no_notes_about_its_columns(tmp_path, capsys):
    r = convert(tmp_path, capsys, """\
        app_n:
          query: "SELECT 1 AS calls"
          master: true
          metrics:
            - calls: {usage: "COUNTER", description: "Calls"}
            - region: {usage: "LABEL", description: "Not in the query"}
    """)
    assert r.code == 3 and r.collectors == {}
    assert r.about("app_n.calls") == []  # no "served as app_n_calls_total" for a metric not served
    assert r.about("app_n.region") != []


def test_label_names_are_fixed_and_reported(tmp_path, capsys):
    r = convert(tmp_path, capsys, """\
        app_l:
          query: "SELECT 1 AS le, 'x' AS \\"relName\\", 2 AS n"
          master: true
          metrics:
            - le: {usage: "LABEL", description: "A bound"}
            - relName: {usage: "LABEL", description: "Table"}
            - n: {usage: "GAUGE", description: "N"}
    """)
    assert r.code == 0
    assert r.collectors["app_l"]["queries"][0]["labels"] == ["exported_le", "rel_name"]
    assert any("le is reserved" in line for line in r.about("app_l.le"))


def test_the_output_is_the_same_each_time(tmp_path, capsys):
    fixture = str(FIXTURES / "app.yaml")
    main(["convert-queries", fixture])
    first = capsys.readouterr().out
    main(["convert-queries", fixture])
    assert capsys.readouterr().out == first
