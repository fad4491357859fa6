"""Pipeline runs: the runs table and Airflow sources read by a served dbperf on the real
PostgreSQL, counters across restarts, 100,000 stored runs, and the config of ``pipelines:``."""

from __future__ import annotations

import time

import pytest

from conftest import make_config, promtool_check_metrics
from exporter.config import ConfigError, parse
from exporter.pipelines.schema import SQL as SCHEMA_SQL

pytestmark = pytest.mark.pg

DB = "pipelines_test"


@pytest.fixture(scope="module")
def etl(pg):
    pg.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    pg.execute(f"CREATE DATABASE {DB}")
    pg.execute(SCHEMA_SQL, dbname=DB)
    return pg


def config(pg, sources, late_window=None, **target):
    pipelines = {"sources": sources}
    if late_window is not None:
        pipelines["late_window"] = late_window
    extra = {"pipelines": pipelines, "collectors": {"pipelines": {"ttl": 0}}}
    extra.update(target)
    return make_config(pg, extra)


def table_source(**kw):
    return dict({"type": "table", "database": DB}, **kw)


def fresh_table(pg, name: str) -> str:
    """A copy of the runs table's layout (indexes included) under its own name."""
    pg.execute(f"DROP TABLE IF EXISTS dbperf.{name}; "
               f"CREATE TABLE dbperf.{name} (LIKE dbperf.pipeline_runs INCLUDING ALL)", dbname=DB)
    return f"dbperf.{name}"


def insert(pg, table, rows):
    """rows: (pipeline, run_id, status, started seconds ago, finished seconds ago or None, rows, errors)"""
    with pg.connect(DB) as conn:
        for pipeline, run_id, status, started, finished, nrows, errors in rows:
            conn.execute(
                f"INSERT INTO {table} (pipeline, run_id, status, started_at, finished_at, rows_processed, errors) "
                "VALUES (%s, %s, %s, now() - make_interval(secs => %s), "
                "now() - make_interval(secs => %s), %s, %s)",
                (pipeline, run_id, status, started, finished, nrows, errors))


def db_time(pg, seconds_ago: float) -> float:
    return float(pg.execute("SELECT extract(epoch FROM now() - make_interval(secs => %s))::float8",
                            params=(seconds_ago,))[0][0])


PIPELINE_COUNTERS = ("pipeline_runs_total", "pipeline_run_duration_seconds_count", "pipeline_run_duration_seconds_sum",
                     "pipeline_run_duration_seconds_bucket", "pipeline_rows_processed_total", "pipeline_errors_total")


def counters(samples) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples.samples
            if s.name in PIPELINE_COUNTERS}


