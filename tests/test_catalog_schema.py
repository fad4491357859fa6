"""The schema of collector files (catalog.yaml and a user's collector_files): unknown keys, scale,
Prometheus's naming rules, the read-only SQL check and duplicates. Every mistake stops start-up
with one line naming the file, the collector's key path and the reason."""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from conftest import promtool_check_metrics
from exporter.config import ConfigError, load
from exporter.metrics import Rendered
from exporter.postgres import catalog
from exporter.postgres.catalog_schema import (CollectorSpec, label_name_problem, metric_name_problem,
                                              parse_collectors, read_only_query)
from exporter.registry import collector_names

pytestmark = pytest.mark.fast

TARGET = "targets:\n  - name: main\n    dsn: host=127.0.0.1 dbname=postgres user=x\n"
OUTBOX = """\
collectors:
  my_outbox:
    help: rows in the outbox
    scope: database
    queries:
      - sql: SELECT status, count(*) AS n FROM outbox GROUP BY status
        labels: [status]
        metrics:
          - {name: app_outbox_rows, type: gauge, column: n, help: "Rows in the outbox, by status."}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def config(tmp_path: Path, *files: str, extra: str = "") -> Path:
    """A config whose collector_files are ``files`` (names beside it)."""
    listed = "".join(f"  - {f}\n" for f in files)
    return write(tmp_path / "dbperf.yaml", f"collector_files:\n{listed}{TARGET}{extra}")


def refused(tmp_path: Path, text: str, *more: str) -> tuple[str, str]:
    """The one-line error of a config whose collector file holds ``text`` (and ``more`` files)."""
    names = []
    for i, body in enumerate((text, *more)):
        write(tmp_path / f"c{i}.yaml", body)
        names.append(f"c{i}.yaml")
    with pytest.raises(ConfigError) as err:
        load(str(config(tmp_path, *names)), env={})
    message = str(err.value)
    assert "\n" not in message, message
    return message, str(tmp_path / "c0.yaml")


def outbox(**changes) -> str:
    """OUTBOX with the collector's, query's or first metric's keys changed (None: removed)."""
    data = yaml.safe_load(OUTBOX)
    spec = data["collectors"]["my_outbox"]
    for key, value in changes.items():
        level, _, name = key.rpartition("__")
        where = {"": spec, "query": spec["queries"][0], "metric": spec["queries"][0]["metrics"][0]}[level]
        if value is None:
            where.pop(name, None)
        else:
            where[name] = value
    return yaml.safe_dump(data, sort_keys=False)


def loaded(tmp_path: Path, text: str, extra: str = ""):
    write(tmp_path / "c.yaml", text)
    return load(str(config(tmp_path, "c.yaml", extra=extra)), env={})


# -- unknown keys --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, key, allowed", [
    (OUTBOX + "colectors: {}\n", "colectors", "allowed: collectors"),
    (outbox(scal=2), "collectors.my_outbox.scal", "allowed: help, scope, enabled, ttl, timeout"),
    (outbox(query__label=["x"]), "collectors.my_outbox.queries[0].label", "allowed: sql, min_version, max_version"),
    (outbox(metric__colum="n"), "collectors.my_outbox.queries[0].metrics[0].colum",
     "allowed: name, type, help, column, value, scale, labels"),
])
def test_an_unknown_key_anywhere_names_file_key_path_and_allowed_keys(tmp_path, text, key, allowed):
    message, source = refused(tmp_path, text)
    assert message.startswith(f"{source}: {key}: unknown key ("), message
    assert allowed in message


def test_an_unknown_key_in_the_third_metric_names_its_index(tmp_path):
    text = OUTBOX + ("          - {name: app_outbox_oldest_age_seconds, type: gauge, column: age, help: \"Age.\"}\n"
                     "          - {name: app_outbox_x, type: gauge, colum: n, help: \"X.\"}\n")
    message, source = refused(tmp_path, text)
    assert message.startswith(f"{source}: collectors.my_outbox.queries[0].metrics[2].colum: unknown key (allowed: ")