# -- the runs table -----------------------------------------------------------------------------
def test_every_metric_from_a_run_history(etl, serve):
    table = fresh_table(etl, "history")
    day = 86400
    insert(etl, table, [
        # daily_sales: two old successes, a failure, and the latest success in the open window
        ("daily_sales", "r1", "success", 3 * day, 3 * day - 10, 100, 0),
        ("daily_sales", "r2", "success", 2 * day, 2 * day - 100, 200, 1),
        ("daily_sales", "r3", "failed", day, day - 4000, 5, 7),
        ("daily_sales", "r4", "success", 400, 100, 1000, 0),
        # hourly: one running for two hours (stuck?), one queued, one finished long ago
        ("hourly", "h1", "failed", 10 * day, 10 * day - 2, 0, 3),
        ("hourly", "h2", "running", 7200, None, 0, 0),
        ("hourly", "h3", "running", 60, None, 0, 0),
    ])
    with etl.connect(DB) as conn:
        conn.execute(f"INSERT INTO {table} (pipeline, run_id, status) VALUES ('hourly', 'h4', 'queued')")
    src = table_source(table=table, name="etl", expected_intervals={"daily_sales": "26h", "never_ran": "1h"})
    samples = serve(config(etl, [src])).metrics()
    assert samples.value("dbperf_collector_success", collector="pipelines", datname=DB) == 1
    assert promtool_check_metrics(samples.text) == ""
    ds, hourly = {"source": "etl", "pipeline": "daily_sales"}, {"source": "etl", "pipeline": "hourly"}

    assert samples.value("pipeline_runs_total", status="success", **ds) == 3
    assert samples.value("pipeline_runs_total", status="failed", **ds) == 1
    assert samples.value("pipeline_runs_total", status="failed", **hourly) == 1
    assert samples.value("pipeline_runs_total", status="success", **hourly) == 0
    assert samples.value("pipeline_rows_processed_total", **ds) == 1305
    assert samples.value("pipeline_errors_total", **ds) == 8
    assert samples.value("pipeline_errors_total", **hourly) == 3
    # histogram of 10s, 100s, 4000s, 300s
    assert samples.value("pipeline_run_duration_seconds_count", **ds) == 4
    assert samples.value("pipeline_run_duration_seconds_sum", **ds) == pytest.approx(4410, abs=0.01)
    assert samples.value("pipeline_run_duration_seconds_bucket", le="5.0", **ds) == 0
    assert samples.value("pipeline_run_duration_seconds_bucket", le="15.0", **ds) == 1
    assert samples.value("pipeline_run_duration_seconds_bucket", le="120.0", **ds) == 2
    assert samples.value("pipeline_run_duration_seconds_bucket", le="300.0", **ds) == 3
    assert samples.value("pipeline_run_duration_seconds_bucket", le="3600.0", **ds) == 3
    assert samples.value("pipeline_run_duration_seconds_bucket", le="7200.0", **ds) == 4
    assert samples.value("pipeline_run_duration_seconds_bucket", le="+Inf", **ds) == 4
    # the latest run
    assert samples.value("pipeline_last_run_timestamp_seconds", **ds) == pytest.approx(db_time(etl, 100), abs=5)
    assert samples.value("pipeline_last_success_timestamp_seconds", **ds) == pytest.approx(db_time(etl, 100), abs=5)
    assert samples.value("pipeline_last_run_duration_seconds", **ds) == pytest.approx(300, abs=0.01)
    assert samples.value("pipeline_last_run_status", status="success", **ds) == 1
    assert samples.value("pipeline_last_run_status", status="failed", **ds) == 0
    assert samples.value("pipeline_last_run_status", status="failed", **hourly) == 1
    assert not samples.has("pipeline_last_success_timestamp_seconds", **hourly)
    # in flight
    assert samples.value("pipeline_runs_running", **hourly) == 2
    assert samples.value("pipeline_runs_queued", **hourly) == 1
    assert samples.value("pipeline_runs_running", **ds) == 0
    assert samples.value("pipeline_oldest_running_run_age_seconds", **hourly) == pytest.approx(7200, abs=30)
    assert samples.value("pipeline_oldest_running_run_age_seconds", **ds) == 0
    # configured intervals, also for a pipeline that never ran (so its absence of success alerts)
    assert samples.value("pipeline_expected_interval_seconds", **ds) == 26 * 3600
    assert samples.value("pipeline_expected_interval_seconds", source="etl", pipeline="never_ran") == 3600
    assert samples.value("pipeline_runs_total", status="success", source="etl", pipeline="never_ran") == 0
    assert not samples.has("pipeline_expected_interval_seconds", **hourly)
    assert samples.value("pipeline_source_info", source="etl", type="table", version="", datname=DB) == 1
    # only the source's database carries pipeline series; the others run the collector for nothing
    assert {s.labels["pipeline"] for s in samples.series("pipeline_runs_running")} == {"daily_sales", "hourly",
                                                                                        "never_ran"}
    assert samples.value("dbperf_collector_success", collector="pipelines", datname="postgres") == 1


def test_counters_follow_new_runs_and_survive_a_restart(etl, serve):
    table = fresh_table(etl, "incremental")
    insert(etl, table, [(f"p{i % 3}", f"old{i}", "success" if i % 4 else "failed", 5000 + i, 4000 + i, i, i % 2)
                        for i in range(60)])
    insert(etl, table, [("p0", "late1", "running", 600, None, 0, 0)])
    # a short late window so that runs are folded into the totals between scrapes
    cfg = config(etl, [table_source(table=table, name="inc")], late_window="3s")
    served = serve(cfg)
    first = served.metrics()
    p0 = {"source": "inc", "pipeline": "p0"}
    before = first.value("pipeline_runs_total", status="success", **p0)
    assert before + first.value("pipeline_runs_total", status="failed", **p0) == 20

    # new runs finish, and the long-running run finishes too with a finish time older than theirs
    # (out of order, as a slow commit or a lagging clock makes it): all within the late window
    insert(etl, table, [("p0", "new1", "success", 30, 0.2, 10, 0), ("p0", "new2", "failed", 40, 0.3, 5, 2)])
    with etl.connect(DB) as conn:
        conn.execute(f"UPDATE {table} SET status = 'success', finished_at = now() - interval '1 second', "
                     "rows_processed = 7 WHERE run_id = 'late1'")
    second = served.metrics()
    assert second.value("pipeline_runs_total", status="success", **p0) == before + 2
    assert second.value("pipeline_runs_total", status="failed", **p0) == \
        first.value("pipeline_runs_total", status="failed", **p0) + 1
    assert second.value("pipeline_rows_processed_total", **p0) == first.value("pipeline_rows_processed_total", **p0) + 22
    assert second.value("pipeline_runs_running", **p0) == 0

    time.sleep(3.5)
    third = served.metrics()  # the window passed: all folded into the closed totals, nothing moves
    assert counters(third) == counters(second)

    # a new dbperf (a restart) recomputes the same totals from the table: no jump
    restarted = serve(cfg).metrics()
    assert counters(restarted) == counters(third)
    assert len(counters(third)) > 10


def test_100k_stored_runs_first_and_later_scrapes(etl, serve):
    table = fresh_table(etl, "big")
    etl.execute(f"""INSERT INTO {table} (pipeline, run_id, status, started_at, finished_at, rows_processed, errors)
        SELECT 'job_' || (g % 20), 'run' || g, CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'success' END,
               now() - make_interval(secs => 3600 + g * 30 + (g % 500)), now() - make_interval(secs => 3600 + g * 30),
               g % 1000, (g % 10 = 0)::int
        FROM generate_series(1, 100000) g; ANALYZE {table}""", dbname=DB)
    served = serve(config(etl, [table_source(table=table, name="big")]))
    labels = {"collector": "pipelines", "datname": DB}

    start = time.monotonic()
    first = served.metrics()
    first_wall = time.monotonic() - start
    first_collect = first.value("dbperf_collector_duration_seconds", **labels)
    assert first.value("dbperf_collector_success", **labels) == 1
    total = sum(s.value for s in first.series("pipeline_runs_total", source="big"))
    assert total == 100000
    assert sum(s.value for s in first.series("pipeline_runs_total", source="big", status="failed")) == 10000

    later = []
    for i in range(5):
        insert(etl, table, [(f"job_{i}", f"fresh{i}", "success", 20, 1, 1, 0)])
        samples = served.metrics()
        later.append(samples.value("dbperf_collector_duration_seconds", **labels))
    assert sum(s.value for s in samples.series("pipeline_runs_total", source="big")) == 100005
    print(f"\n100k runs: first scrape collect {first_collect * 1000:.1f} ms (HTTP {first_wall * 1000:.0f} ms); "
          f"later scrapes {', '.join(f'{t * 1000:.1f}' for t in later)} ms")
    # later scrapes read only the late window, not the history
    assert max(later) < first_collect / 3, (first_collect, later)
    assert max(later) < 0.25