def test_the_built_in_catalog_follows_the_same_schema():
    data = yaml.safe_load(catalog.CATALOG.read_text())
    assert parse_collectors(data, str(catalog.CATALOG), user=False) == catalog.builtin_specs()
    typo = copy.deepcopy(data)
    typo["collectors"]["server"]["queries"][0]["metrics"][1]["sacle"] = 2
    with pytest.raises(ConfigError, match=r"^catalog.yaml: collectors.server.queries\[0\].metrics\[1\].sacle: "
                                          r"unknown key \(allowed: "):
        parse_collectors(typo, "catalog.yaml", user=False)
    # max_rows is a user collector's key: dbperf's own SQL has its own limits (table_limit)
    own = copy.deepcopy(data)
    own["collectors"]["server"]["max_rows"] = 10
    with pytest.raises(ConfigError, match=r"collectors.server.max_rows: unknown key"):
        parse_collectors(own, "catalog.yaml", user=False)


# -- scale -------------------------------------------------------------------------------------------
def test_scale_multiplies_the_column_value_and_a_null_stays_no_sample():
    data = {"collectors": {"waits": {"queries": [{
        "sql": "SELECT 1", "labels": ["kind"],
        "metrics": [{"name": "app_wait_seconds", "type": "gauge", "column": "ms", "scale": 0.001, "help": "Wait."},
                    {"name": "app_wait_raw", "type": "gauge", "column": "ms", "help": "Raw."},
                    {"name": "app_wait_euros", "type": "gauge", "column": "ms", "scale": 0.01, "help": "Cents."}]}]}}}
    (spec,) = parse_collectors(data, "waits.yaml", user=False)
    query = spec.queries[0]
    assert query.metrics[0].scale == 0.001 and query.metrics[1].scale == 1.0
    families = catalog.CatalogCollector.to_families(
        [query], [(["kind", "ms"], [("a", 1500), ("b", Decimal("250")), ("c", None), ("d", 1520)])])
    rendered = Rendered()
    rendered.add_families(families)
    text = rendered.text()
    assert 'app_wait_seconds{kind="a"} 1.5\n' in text and 'app_wait_seconds{kind="b"} 0.25\n' in text
    assert 'app_wait_raw{kind="a"} 1500\n' in text and 'kind="c"' not in text
    assert 'app_wait_euros{kind="d"} 15.2\n' in text  # not 15.200000000000001 (1520 * 0.01 in binary)


@pytest.mark.parametrize("change, key, reason", [
    ({"metric__scale": 0}, "metrics[0].scale", "must not be 0"),
    ({"metric__scale": "1000"}, "metrics[0].scale", "must be a finite number"),
    ({"metric__scale": 2, "metric__column": None}, "metrics[0].scale", "it needs column"),
    ({"metric__value": 1}, "metrics[0].value", "not both"),
])
def test_scale_and_value_mistakes(tmp_path, change, key, reason):
    message, source = refused(tmp_path, outbox(**change))
    assert message.startswith(f"{source}: collectors.my_outbox.queries[0].{key}: ") and reason in message, message


# -- naming rules (promtool check metrics) ----------------------------------------------------------------
BAD_NAMES = [
    ("app_jobs_done", "counter", "must end in _total"),
    ("app_jobs_total", "gauge", "only a counter's name may end in _total"),
    ("app_jobs_count", "gauge", "must not end in _count"),
    ("app_jobs_sum", "gauge", "must not end in _sum"),
    ("app_jobs_bucket", "gauge", "must not end in _bucket"),
    ("app_jobs_counter_total", "counter", "type word 'counter'"),
    ("app_gauge_jobs", "gauge", "type word 'gauge'"),
    ("app_histogram_jobs", "gauge", "type word 'histogram'"),
    ("app_summary_jobs", "gauge", "type word 'summary'"),
    ("app_wait_milliseconds", "gauge", "base unit 'seconds', not 'milliseconds'"),
    ("app_wait_ms", "gauge", "abbreviated unit 'ms'"),
    ("app_wait_minutes", "gauge", "base unit 'seconds', not 'minutes'"),
    ("app_age_hours", "gauge", "base unit 'seconds', not 'hours'"),
    ("app_size_kilobytes", "gauge", "base unit 'bytes', not 'kilobytes'"),
    ("app_size_mb", "gauge", "abbreviated unit 'mb'"),
    ("appJobs", "gauge", "snake_case"),
    ("app:jobs", "gauge", "no colons"),
    ("9jobs", "gauge", "snake_case"),
    ("__app_jobs", "gauge", "must not start with __"),
]


@pytest.mark.parametrize("name, mtype, reason", BAD_NAMES)
def test_a_metric_name_that_breaks_the_naming_rules_stops_start_up(tmp_path, name, mtype, reason):
    message, source = refused(tmp_path, outbox(metric__name=name, metric__type=mtype))
    assert message.startswith(f"{source}: collectors.my_outbox.queries[0].metrics[0].name: "), message
    assert reason in message, message


@pytest.mark.parametrize("label, reason", [
    ("le", "reserved (histograms' bucket label)"), ("quantile", "reserved (summaries' label)"),
    ("target", "dbperf adds it"), ("__name", "must not start with __"), ("Status", "snake_case"),
    ("has-dash", "snake_case"),
])
def test_a_label_name_that_breaks_the_rules_stops_start_up(tmp_path, label, reason):
    message, source = refused(tmp_path, outbox(query__labels=[label]))
    assert message.startswith(f"{source}: collectors.my_outbox.queries[0].labels[0]: label "), message
    assert reason in message, message


GOOD_NAMES = [("app_outbox_rows", "gauge"), ("app_orders_waiting_payment", "gauge"),
              ("app_jobs_processed_total", "counter"), ("app_queue_age_seconds", "gauge"),
              ("app_payload_bytes", "gauge"), ("app_last_run_timestamp_seconds", "gauge"),
              ("app_build_info", "gauge")]


@pytest.mark.parametrize("name, mtype", GOOD_NAMES)
def test_good_names_pass(name, mtype):
    assert metric_name_problem(name, mtype) is None
    assert label_name_problem("status") is None


def exposition(name: str, mtype: str, label: str = "status") -> str:
    return f"# HELP {name} Help.\n# TYPE {name} {mtype}\n{name}{{{label}=\"a\"}} 1\n"


@pytest.mark.prom
def test_the_naming_rules_agree_with_promtool():
    """What the check refuses for promtool's reasons, promtool complains about; what it lets through,
    promtool passes (the names only dbperf refuses, __ and the reserved labels, are left out)."""
    for name, mtype, _ in BAD_NAMES:
        if name.startswith("__") or name[0].isdigit() or ":" in name:
            continue  # not a promtool lint: the text format refuses (digits) or reserves (__, :) these
        assert promtool_check_metrics(exposition(name, mtype)), f"promtool passes {name} ({mtype})"
    for label in ("le", "quantile"):
        assert promtool_check_metrics(exposition("app_jobs", "gauge", label)), label
    for name, mtype in GOOD_NAMES:
        assert promtool_check_metrics(exposition(name, mtype)) == "", name


# -- SQL -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sql, reason", [
    ("INSERT INTO outbox VALUES (1)", "not Insert"),
    ("UPDATE outbox SET n = 1", "not Update"),
    ("DELETE FROM outbox", "not Delete"),
    ("TRUNCATE outbox", "not Truncate"),
    ("CREATE TABLE x (a int)", "not Create"),
    ("SET default_transaction_read_only = off", "not VariableSet"),
    ("SELECT 1; SELECT 2", "exactly one statement, got 2"),
    ("SELECT 1; DELETE FROM outbox", "exactly one statement, got 2"),
    ("-- nothing", "exactly one statement, got 0"),
    ("WITH gone AS (DELETE FROM outbox RETURNING 1) SELECT count(*) FROM gone", "data-modifying WITH (DELETE)"),
    ("WITH moved AS (UPDATE outbox SET n = 0 RETURNING 1) SELECT 1", "data-modifying WITH (UPDATE)"),
    ("WITH x AS (INSERT INTO outbox VALUES (1) RETURNING 1) SELECT 1", "data-modifying WITH (INSERT)"),
    ("SELECT * INTO copy FROM outbox", "SELECT ... INTO creates a table"),
    ("SELECT * FROM outbox FOR UPDATE", "FOR UPDATE/SHARE"),
    ("SELECT * FROM (SELECT * FROM outbox FOR SHARE) AS o", "FOR UPDATE/SHARE"),
    ("SELECT set_config('default_transaction_read_only', 'off', false)", "set_config()"),
    ("SELECT pg_catalog.pg_advisory_lock(1)", "pg_advisory_lock()"),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", "pg_terminate_backend()"),
    ("SELECT * FROM dblink('x', 'DELETE FROM t') AS t(a int)", "dblink()"),
    ("SELECT * FROM set_config('default_transaction_read_only', 'off', false)", "set_config()"),
    ("SELECT (SELECT 1 FROM pg_class WHERE pg_advisory_lock(1) IS NULL)", "pg_advisory_lock()"),
    ("SELEC 1", "does not parse"),
])
def test_sql_that_is_not_one_read_only_query_is_refused(tmp_path, sql, reason):
    message, source = refused(tmp_path, outbox(query__sql=sql))
    assert message.startswith(f"{source}: collectors.my_outbox.queries[0].sql: "), message
    assert reason in message, message