def test_watermark_of_a_source_in_another_database_survives_between_refreshes(etl, serve):
    """The source's database is not the target's own, so dbperf's session there lives for one
    refresh only; the watermark and the closed totals live in the target's collector and survive
    it. Seen from outside: a run written late with a finish time already older than the watermark
    is not counted before a restart (documented), whereas a watermark lost at each refresh would
    re-aggregate the whole history and count it at once. Two exporters of one config share none
    of it: the second one (a restart) counts it."""
    table = fresh_table(etl, "watermark")
    insert(etl, table, [(f"p{i % 2}", f"old{i}", "success", 9000 + i, 8000 + i, 1, 0) for i in range(40)])
    cfg = config(etl, [table_source(table=table, name="wm")], late_window="60s")
    served = serve(cfg)
    first = served.metrics()
    p0 = {"source": "wm", "pipeline": "p0"}
    assert first.value("dbperf_collector_success", collector="pipelines", datname=DB) == 1
    assert first.value("pipeline_runs_total", status="success", **p0) == 20
    insert(etl, table, [("p0", "late", "success", 7300, 7200, 1, 0)])  # finished 2 h ago, written now
    for _ in range(2):
        assert served.metrics().value("pipeline_runs_total", status="success", **p0) == 20
    restarted = serve(cfg).metrics()
    assert restarted.value("pipeline_runs_total", status="success", **p0) == 21
    assert served.metrics().value("pipeline_runs_total", status="success", **p0) == 20  # no state shared


# -- a user's own table through a mapping -------------------------------------------------------
def test_own_table_through_column_and_status_mapping(etl, serve):
    etl.execute("""DROP TABLE IF EXISTS public.etl_jobs;
        CREATE TABLE public.etl_jobs (id serial PRIMARY KEY, job_name text, state text, begin_ts timestamptz,
                                       end_ts timestamptz, nrows int);
        INSERT INTO public.etl_jobs (job_name, state, begin_ts, end_ts, nrows) VALUES
          ('load', 'ok', now() - interval '2 hours', now() - interval '1 hour', 50),
          ('load', 'error', now() - interval '50 minutes', now() - interval '40 minutes', 3),
          ('load', 'in_progress', now() - interval '10 minutes', NULL, 0)""", dbname=DB)
    src = table_source(table="etl_jobs", columns={"pipeline": "job_name", "run_id": "id", "status": "state",
                                                  "started_at": "begin_ts", "finished_at": "end_ts",
                                                  "rows_processed": "nrows", "errors": None},
                       statuses={"success": "ok", "failed": ["error", "crashed"], "running": "in_progress"})
    samples = serve(config(etl, [src])).metrics()
    load = {"source": "public.etl_jobs", "pipeline": "load"}
    assert samples.value("pipeline_runs_total", status="success", **load) == 1
    assert samples.value("pipeline_runs_total", status="failed", **load) == 1
    assert samples.value("pipeline_rows_processed_total", **load) == 53
    assert not samples.has("pipeline_errors_total", **load)  # mapped to null: not stored
    assert samples.value("pipeline_runs_running", **load) == 1
    assert samples.value("pipeline_last_run_status", status="failed", **load) == 1
    assert samples.value("pipeline_last_run_duration_seconds", **load) == pytest.approx(600, abs=0.01)


# -- Airflow --------------------------------------------------------------------------------------
AIRFLOW2 = """
CREATE SCHEMA {s};
CREATE TABLE {s}.dag_run (
    id serial PRIMARY KEY, dag_id varchar(250) NOT NULL, queued_at timestamptz, execution_date timestamptz NOT NULL,
    start_date timestamptz, end_date timestamptz, state varchar(50), run_id varchar(250) NOT NULL,
    creating_job_id int, external_trigger boolean, run_type varchar(50) NOT NULL, conf bytea,
    data_interval_start timestamptz, data_interval_end timestamptz, last_scheduling_decision timestamptz,
    dag_hash varchar(32), log_template_id int, updated_at timestamptz, clear_number int NOT NULL DEFAULT 0,
    CONSTRAINT dag_run_dag_id_execution_date_key UNIQUE (dag_id, execution_date),
    CONSTRAINT dag_run_dag_id_run_id_key UNIQUE (dag_id, run_id));
CREATE INDEX dag_id_state ON {s}.dag_run (dag_id, state);
CREATE TABLE {s}.task_instance (
    task_id varchar(250) NOT NULL, dag_id varchar(250) NOT NULL, run_id varchar(250) NOT NULL,
    map_index int NOT NULL DEFAULT -1, start_date timestamptz, end_date timestamptz, duration float8,
    state varchar(20), try_number int, max_tries int DEFAULT -1, hostname varchar(1000), unixname varchar(1000),
    job_id int, pool varchar(256) NOT NULL, pool_slots int NOT NULL, queue varchar(256), priority_weight int,
    operator varchar(1000), custom_operator_name varchar(1000), queued_dttm timestamptz, queued_by_job_id int,
    pid int, executor_config bytea, updated_at timestamptz, rendered_map_index varchar(250),
    external_executor_id varchar(250), trigger_id int, trigger_timeout timestamp, next_method varchar(1000),
    next_kwargs json, task_display_name varchar(2000),
    PRIMARY KEY (dag_id, task_id, run_id, map_index),
    FOREIGN KEY (dag_id, run_id) REFERENCES {s}.dag_run (dag_id, run_id) ON DELETE CASCADE);
"""