@pytest.mark.parametrize("sql, statement", [
    ("SELECT status, count(*) AS n FROM outbox GROUP BY status;", "SELECT status, count(*) AS n FROM outbox GROUP BY status"),
    ("VALUES ('a', 1)", "VALUES ('a', 1)"),
    ("WITH o AS (SELECT 1 AS n) SELECT 'a' AS status, n FROM o", None),
    ("TABLE outbox_counts", None),
    ("SELECT 'a' AS status, 1 AS n UNION ALL SELECT 'b', 2 -- the two kinds\n;", None),
    ("SELECT pg_sleep(0), 1 AS n", None),
    ("SELECT sum(size) AS n FROM pg_ls_waldir()", None),
])
def test_read_only_queries_pass_and_reach_the_server_under_the_row_limit(sql, statement):
    problem, text = read_only_query(sql)
    assert problem is None
    assert text == (statement or sql.rstrip(";\n").strip())
    data = yaml.safe_load(outbox(query__sql=sql, max_rows=7))
    (spec,) = parse_collectors(data, "c.yaml")
    sent = spec.queries[0].sql
    assert sent.startswith("SELECT * FROM (\n") and f"\n{text}\n) AS dbperf_user_query LIMIT 8 " in sent
    assert sent.endswith("/*application='dbperf'*/")
    assert read_only_query(sent)[0] is None  # still one read-only query once wrapped


# -- duplicates and names ------------------------------------------------------------------------------
def test_a_collector_named_like_a_built_in_one_is_refused(tmp_path):
    message, source = refused(tmp_path, OUTBOX.replace("my_outbox", "tables"))
    assert message == f"{source}: collectors.tables: duplicate collector name: tables is a built-in collector"


def test_a_collector_defined_in_two_files_is_refused(tmp_path):
    other = OUTBOX.replace("app_outbox_rows", "app_outbox_rows_again")
    message, _ = refused(tmp_path, OUTBOX, other)
    assert message == (f"{tmp_path / 'c1.yaml'}: collectors.my_outbox: duplicate collector name: "
                       f"{tmp_path / 'c0.yaml'} defines my_outbox too")


@pytest.mark.parametrize("name, owner", [("pg_up", "scrape"), ("pg_stat_database_xact_commit_total", "stat_database"),
                                         ("pg_stat_statements_calls_total", "statements")])
def test_a_metric_named_like_a_built_in_one_is_refused(tmp_path, name, owner):
    mtype = "counter" if name.endswith("_total") else "gauge"
    message, source = refused(tmp_path, outbox(metric__name=name, metric__type=mtype))
    assert message == (f"{source}: collectors.my_outbox: duplicate metric name: the built-in collector {owner} "
                       f"serves {name}")


@pytest.mark.parametrize("name, prefix", [("dbperf_outbox_rows", "dbperf_"), ("pg_settings_outbox", "pg_settings_"),
                                          ("pgbouncer_outbox", "pgbouncer_"), ("host_outbox", "host_"),
                                          ("process_outbox", "process_")])
def test_names_under_dbperf_s_own_prefixes_are_refused(tmp_path, name, prefix):
    message, source = refused(tmp_path, outbox(metric__name=name))
    assert message.startswith(f"{source}: collectors.my_outbox: names starting with {prefix} are reserved ("), message


def test_a_metric_in_two_files_is_refused(tmp_path):
    message, _ = refused(tmp_path, OUTBOX, OUTBOX.replace("my_outbox", "other_outbox"))
    assert message == (f"{tmp_path / 'c1.yaml'}: collectors.other_outbox: duplicate metric name: collector "
                       f"my_outbox ({tmp_path / 'c0.yaml'}) serves app_outbox_rows too")


def test_a_metric_in_two_collectors_of_one_file_is_refused(tmp_path):
    text = OUTBOX + textwrap.indent(OUTBOX.split("\n", 1)[1].replace("my_outbox", "second"), "")
    message, source = refused(tmp_path, text)
    assert message == f"{source}: collectors.second: duplicate metric name app_outbox_rows: collector my_outbox serves it too"