AIRFLOW3 = """
CREATE SCHEMA {s};
CREATE TABLE {s}.dag_run (
    id serial PRIMARY KEY, dag_id varchar(250) NOT NULL, queued_at timestamptz, logical_date timestamptz,
    start_date timestamptz, end_date timestamptz, state varchar(50), run_id varchar(250) NOT NULL,
    creating_job_id int, run_type varchar(50) NOT NULL, triggered_by varchar(50), triggering_user_name varchar(512),
    conf jsonb, data_interval_start timestamptz, data_interval_end timestamptz, run_after timestamptz NOT NULL,
    last_scheduling_decision timestamptz, log_template_id int, updated_at timestamptz,
    clear_number int NOT NULL DEFAULT 0, backfill_id int, bundle_version varchar(250), scheduled_by_job_id int,
    context_carrier jsonb, span_status varchar(250) NOT NULL DEFAULT 'not_started', created_dag_version_id uuid,
    CONSTRAINT dag_run_dag_id_logical_date_key UNIQUE (dag_id, logical_date),
    CONSTRAINT dag_run_dag_id_run_id_key UNIQUE (dag_id, run_id));
CREATE INDEX dag_id_state ON {s}.dag_run (dag_id, state);
CREATE INDEX idx_dag_run_running_dags ON {s}.dag_run (state, dag_id) WHERE state = 'running';
CREATE INDEX idx_dag_run_queued_dags ON {s}.dag_run (state, dag_id) WHERE state = 'queued';
CREATE TABLE {s}.task_instance (
    id uuid PRIMARY KEY, task_id varchar(250) NOT NULL, dag_id varchar(250) NOT NULL, run_id varchar(250) NOT NULL,
    map_index int NOT NULL DEFAULT -1, start_date timestamptz, end_date timestamptz, duration float8,
    state varchar(20), try_number int, max_tries int DEFAULT -1, hostname varchar(1000), unixname varchar(1000),
    pool varchar(256) NOT NULL, pool_slots int NOT NULL, queue varchar(256), priority_weight int,
    operator varchar(1000), custom_operator_name varchar(1000), queued_dttm timestamptz, scheduled_dttm timestamptz,
    queued_by_job_id int, last_heartbeat_at timestamptz, pid int, executor varchar(1000), executor_config bytea,
    updated_at timestamptz, rendered_map_index varchar(250), context_carrier jsonb,
    span_status varchar(250) NOT NULL DEFAULT 'not_started', external_executor_id varchar(250), trigger_id int,
    trigger_timeout timestamptz, next_method varchar(1000), next_kwargs jsonb, task_display_name varchar(2000),
    dag_version_id uuid,
    CONSTRAINT task_instance_composite_key UNIQUE (dag_id, task_id, run_id, map_index),
    FOREIGN KEY (dag_id, run_id) REFERENCES {s}.dag_run (dag_id, run_id) ON DELETE CASCADE);
"""