def test_a_metric_twice_in_one_query_is_refused(tmp_path):
    text = OUTBOX + "          - {name: app_outbox_rows, type: gauge, column: n, help: \"Again.\"}\n"
    message, source = refused(tmp_path, text)
    assert message.startswith(f"{source}: collectors.my_outbox.queries[0].metrics[1].name: duplicate metric name")


def test_one_metric_in_two_queries_needs_disjoint_version_ranges_and_one_shape(tmp_path):
    query = ("      - sql: SELECT 'a' AS status, 1 AS n\n        labels: [status]\n        {range}\n        metrics:\n"
             "          - {{name: app_outbox_rows, type: gauge, column: n, help: \"{help}\"}}\n")
    head = OUTBOX.split("    queries:\n")[0] + "    queries:\n"
    both = head + query.format(range="min_version: 140000", help="Rows.") + query.format(
        range="max_version: 150000", help="Rows.")
    message, source = refused(tmp_path, both)
    assert message == (f"{source}: collectors.my_outbox.queries[1].metrics: metric app_outbox_rows is in queries[0] "
                       "too, and their version ranges overlap (both would serve it)")
    shape = head + query.format(range="min_version: 140000", help="Rows.") + query.format(
        range="max_version: 140000", help="Other help.")
    message, _ = refused(tmp_path, shape)
    assert "type, help and labels must be those of queries[0]'s app_outbox_rows" in message
    fine = head + query.format(range="min_version: 140000", help="Rows.") + query.format(
        range="max_version: 140000", help="Rows.")
    (spec,) = loaded(tmp_path, fine).collector_specs
    assert [(q.min_version, q.max_version) for q in spec.queries] == [(140000, None), (0, 140000)]


@pytest.mark.parametrize("change, key, reason", [
    ({"query__min_version": 14}, "queries[0].min_version", "must be a server_version_num such as 140000"),
    ({"query__min_version": 150000, "query__max_version": 140000}, "queries[0].max_version", "must be above min_version"),
    ({"query__max_version": "17"}, "queries[0].max_version", "must be an integer"),
    ({"scope": "server"}, "scope", "must be cluster or database"),
    ({"role": "standby"}, "role", "must be primary or replica"),
    ({"ttl": "soon"}, "ttl", "must be a duration"),
    ({"timeout": "2h"}, "timeout", "must be at most 1h"),
    ({"max_rows": 0}, "max_rows", "must be an integer in 1 .. 1000000"),
    ({"max_rows": 2_000_000}, "max_rows", "must be an integer in 1 .. 1000000"),
    ({"queries": []}, "queries", "must be a non-empty list"),
    ({"query__metrics": []}, "queries[0].metrics", "must be a non-empty list"),
    ({"query__sql": None}, "queries[0].sql", "is required"),
    ({"metric__help": None}, "queries[0].metrics[0].help", "is required"),
    ({"metric__type": "histogram"}, "queries[0].metrics[0].type", "must be gauge or counter"),
    ({"metric__labels": ["status", "kind"]}, "queries[0].metrics[0].labels", "not among the query's labels"),
    ({"query__labels": ["status", "status"]}, "queries[0].labels", "listed twice"),
])
def test_other_mistakes_name_the_key(tmp_path, change, key, reason):
    message, source = refused(tmp_path, outbox(**change))
    assert message.startswith(f"{source}: collectors.my_outbox.{key}: ") and reason in message, message


@pytest.mark.parametrize("text, key, reason", [
    ("[1, 2]\n", "", "must be a mapping"),
    ("collectors: {}\n", "collectors", "at least one collector"),
    ("collectors:\n  My-Outbox: {}\n", "collectors.My-Outbox", "must be lower-case letters"),
    ("collectors: [\n", "", "invalid YAML"),
])
def test_a_broken_file_is_one_line_naming_it(tmp_path, text, key, reason):
    message, source = refused(tmp_path, text)
    assert message.startswith(f"{source}: {key + ': ' if key else ''}") and reason in message, message


# -- collector_files in the config --------------------------------------------------------------------
def test_collector_files_resolve_beside_the_config_and_directories_give_their_yaml_files_sorted(tmp_path):
    (tmp_path / "conf.d").mkdir()
    write(tmp_path / "conf.d" / "b.yml", OUTBOX.replace("my_outbox", "b_second").replace("app_outbox_rows", "app_beta_rows"))
    write(tmp_path / "conf.d" / "a.yaml", OUTBOX.replace("my_outbox", "a_first").replace("app_outbox_rows", "app_alpha_rows"))
    write(tmp_path / "conf.d" / "notes.txt", "not a collector file")
    write(tmp_path / "conf.d" / ".hidden.yaml", "broken: [")
    write(tmp_path / "one.yaml", OUTBOX)
    cfg = write(tmp_path / "dbperf.yaml", "collector_files: [conf.d, one.yaml, conf.d/a.yaml]\n" + TARGET
                + "    collectors: {my_outbox: {ttl: 30s}, b_second: false}\n")
    parsed = load(str(cfg), env={})
    assert isinstance(parsed.collector_specs, tuple)
    assert [(s.name, s.source) for s in parsed.collector_specs] == [
        ("a_first", str(tmp_path / "conf.d" / "a.yaml")), ("b_second", str(tmp_path / "conf.d" / "b.yml")),
        ("my_outbox", str(tmp_path / "one.yaml"))]
    assert all(isinstance(s, CollectorSpec) for s in parsed.collector_specs)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.collector_specs[0].max_rows = 1
    target = parsed.targets[0]
    assert target.collector("my_outbox", True).ttl == 30 and not target.collector("b_second", True).enabled


def test_a_target_may_only_name_collectors_that_exist(tmp_path):
    with pytest.raises(ConfigError) as err:
        loaded(tmp_path, OUTBOX, extra="    collectors: {my_outbx: {ttl: 30s}}\n")
    assert str(err.value).startswith(f"{tmp_path / 'dbperf.yaml'}: targets[0].collectors.my_outbx: unknown collector")
    assert "my_outbox" in str(err.value)
    write(tmp_path / "dbperf.yaml", TARGET + "    collectors: {my_outbox: false}\n")
    with pytest.raises(ConfigError, match="unknown collector"):  # without the file it is unknown
        load(str(tmp_path / "dbperf.yaml"), env={})
    assert "my_outbox" not in collector_names()


@pytest.mark.parametrize("value, reason", [
    ("[missing.yaml]", "collector_files[0]: cannot read {tmp}/missing.yaml: no such file or directory"),
    ("missing.yaml", "collector_files: must be a list of files or directories, got str"),
    ("['']", "collector_files[0]: must be a path (a file or a directory), got ''"),
])
def test_collector_files_mistakes(tmp_path, value, reason):
    cfg = write(tmp_path / "dbperf.yaml", f"collector_files: {value}\n" + TARGET)
    with pytest.raises(ConfigError) as err:
        load(str(cfg), env={})
    assert str(err.value) == f"{cfg}: {reason.format(tmp=tmp_path)}"


def test_a_database_collector_gets_datname_unless_it_names_one():
    (spec,) = parse_collectors(yaml.safe_load(OUTBOX), "c.yaml")
    assert spec.adds_datname and spec.queries[0].labels == ("status", "datname")
    assert spec.queries[0].metrics[0].labels == ("status", "datname")
    cluster = parse_collectors(yaml.safe_load(outbox(scope="cluster")), "c.yaml")[0]
    assert not cluster.adds_datname and cluster.queries[0].labels == ("status",)
    own = parse_collectors(yaml.safe_load(outbox(query__labels=["datname", "status"])), "c.yaml")[0]
    assert own.queries[0].labels == ("datname", "status")


# -- fragments: SQL shared by several queries of one file ----------------------------------------------
def test_a_fragment_is_spliced_into_the_sql_of_every_query_that_names_it(tmp_path):
    data = yaml.safe_load(OUTBOX)
    query = data["collectors"]["my_outbox"]["queries"][0]
    data["fragments"] = {"the_sql": query["sql"]}
    query["sql"] = "{the_sql}"
    spec = loaded(tmp_path, yaml.safe_dump(data, sort_keys=False)).collector_specs[0]
    original = loaded(tmp_path, OUTBOX).collector_specs[0]
    assert spec.queries[0].sql == original.queries[0].sql and "{the_sql}" not in spec.queries[0].sql


@pytest.mark.parametrize("fragments, key", [({"Bad-Name": "x"}, "fragments.Bad-Name"), ({"ok": 3}, "fragments.ok"),
                                            ({"table_limit": "1"}, "fragments.table_limit")])
def test_a_bad_fragment_names_its_key(tmp_path, fragments, key):
    data = yaml.safe_load(OUTBOX)
    data["fragments"] = fragments
    message, source = refused(tmp_path, yaml.safe_dump(data, sort_keys=False))
    assert message.startswith(f"{source}: {key}: "), message