def airflow_runs(pg, schema: str, version: int) -> None:
    date = "execution_date" if version == 2 else "logical_date"
    extra_cols, extra_vals = ("", "") if version == 2 else (", run_after", ", now()")
    runs = [  # run_id, state, start (seconds ago), end (seconds ago)
        ("scheduled__1", "success", 90000, 89000), ("scheduled__2", "failed", 3700, 3600),
        ("scheduled__3", "running", 1200, None), ("manual__4", "queued", None, None)]
    with pg.connect(DB) as conn:
        for i, (run_id, state, start, end) in enumerate(runs):
            conn.execute(
                f"INSERT INTO {schema}.dag_run (dag_id, run_id, state, run_type, {date}, queued_at, start_date, "
                f"end_date{extra_cols}) VALUES ('etl_dag', %s, %s, %s, now() - make_interval(days => %s), now(), "
                f"now() - make_interval(secs => %s), now() - make_interval(secs => %s){extra_vals})",
                (run_id, state, run_id.split("__")[0], i, start, end))
        ti_id = "gen_random_uuid(), " if version == 3 else ""
        ti_col = "id, " if version == 3 else ""
        for task, state in (("extract", "success"), ("transform", "failed"), ("load", "upstream_failed")):
            conn.execute(f"INSERT INTO {schema}.task_instance ({ti_col}task_id, dag_id, run_id, state, pool, "
                         f"pool_slots) VALUES ({ti_id}%s, 'etl_dag', 'scheduled__2', %s, 'default_pool', 1)",
                         (task, state))


@pytest.mark.parametrize("version", [2, 3])
def test_airflow_metadata_db(etl, serve, version):
    schema = f"airflow{version}"
    etl.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE", dbname=DB)
    etl.execute((AIRFLOW2 if version == 2 else AIRFLOW3).format(s=schema), dbname=DB)
    airflow_runs(etl, schema, version)
    src = {"type": "airflow", "database": DB, "schema": schema, "name": schema,
           "expected_intervals": {"etl_dag": "1h"}}
    samples = serve(config(etl, [src])).metrics()
    assert samples.value("dbperf_collector_success", collector="pipelines", datname=DB) == 1
    assert samples.value("pipeline_source_info", source=schema, type="airflow", version=str(version), datname=DB) == 1
    dag = {"source": schema, "pipeline": "etl_dag"}
    assert samples.value("pipeline_runs_total", status="success", **dag) == 1
    assert samples.value("pipeline_runs_total", status="failed", **dag) == 1
    assert samples.value("pipeline_errors_total", **dag) == 1  # one failed task instance
    assert samples.value("pipeline_run_duration_seconds_sum", **dag) == pytest.approx(1100, abs=0.01)
    assert samples.value("pipeline_last_run_status", status="failed", **dag) == 1
    assert samples.value("pipeline_last_success_timestamp_seconds", **dag) == pytest.approx(db_time(etl, 89000), abs=5)
    assert samples.value("pipeline_runs_running", **dag) == 1
    assert samples.value("pipeline_runs_queued", **dag) == 1
    assert samples.value("pipeline_oldest_running_run_age_seconds", **dag) == pytest.approx(1200, abs=30)
    assert samples.value("pipeline_expected_interval_seconds", **dag) == 3600
    assert not samples.has("pipeline_rows_processed_total", **dag)  # Airflow does not store rows
    assert promtool_check_metrics(samples.text) == ""


# -- bad input ------------------------------------------------------------------------------------
def _failure(served, caplog, needle: str):
    with caplog.at_level("WARNING", logger="dbperf"):
        samples = served.metrics()
    lines = [r.getMessage() for r in caplog.records if "collector=pipelines" in r.getMessage()]
    assert len(lines) == 1, lines
    assert needle in lines[0], lines[0]
    assert samples.value("dbperf_collector_success", collector="pipelines", datname=DB) == 0
    # the rest of the scrape is intact
    assert samples.value("pg_up", target="main") == 1
    assert samples.value("dbperf_collector_success", collector="tables", datname=DB) == 1
    assert samples.value("dbperf_collector_success", collector="settings", datname="") == 1
    return lines[0]


def test_missing_table_is_one_clear_collector_error(etl, serve, caplog):
    served = serve(config(etl, [table_source(table="dbperf.nope")]))
    line = _failure(served, caplog, "table dbperf.nope does not exist in database pipelines_test")
    assert "\n" not in line


def test_missing_mapped_column_is_one_clear_collector_error(etl, serve, caplog):
    fresh_table(etl, "nocol")
    etl.execute("ALTER TABLE dbperf.nocol DROP COLUMN rows_processed", dbname=DB)
    served = serve(config(etl, [table_source(table="dbperf.nocol", columns={"finished_at": "ended"})]))
    _failure(served, caplog, "table dbperf.nocol in database pipelines_test has no column 'ended' (columns.finished_at)")


def test_missing_default_column_is_named(etl, serve, caplog):
    served = serve(config(etl, [table_source(table="dbperf.nocol")]))
    _failure(served, caplog, "table dbperf.nocol in database pipelines_test has no column 'rows_processed'")


def test_not_an_airflow_database_is_named(etl, serve, caplog):
    served = serve(config(etl, [{"type": "airflow", "database": DB}]))
    _failure(served, caplog, "table public.dag_run does not exist in database pipelines_test")


def test_source_database_left_out_by_the_target_is_an_error(etl, serve, caplog):
    served = serve(config(etl, [table_source()], databases={"exclude": DB}))
    with caplog.at_level("WARNING", logger="dbperf"):
        samples = served.metrics()
    assert samples.value("dbperf_collector_success", collector="pipelines", datname="postgres") == 0
    assert any("database pipelines_test is not scraped by this target" in r.getMessage() for r in caplog.records)


# -- config -------------------------------------------------------------------------------------
def test_pipelines_collector_is_off_without_sources(pg, serve):
    target = make_config(pg).targets[0]
    assert target.pipelines is None and not target.collector("pipelines", False).enabled
    on = make_config(pg, {"pipelines": {"sources": [{"type": "airflow"}]}}).targets[0]
    assert on.collector("pipelines", False).enabled
    assert on.pipelines.sources[0].name == "airflow" and on.pipelines.late_window == 900
    off = make_config(pg, {"pipelines": {"sources": [{"type": "airflow"}]}, "collectors": {"pipelines": False}})
    assert not off.targets[0].collector("pipelines", False).enabled


@pytest.mark.parametrize("pipelines, key, reason", [
    ({"sources": []}, "targets[0].pipelines.sources", "non-empty list"),
    ({"sources": [{"type": "dagster"}]}, "targets[0].pipelines.sources[0].type", "must be one of table, airflow"),
    ({"sources": [{"type": "table", "tabel": "x"}]}, "targets[0].pipelines.sources[0].tabel", "unknown key"),
    ({"sources": [{"type": "table", "table": "a.b.c"}]}, "targets[0].pipelines.sources[0].table", "SCHEMA.TABLE"),
    ({"sources": [{"type": "table", "columns": {"status": "st; drop"}}]},
     "targets[0].pipelines.sources[0].columns.status", "must be a column name"),
    ({"sources": [{"type": "table", "columns": {"pipeline": None}}]},
     "targets[0].pipelines.sources[0].columns.pipeline", "is required"),
    ({"sources": [{"type": "table", "columns": {"duration": "d"}}]},
     "targets[0].pipelines.sources[0].columns.duration", "unknown key"),
    ({"sources": [{"type": "table", "statuses": {"done": "ok"}}]},
     "targets[0].pipelines.sources[0].statuses.done", "unknown key"),
    ({"sources": [{"type": "table", "expected_intervals": {"x": "daily"}}]},
     "targets[0].pipelines.sources[0].expected_intervals.x", "must be a duration"),
    ({"sources": [{"type": "airflow"}, {"type": "airflow"}]}, "targets[0].pipelines.sources[1].name", "duplicate"),
    ({"sources": [{"type": "airflow"}], "late_window": "0s"}, "targets[0].pipelines.late_window", "greater than 0"),
    ({"sources": [{"type": "airflow", "schema": "a-b"}]}, "targets[0].pipelines.sources[0].schema", "identifier"),
    ("yes", "targets[0].pipelines", "must be a mapping"),
])
def test_config_mistakes_name_the_key(pipelines, key, reason):
    with pytest.raises(ConfigError) as err:
        parse({"targets": [{"name": "t", "dsn": "host=x", "pipelines": pipelines}]}, source="cfg.yaml")
    assert err.value.key == key, str(err.value)
    assert reason in err.value.reason, str(err.value)
    assert str(err.value).startswith(f"cfg.yaml: {key}: ")
