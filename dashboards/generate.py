"""Generates dbperf's Grafana dashboards (dashboards/json/*.json) from plain Python.

    python dashboards/generate.py           # write dashboards/json/
    python dashboards/generate.py --check   # exit 1 when a checked-in file differs from the generator

Targets Grafana 10.4 (classic dashboard JSON, schemaVersion 39); Grafana 11 and 12 migrate it on
load. Thresholds come from alerts/thresholds.yaml (production profile), so a red cell means what
the alert means. Queries use the recording rules of alerts/rules/ (``dbperf:...``) where they exist.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from panels import (bargauge, custom_var, dashboard, gauge, heatmap, query_var, row, stat,  # noqa: E402
                    state_timeline, table, target, timeseries, value_map)
import mysql_dashboard  # noqa: E402

HERE = Path(__file__).resolve().parent
OUT = HERE / "json"
ROOT = HERE.parent

RI = "$__rate_interval"
PG = 'job=~"$job", instance=~"$instance", target=~"$target"'
PGD = PG + ', datname=~"$datname"'
# one table or index: not the other rows that sum a database's tables folded by max_series
# (schemaname="", a name no schema has); sums over a database keep PGD, other rows included
# per-table panels leave out the max_series `other` rows (schemaname=""); written =~".+", not !="":
# VictoriaMetrics answers `schemaname!=""` inside this and-on expression with nothing (tests/test_victoriametrics.py)
PGT = PGD + ', schemaname=~".+"'
BY = "job, instance, target"


def thresholds() -> dict:
    data = yaml.safe_load((ROOT / "alerts" / "thresholds.yaml").read_text())
    return data["profiles"]["production"]


T = thresholds()


def secs(key: str) -> float:
    """A duration threshold (``15m``, ``1h``, ``30s`` or a number) in seconds."""
    value = T[key]
    if isinstance(value, (int, float)):
        return float(value)
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for suffix in ("ms", "s", "m", "h", "d"):
        if value.endswith(suffix) and value[:-len(suffix)].replace(".", "", 1).isdigit():
            return float(value[:-len(suffix)]) * units[suffix]
    raise ValueError(f"alerts/thresholds.yaml: {key}: not a duration: {value!r}")


def pg_variables(datname: bool = True) -> list:
    out = [query_var("job", "Job", "label_values(pg_up, job)"),
           query_var("instance", "Instance", 'label_values(pg_up{job=~"$job"}, instance)'),
           query_var("target", "Target", 'label_values(pg_up{job=~"$job", instance=~"$instance"}, target)')]
    if datname:
        out.append(query_var("datname", "Database",
                             f'label_values(pg_stat_database_numbackends{{{PG}, datname!~"template.*"}}, datname)'))
    return out


def series_link() -> dict:
    """A data link from a per-server series to the server dashboard."""
    return {"title": "Open the PostgreSQL server dashboard",
            "url": "/d/dbperf-postgres/dbperf-postgresql-server?${__url_time_range}&var-datasource=${datasource}"
                   "&var-job=${__field.labels.job}&var-instance=${__field.labels.instance}"
                   "&var-target=${__field.labels.target}", "targetBlank": False}


def linked(panel: dict) -> dict:
    panel["fieldConfig"]["defaults"]["links"] = [series_link()]
    return panel


def server_link(text_field: str = "target") -> dict:
    return {"title": "Open the PostgreSQL server dashboard",
            "url": "/d/dbperf-postgres/dbperf-postgresql-server?${__url_time_range}&var-datasource=${datasource}"
                   "&var-job=${__data.fields.job}&var-instance=${__data.fields.instance}"
                   "&var-target=${__data.fields." + text_field + "}", "targetBlank": False}


UP_MAP = value_map({0: ("down", "red"), 1: ("up", "green")})


# -- Overview ---------------------------------------------------------------------------------
def overview() -> dict:
    zero = f"0 * pg_up{{{PG}}}"
    items = [
        stat("Servers up", "PostgreSQL and MySQL servers dbperf could connect to and query in its last scrape.",
             [target(f"sum(pg_up{{{PG}}} or mysql_up{{{PG}}})", "up")], "none"),
        stat("Servers down", "Monitored servers with pg_up or mysql_up 0: dbperf cannot connect or query them.",
             [target(f"count(pg_up{{{PG}}} == 0 or mysql_up{{{PG}}} == 0) or vector(0)", "down")], "none",
             thresholds=[1]),
        stat("Firing alerts", "Alerts firing now for the selected servers (the Prometheus ALERTS series).",
             [target(f'count(ALERTS{{alertstate="firing", {PG}}}) or vector(0)', "firing")], "none",
             thresholds=[1]),
        stat("Exporters up", "dbperf processes Prometheus scraped successfully (the scrape's own up series).",
             [target('sum(up{job=~"$job", instance=~"$instance"})', "up")], "none"),
        stat("Statements per second", "Statements executed per second on the selected servers (pg_stat_statements).",
             [target(f"sum(dbperf:pg_statement_duration_seconds_count:rate5m{{{PG}}})", "statements/s")], "ops",
             graph=True),
        stat("Transactions per second", "Commits and rollbacks per second on the selected servers.",
             [target(f"sum(dbperf:pg_stat_database_xact:rate5m{{{PG}}})", "tps")], "ops", graph=True),
        table("Servers", "One row per monitored PostgreSQL server: up, role, version, uptime, connections "
              "used, workload p95 latency, replication lag (0 on a primary without standbys) and firing "
              "alerts. Click a target to open its PostgreSQL server dashboard.",
              [target(f"pg_up{{{PG}}}"),
               target(f"max by ({BY}, role, short_version) (pg_server_info{{{PG}}})"),
               target(f"time() - pg_postmaster_start_time_seconds{{{PG}}}"),
               target(f"dbperf:pg_connections:use_ratio{{{PG}}}"),
               target(f"max by ({BY}) (dbperf:pg_statement_duration_seconds:p95_rate5m{{{PG}}})"),
               target(f"max by ({BY}) (pg_replication_lag_seconds{{{PG}}} or "
                      f"pg_stat_replication_replay_lag_seconds{{{PG}}}) or {zero}"),
               target(f'count by ({BY}) (ALERTS{{alertstate="firing", {PG}}}) or {zero}')],
              "none", h=9,
              columns={"role": "Role", "short_version": "Version", "Value #A": "Up", "Value #C": "Uptime",
                       "Value #D": "Connections used", "Value #E": "p95 latency",
                       "Value #F": "Replication lag", "Value #G": "Firing alerts", "target": "Target",
                       "job": "Job", "instance": "Instance"},
              hide=("Time", "Value #B"),
              units={"Uptime": "dtdurations", "Connections used": "percentunit", "p95 latency": "s",
                     "Replication lag": "s", "Up": "none", "Firing alerts": "none"},
              links={"Target": server_link("target")},
              cell_colors={"Up": "color-background", "Connections used": "color-background",
                           "Firing alerts": "color-background"},
              mappings={"Up": UP_MAP}),
        linked(timeseries("Connections used per server", "Client connections as a fraction of the connections "
                   "available to ordinary roles; dashed lines at the alert thresholds.",
                   [target(f"dbperf:pg_connections:use_ratio{{{PG}}}", "{{target}}")], "percentunit",
                   max_=1, thresholds=[T["connections_warning"], T["connections_critical"]])),
        linked(timeseries("Workload p95 latency per server", "95th percentile of statement execution time per "
                   "server (slowest database), from the pg_statement_duration_seconds histogram.",
                   [target(f"max by ({BY}) (dbperf:pg_statement_duration_seconds:p95_rate5m{{{PG}}})",
                           "{{target}}")], "s", thresholds=[T["workload_p95_warning"]])),
        *mysql_dashboard.overview_items(T, PG),
        table("Firing alerts", "Every alert firing now for the selected servers, with its labels "
              "(empty when all is well).",
              [target(f'ALERTS{{alertstate="firing", {PG}}}')], "none", h=7,
              hide=("Time", "Value", "__name__", "alertstate")),
    ]
    # every server of both kinds: the variables list the jobs, instances and targets of either
    servers = '{__name__=~"pg_up|mysql_up", job=~"$job"'
    variables = [query_var("job", "Job", 'label_values({__name__=~"pg_up|mysql_up"}, job)'),
                 query_var("instance", "Instance", f"label_values({servers}}}, instance)"),
                 query_var("target", "Target", f'label_values({servers}, instance=~"$instance"}}, target)')]
    return dashboard("dbperf-overview", "dbperf / Overview",
                     "Every monitored PostgreSQL and MySQL server on one screen; click a target for its details.",
                     variables, items, tags=("overview",))


# -- PostgreSQL server ------------------------------------------------------------------------
def with_progress_info(expr: str) -> str:
    """``expr`` (one series per running operation) with pg_stat_progress_info's command, phase,
    kind and index as labels."""
    return (f"{expr} * on ({BY}, datname, pid) group_left (command, phase, kind, indexrelname) "
            f"pg_stat_progress_info{{{PGD}}}")



SETTINGS = [("shared_buffers", "pg_settings_shared_buffers_bytes", "bytes"),
            ("effective_cache_size", "pg_settings_effective_cache_size_bytes", "bytes"),
            ("work_mem", "pg_settings_work_mem_bytes", "bytes"),
            ("maintenance_work_mem", "pg_settings_maintenance_work_mem_bytes", "bytes"),
            ("max_connections", "pg_settings_max_connections", "none"),
            ("max_wal_size", "pg_settings_max_wal_size_bytes", "bytes"),
            ("checkpoint_timeout", "pg_settings_checkpoint_timeout_seconds", "s"),
            ("random_page_cost", "pg_settings_random_page_cost", "none"),
            ("autovacuum_freeze_max_age", "pg_settings_autovacuum_freeze_max_age", "none"),
            ("track_io_timing", "pg_settings_track_io_timing", "bool_on_off"),
            ("autovacuum", "pg_settings_autovacuum", "bool_on_off"),
            ("max_parallel_workers", "pg_settings_max_parallel_workers", "none")]


def postgres() -> dict:
    items = [
        row("Health"),
        stat("Up", "1 when dbperf could connect to the server and query it in its last scrape.",
             [target(f"pg_up{{{PG}}}", "{{target}}")], "none", mappings=UP_MAP, thresholds=[1], low_is_bad=True,
             w=3),
        stat("Role", "primary, or replica when the server is in recovery.",
             [target(f"pg_server_info{{{PG}}}", "{{role}}", instant=True)], "none", text_mode="name", w=3),
        stat("Version", "PostgreSQL server version.",
             [target(f"pg_server_info{{{PG}}}", "{{short_version}}", instant=True)], "none", text_mode="name", w=3),
        stat("Uptime", "Time since the postmaster started.",
             [target(f"time() - pg_postmaster_start_time_seconds{{{PG}}}", "{{target}}")], "dtdurations", w=3),
        gauge("Connections used", "Client connections over the connections available to ordinary roles.",
              [target(f"dbperf:pg_connections:use_ratio{{{PG}}}", "{{target}}")], "percentunit",
              thresholds=[T["connections_warning"], T["connections_critical"]], w=3),
        stat("Transactions per second", "Commits plus rollbacks per second, all selected databases.",
             [target(f"sum(dbperf:pg_stat_database_xact:rate5m{{{PGD}}})", "tps")], "ops", graph=True, w=3),
        stat("Cache hit ratio", "Share of block reads served from shared buffers over the last 5 minutes.",
             [target(f"min(dbperf:pg_stat_database_blks:hit_ratio_rate5m{{{PGD}}})", "hit ratio")],
             "percentunit", thresholds=[T["cache_hit_ratio_warning"]], low_is_bad=True, w=3, decimals=2),
        stat("Oldest transaction", "Age of the oldest open transaction in the selected databases.",
             [target(f"max(pg_stat_activity_oldest_transaction_age_seconds{{{PGD}}})", "oldest")], "s",
             thresholds=[secs("long_transaction_warning"), secs("long_transaction_critical")], w=3),
        row("Throughput"),
        timeseries("Transactions", "Commits and rollbacks per second by database.",
                   [target(f"sum by (datname) (rate(pg_stat_database_xact_commit_total{{{PGD}}}[{RI}]))",
                           "commit {{datname}}"),
                    target(f"sum by (datname) (rate(pg_stat_database_xact_rollback_total{{{PGD}}}[{RI}]))",
                           "rollback {{datname}}")], "ops"),
        timeseries("Rows", "Rows returned, fetched, inserted, updated and deleted per second.",
                   [target(f"sum(rate(pg_stat_database_tup_{k}_total{{{PGD}}}[{RI}]))", k)
                    for k in ("returned", "fetched", "inserted", "updated", "deleted")], "cps"),
        timeseries("Rollback ratio", "Rolled back transactions over all transactions (5 minute rate).",
                   [target(f"dbperf:pg_stat_database_xact:rollback_ratio_rate5m{{{PGD}}}", "{{datname}}")],
                   "percentunit", max_=1, thresholds=[T["rollback_ratio_warning"]]),
        timeseries("Statements per second", "Statements executed per second by database (pg_stat_statements).",
                   [target(f"dbperf:pg_statement_duration_seconds_count:rate5m{{{PGD}}}", "{{datname}}")], "ops"),
        row("Connections"),
        timeseries("Sessions by state", "Client sessions by state (active, idle, idle in transaction...).",
                   [target(f"sum by (state) (pg_stat_activity_sessions{{{PGD}}})", "{{state}}")], "short",
                   stack=True),
        timeseries("Sessions by database", "Client sessions by database.",
                   [target(f"sum by (datname) (pg_stat_activity_sessions{{{PGD}}})", "{{datname}}")], "short",
                   stack=True),
        timeseries("Connections used and limit", "Client connections open and the limit for ordinary roles "
                   "(max_connections minus the reserved ones).",
                   [target(f"pg_connections_used{{{PG}}}", "used"), target(f"pg_connections_limit{{{PG}}}", "limit")],
                   "short"),
        timeseries("Sessions by application", "Client sessions by application_name.",
                   [target(f"sum by (application_name) (pg_stat_activity_sessions{{{PGD}}})",
                           "{{application_name}}")], "short", stack=True),
        row("Cache and I/O"),
        timeseries("Cache hit ratio", "Blocks found in shared buffers over all blocks read, by database.",
                   [target(f"dbperf:pg_stat_database_blks:hit_ratio_rate5m{{{PGD}}}", "{{datname}}")],
                   "percentunit", max_=1, min_=None, thresholds=[T["cache_hit_ratio_warning"]]),
        timeseries("Bytes read and hit", "Bytes read from outside shared buffers and found in them, per second.",
                   [target(f"sum(rate(pg_stat_database_blks_read_bytes_total{{{PGD}}}[{RI}]))", "read"),
                    target(f"sum(rate(pg_stat_database_blks_hit_bytes_total{{{PGD}}}[{RI}]))", "hit")], "Bps"),
        timeseries("Temporary files", "Bytes written to temporary files by queries (sorts, hashes spilling "
                   "out of work_mem), per second.",
                   [target(f"sum by (datname) (rate(pg_stat_database_temp_bytes_total{{{PGD}}}[{RI}]))",
                           "{{datname}}")], "Bps"),
        timeseries("Block read and write time", "Time backends spent reading and writing data file blocks, "
                   "seconds per second (needs track_io_timing).",
                   [target(f"sum(rate(pg_stat_database_blk_read_seconds_total{{{PGD}}}[{RI}]))", "read"),
                    target(f"sum(rate(pg_stat_database_blk_write_seconds_total{{{PGD}}}[{RI}]))", "write")], "s"),
        row("I/O by backend type (pg_stat_io, PostgreSQL 16+)"),
        timeseries("I/O bytes by backend type", "Bytes read, written and extended per second by backend type "
                   "(client backends, autovacuum, checkpointer, background writer...), from pg_stat_io.",
                   [target(f"sum by (backend_type) (rate(pg_stat_io_{op}_bytes_total{{{PG}}}[{RI}]))",
                           f"{op} {{{{backend_type}}}}") for op in ("read", "write", "extend")], "Bps"),
        timeseries("I/O time by backend type", "Seconds per second spent reading and writing (data files and, "
                   "on 18, WAL) by backend type; needs track_io_timing (track_wal_io_timing for WAL).",
                   [target(f"sum by (backend_type) (rate(pg_stat_io_{op}_seconds_total{{{PG}}}[{RI}]))",
                           f"{op} {{{{backend_type}}}}") for op in ("read", "write")], "s"),
        timeseries("Evictions and client backend writes", "Buffers evicted per second by backend type, and "
                   "buffers client backends had to write themselves: the background writer and checkpointer "
                   "do not keep up (pg_stat_bgwriter's buffers_backend before 17).",
                   [target(f"sum by (backend_type) (rate(pg_stat_io_evictions_total{{{PG}}}[{RI}]))",
                           "evicted {{backend_type}}"),
                    target(f'sum by (context) (rate(pg_stat_io_writes_total{{{PG}, backend_type="client backend"}}'
                           f"[{RI}]))", "client writes {{context}}")], "ops", w=24),
        row("Locks and deadlocks"),
        timeseries("Locks granted by mode", "Heavyweight locks held, by mode.",
                   [target(f"sum by (mode) (pg_locks_granted{{{PGD}}})", "{{mode}}")], "short", stack=True),
        timeseries("Lock waits", "Lock requests waiting (by mode) and sessions blocked by another session.",
                   [target(f"sum by (mode) (pg_locks_waiting{{{PGD}}})", "waiting {{mode}}"),
                    target(f"sum(pg_stat_activity_blocked_sessions{{{PGD}}})", "blocked sessions")], "short"),
        timeseries("Deadlocks", "Deadlocks detected per second, by database.",
                   [target(f"sum by (datname) (rate(pg_stat_database_deadlocks_total{{{PGD}}}[{RI}]))",
                           "{{datname}}")], "ops"),
        timeseries("Recovery conflicts", "Queries cancelled on a replica by recovery conflicts, per second.",
                   [target(f"sum by (datname) (rate(pg_stat_database_conflicts_total{{{PGD}}}[{RI}]))",
                           "{{datname}}")], "ops"),
        row("Checkpoints and WAL"),
        timeseries("Checkpoints", "Scheduled (timed) and requested checkpoints per second; many requested "
                   "checkpoints mean max_wal_size is too small.",
                   [target(f"rate(pg_stat_checkpointer_num_timed_total{{{PG}}}[{RI}])", "timed"),
                    target(f"rate(pg_stat_checkpointer_num_requested_total{{{PG}}}[{RI}])", "requested")], "ops"),
        timeseries("Checkpoint write and sync time", "Time spent writing and syncing files during checkpoints, "
                   "seconds per second.",
                   [target(f"rate(pg_stat_checkpointer_write_time_seconds_total{{{PG}}}[{RI}])", "write"),
                    target(f"rate(pg_stat_checkpointer_sync_time_seconds_total{{{PG}}}[{RI}])", "sync")], "s"),
        timeseries("WAL generated", "WAL bytes written per second (from the WAL position).",
                   [target(f"rate(pg_wal_lsn_bytes_total{{{PG}}}[{RI}])", "{{target}}")], "Bps"),
        timeseries("WAL on disk and buffers written", "Size of pg_wal, and bytes written by checkpoints and "
                   "the background writer per second.",
                   [target(f"pg_wal_size_bytes{{{PG}}}", "pg_wal size"),
                    target(f"rate(pg_stat_checkpointer_buffers_written_bytes_total{{{PG}}}[{RI}])",
                           "checkpointer written/s"),
                    target(f"rate(pg_stat_bgwriter_buffers_clean_bytes_total{{{PG}}}[{RI}])", "bgwriter written/s")],
                   "bytes"),
        timeseries("WAL archiving", "WAL files archived and failed archive attempts per second.",
                   [target(f"rate(pg_stat_archiver_archived_total{{{PG}}}[{RI}])", "archived"),
                    target(f"rate(pg_stat_archiver_failed_total{{{PG}}}[{RI}])", "failed")], "ops"),
        row("Vacuum and wraparound"),
        timeseries("Transaction ID age / autovacuum_freeze_max_age", "Oldest unfrozen transaction ID age over "
                   "autovacuum_freeze_max_age per database; above 1 an anti-wraparound vacuum is forced.",
                   [target(f"pg_database_xid_age_autovacuum_freeze_max_age_ratio{{{PGD}}}", "{{datname}}")],
                   "percentunit", thresholds=[1, T["xid_freeze_ratio_warning"]]),
        timeseries("Transaction ID age", "Transactions since the oldest unfrozen transaction ID; wraparound "
                   "shutdown at about 2.1 billion.",
                   [target(f"pg_database_xid_age{{{PGD}}}", "{{datname}}")], "short",
                   thresholds=[T["xid_age_critical"]]),
        timeseries("Autovacuum and autoanalyze", "Autovacuum and autoanalyze runs per second on the tables.",
                   [target(f"sum(rate(pg_stat_user_tables_autovacuum_total{{{PGD}}}[{RI}]))", "autovacuum"),
                    target(f"sum(rate(pg_stat_user_tables_autoanalyze_total{{{PGD}}}[{RI}]))", "autoanalyze")],
                   "ops"),
        timeseries("Dead rows (top 10 tables)", "Estimated dead rows of the 10 tables with the most.",
                   [target(f"topk(10, pg_stat_user_tables_n_dead_tup{{{PGT}}})", "{{datname}}.{{relname}}")],
                   "short"),
        table("Maintenance running now", "Every VACUUM, ANALYZE, CREATE INDEX / REINDEX and CLUSTER / VACUUM "
              "FULL running (pg_stat_progress_*): its phase, how long it runs, its progress through the blocks "
              "to scan and their size. Empty when nothing runs.",
              [target(with_progress_info(f"pg_stat_progress_elapsed_seconds{{{PGD}}}")),
               target(with_progress_info(f"pg_stat_progress_done_bytes{{{PGD}}} / "
                                         f"(pg_stat_progress_size_bytes{{{PGD}}} > 0)")),
               target(with_progress_info(f"pg_stat_progress_size_bytes{{{PGD}}}"))], "none", h=7,
              columns={"datname": "Database", "schemaname": "Schema", "relname": "Relation", "pid": "PID",
                       "command": "Command", "phase": "Phase", "kind": "Kind", "indexrelname": "Index",
                       "Value #A": "Running for", "Value #B": "Progress", "Value #C": "Size"},
              hide=("Time", "job", "instance", "target"),
              units={"Running for": "dtdurations", "Progress": "percentunit", "Size": "bytes"}, sort="Running for"),
        timeseries("Maintenance progress", "Share of the blocks each running operation has scanned so far, "
                   "and a vacuum's dead item memory over its limit: a large table's vacuum that reaches 1 must "
                   "vacuum its indexes before it scans on (index_vacuum_cycles counts them; raise "
                   "maintenance_work_mem / autovacuum_work_mem).",
                   [target(f"pg_stat_progress_done_bytes{{{PGD}}} / (pg_stat_progress_size_bytes{{{PGD}}} > 0)",
                           "{{datname}}.{{relname}} ({{pid}})"),
                    target(f"pg_stat_progress_vacuum_dead_tuple_bytes{{{PGD}}} / "
                           f"(pg_stat_progress_vacuum_max_dead_tuple_bytes{{{PGD}}} > 0)",
                           "dead item memory {{datname}}.{{relname}} ({{pid}})")], "percentunit", max_=1, w=24),
        row("Replication"),
        timeseries("Replica lag", "On a replica: time since the last replayed transaction (0 when all "
                   "received WAL is replayed).",
                   [target(f"pg_replication_lag_seconds{{{PG}}}", "{{target}}")], "s",
                   thresholds=[secs("replication_lag_warning")]),
        timeseries("Standby replay lag", "On a primary: replay lag of each connected standby.",
                   [target(f"pg_stat_replication_replay_lag_seconds{{{PG}}}", "{{application_name}}")], "s"),
        timeseries("Replication slots: retained WAL", "WAL kept on disk for each replication slot.",
                   [target(f"pg_replication_slots_retained_wal_bytes{{{PG}}}", "{{slot_name}}")], "bytes",
                   thresholds=[T["slot_retained_warning_bytes"]]),
        stat("Replica", "1 when the server is in recovery (a replica), 0 on a primary.",
             [target(f"pg_replication_is_replica{{{PG}}}", "{{target}}")], "none",
             mappings=value_map({0: ("primary", "blue"), 1: ("replica", "purple")}), w=12),
        row("Settings"),
        table("Settings", "Key settings of the server in base units (every numeric setting is exported as "
              "pg_settings_*).",
              [target(f"max by ({BY}) ({metric}{{{PG}}})") for _, metric, _ in SETTINGS], "none", h=6,
              columns={f"Value #{chr(65 + i)}": name for i, (name, _, _) in enumerate(SETTINGS)},
              units={name: unit for name, _, unit in SETTINGS}),
    ]
    return dashboard("dbperf-postgres", "dbperf / PostgreSQL server",
                     "One PostgreSQL server: throughput, connections, cache and I/O, locks, checkpoints and "
                     "WAL, vacuum and wraparound, replication and settings.",
                     pg_variables(), items, tags=("postgresql",))


# -- Queries ----------------------------------------------------------------------------------
QBY = f"{BY}, datname, queryid"


def with_label(expr: str, info: str, label: str) -> str:
    """``expr`` (one series per statement) with ``label`` of the info series ``info`` (one per
    statement) where there is one, and the statements without one kept as they are."""
    return f"({expr}) * on ({QBY}) group_left ({label}) {info} or on ({QBY}) ({expr})"


def with_text(expr: str) -> str:
    """``expr`` with the statement's text as a ``query`` label when dbperf exposes it
    (statements.query_text), and without it otherwise."""
    return with_label(expr, f"max by ({QBY}, query) (pg_stat_statements_query_info{{{PGD}}})", "query")


def with_plan(expr: str) -> str:
    """``expr`` with the fingerprint of the statement's current plan (pg_statement_plan_info) as a ``plan`` label."""
    return with_label(expr, f"topk by ({QBY}) (1, pg_statement_plan_info{{{PGD}}})", "plan")


ROUTE_LOAD = f'pg_route_active_seconds_total{{{PGD}, route=~"$route"}}'
ROUTE_STATEMENTS = (f"topk($topn, sum by ({QBY}, route) (increase(pg_route_statement_active_seconds_total"
                    f'{{{PGD}, route=~"$route"}}[$__range])))')


def top_statements(metric: str) -> str:
    return (f'topk($topn, sum by ({QBY}) (increase({metric}{{{PGD}, queryid!="other"}}[$__range])))')


def db_load() -> dict:
    """Average active sessions by wait event type (the wait_events sampler), stacked, against the
    CPUs of dbperf's host (host_cpus: the database's own when dbperf runs beside it)."""
    load = f'sum by (wait_event_type) (rate(pg_active_sessions_seconds_total{{{PGD}, state="active"}}[{RI}]))'
    panel = timeseries(
        "DB load by wait event type", "Average active client sessions (the wait_events sampler's "
        "pg_active_sessions_seconds_total, state active) stacked by what they wait on: CPU (waiting on nothing), "
        "Lock, LWLock, IO, IPC, Client ... Load above the CPUs line means sessions queue for CPU or wait; the "
        "CPUs are those of dbperf's host (host_cpus), the database's own when dbperf runs beside it.",
        [target(load, "{{wait_event_type}}"), target(f"max(host_cpus{{{HOST}}})", "CPUs")], "short", stack=True, w=24)
    panel["fieldConfig"]["overrides"].append({"matcher": {"id": "byName", "options": "CPUs"}, "properties": [
        {"id": "custom.stacking", "value": {"mode": "none", "group": "A"}}, {"id": "custom.fillOpacity", "value": 0},
        {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}]})
    return panel


def top_load(title: str, description: str, selector: str, by: str, legend: str) -> dict:
    """The $topn largest shares of a DB load counter (seconds of active sessions) at each instant, stacked."""
    return timeseries(title, description, [target(f"topk($topn, sum by ({by}) (rate({selector}[{RI}])))", legend)],
                      "short", stack=True)


def queries() -> dict:
    calls = f'sum by ({QBY}) (increase(pg_stat_statements_calls_total{{{PGD}, queryid!="other"}}[$__range]))'
    secs = f'sum by ({QBY}) (increase(pg_stat_statements_seconds_total{{{PGD}, queryid!="other"}}[$__range]))'
    cols = {"datname": "Database", "queryid": "Query ID", "query": "Query", "Value": "Value"}
    hide = ("Time", "job", "instance")

    def top_table(title, description, expr, unit, value_name):
        return table(title, description, [target(with_text(expr))], unit, w=12, h=9,
                     columns={**cols, "Value": value_name}, hide=hide, units={value_name: unit}, sort=value_name)

    items = [
        row("Database load"),
        db_load(),
        top_load("DB load by wait event", "Average active client sessions by wait event (type: event), the $topn "
                 "largest at each instant (pg_active_sessions_seconds_total, state active): which lock, I/O or "
                 "LWLock the load on the left waits on.",
                 f'pg_active_sessions_seconds_total{{{PGD}, state="active"}}', "wait_event_type, wait_event",
                 "{{wait_event_type}}: {{wait_event}}"),
        top_load("DB load by statement", "Average active sessions running each statement (the wait_events "
                 "sampler's pg_statement_active_seconds_total), the $topn largest at each instant: the statements "
                 "the database's time goes to; their Query ID leads to the tables below.",
                 f'pg_statement_active_seconds_total{{{PGD}, queryid!="other"}}', QBY, "{{datname}} {{queryid}}"),
        timeseries("DB load by route", "Average active sessions running statements sent by each route of the "
                   "applications (pg_route_active_seconds_total: the route template of the sqlcommenter tag "
                   "exporter.instrument adds with sql_comments=True), stacked; untagged statements (route \"\") "
                   "are left out, routes past wait_events.max_routes are \"other\".",
                   [target(f"sum by (route) (rate({ROUTE_LOAD}[{RI}]))", "{{route}}")], "short", stack=True),
        timeseries("DB load of the selected routes by wait event type", "The load of the routes selected above "
                   "(Route variable; the Application dashboard links here with one route) by what their sessions "
                   "wait on: CPU, Lock, LWLock, IO, IPC, Client ...",
                   [target(f"sum by (wait_event_type) (rate({ROUTE_LOAD}[{RI}]))", "{{wait_event_type}}")], "short",
                   stack=True),
        table("Statements of the selected routes by DB load", "The statements the routes selected above "
              "(Route variable; the Application dashboard links here with one route) ran, by their active time "
              "in the range (pg_route_statement_active_seconds_total: seconds of active sessions of the route "
              "running the statement; queryid \"other\": statements not among the statements collector's top N, "
              "or past wait_events.max_route_statements), with the statement's text (statements.query_text) and "
              "its current plan's fingerprint (pg_statement_plan_info, the plans source) where dbperf has them.",
              [target(with_text(with_plan(ROUTE_STATEMENTS)))], "s", w=24, h=9,
              columns={**cols, "route": "Route", "plan": "Plan fingerprint", "Value": "Active time"}, hide=hide,
              units={"Active time": "s"}, sort="Active time"),
        row("Workload latency"),
        timeseries("Statement latency p50 / p95 / p99", "Percentiles of statement execution time by database, "
                   "from the pg_statement_duration_seconds histogram (5 minute rate; recording rules).",
                   [target(f"dbperf:pg_statement_duration_seconds:p{q}_rate5m{{{PGD}}}", f"p{q} {{{{datname}}}}")
                    for q in (50, 95, 99)], "s",
                   thresholds=[T["workload_p95_warning"], T["workload_p99_critical"]], w=12),
        heatmap("Statement latency heatmap", "Statements per second by execution time bucket, all selected "
                "databases (pg_statement_duration_seconds_bucket).",
                [target(f"sum by (le) (rate(pg_statement_duration_seconds_bucket{{{PGD}}}[{RI}]))")], "s"),
        timeseries("Statements per second", "Statements executed per second by database.",
                   [target(f"dbperf:pg_statement_duration_seconds_count:rate5m{{{PGD}}}", "{{datname}}")], "ops"),
        timeseries("Mean time of the slowest statements", "Mean execution time (5 minute rate) of the 10 "
                   "statements with the highest mean.",
                   [target(f"topk(10, dbperf:pg_stat_statements_mean_seconds:rate5m{{{PGD}}})",
                           "{{datname}} {{queryid}}")], "s"),
        row("Top statements over the selected range"),
        top_table("Top statements by DB load", "Statements whose sessions were active the longest in the range "
                  "(pg_statement_active_seconds_total: seconds of active sessions; divided by the range, the "
                  "average sessions running it), whatever they waited on.",
                  top_statements("pg_statement_active_seconds_total"), "s", "Active time"),
        table("Plans of the top statements by DB load", "The statements with the most active time in the range "
              "and the fingerprint of their current plan (pg_statement_plan_info: node types, relations and "
              "indexes; the plans source), where dbperf has one: `dbperf plans --target T --queryid Q` prints "
              "the plans, and a fingerprint that changes is a plan change.",
              [target(with_text(with_plan(top_statements("pg_statement_active_seconds_total"))))], "s", h=9,
              columns={**cols, "plan": "Plan fingerprint", "Value": "Active time"}, hide=hide,
              units={"Active time": "s"}, sort="Active time"),
        top_table("Top statements by total time", "Statements that spent the most execution time in the "
                  "range (query text shown when statements.query_text is on).", top_statements(
                      "pg_stat_statements_seconds_total"), "s", "Total time"),
        top_table("Top statements by mean time", "Statements with the highest mean execution time in the range.",
                  f"topk($topn, {secs} / ({calls} > 0))", "s", "Mean time"),
        top_table("Top statements by calls", "Statements executed most often in the range.",
                  top_statements("pg_stat_statements_calls_total"), "short", "Calls"),
        top_table("Top statements by rows", "Statements that returned or affected the most rows in the range.",
                  top_statements("pg_stat_statements_rows_total"), "short", "Rows"),
        top_table("Top statements by I/O", "Statements that read the most bytes from outside shared buffers "
                  "in the range.", top_statements("pg_stat_statements_shared_read_bytes_total"), "bytes",
                  "Bytes read"),
        top_table("Top statements by WAL", "Statements that generated the most WAL in the range.",
                  top_statements("pg_stat_statements_wal_bytes_total"), "bytes", "WAL bytes"),
        row("Live: slow and blocked queries"),
        timeseries("Slow queries running", "Active client queries running longer than statements.slow_threshold.",
                   [target(f"sum by (datname) (pg_stat_activity_slow_queries{{{PGD}}})", "{{datname}}")], "short"),
        timeseries("Blocked sessions", "Sessions waiting for a lock held by another session.",
                   [target(f"sum by (datname) (pg_stat_activity_blocked_sessions{{{PGD}}})", "{{datname}}")],
                   "short", thresholds=[T["blocked_sessions_critical"]]),
        timeseries("Longest running query and lock wait", "Run time of the longest active query and the "
                   "longest current lock wait.",
                   [target(f"max by (datname) (pg_stat_activity_oldest_query_age_seconds{{{PGD}}})",
                           "query {{datname}}"),
                    target(f"max by (datname) (pg_stat_activity_oldest_lock_wait_seconds{{{PGD}}})",
                           "lock wait {{datname}}")], "s"),
        timeseries("Sessions waiting by wait event type", "Active client sessions waiting, by wait event type.",
                   [target(f"sum by (wait_event_type) (pg_stat_activity_waiting_sessions{{{PGD}}})",
                           "{{wait_event_type}}")], "short", stack=True),
        row("Advisor"),
        table("Advisor findings", "Index and maintenance findings of dbperf advise (the advisor collector, "
              "off by default): run `dbperf advise` for the details and the suggested fix.",
              [target(f"dbperf_advisor_findings{{{PGD}}} > 0")], "none", h=8,
              columns={"datname": "Database", "kind": "Kind", "check": "Check", "severity": "Severity",
                       "Value": "Findings"}, hide=("Time", "__name__", "job", "instance"), sort="Findings"),
    ]
    variables = [*pg_variables(),
                 query_var("route", "Route", f"label_values(pg_route_active_seconds_total{{{PGD}}}, route)"),
                 custom_var("topn", "Top N", ["5", "10", "20", "50"], "10")]
    return dashboard("dbperf-queries", "dbperf / Queries",
                     "Database load by wait event, statement and application route, statement latency, the top "
                     "statements by load, time, calls, rows and I/O with their plans, live slow and blocked queries, "
                     "and the advisor's findings.", variables, items, tags=("queries",))


# -- Tables and indexes -----------------------------------------------------------------------
def tables() -> dict:
    tby = f"{BY}, datname, schemaname, relname"
    items = [
        row("Sizes"),
        timeseries("Database sizes", "Disk space used by each database.",
                   [target(f"pg_database_size_bytes{{{PGD}}}", "{{datname}}")], "bytes"),
        table("Largest tables", "The largest tables (table with TOAST, without indexes), their index size "
              "and growth over the selected range.",
              [target(f"topk($topn, pg_stat_user_tables_table_size_bytes{{{PGT}}})"),
               target(f"pg_stat_user_tables_index_size_bytes{{{PGT}}}"),
               target(f"delta(pg_stat_user_tables_table_size_bytes{{{PGT}}}[$__range])")], "bytes", w=12,
              columns={"datname": "Database", "schemaname": "Schema", "relname": "Table", "Value #A": "Table size",
                       "Value #B": "Index size", "Value #C": "Growth"}, hide=("Time", "job", "instance", "target"),
              sort="Table size"),
        timeseries("Table growth", "Change of table size over the last hour, top 10 tables.",
                   [target(f"topk(10, delta(pg_stat_user_tables_table_size_bytes{{{PGT}}}[1h]))",
                           "{{datname}}.{{relname}}")], "bytes", min_=None),
        timeseries("Live rows (top 10 tables)", "Estimated live rows of the 10 largest tables.",
                   [target(f"topk(10, pg_stat_user_tables_n_live_tup{{{PGT}}})", "{{datname}}.{{relname}}")],
                   "short"),
        row("Scans"),
        timeseries("Sequential scans per table", "Sequential scans per second, top 10 tables; a large table "
                   "scanned sequentially often misses an index.",
                   [target(f"topk(10, sum by ({tby}) (rate(pg_stat_user_tables_seq_scan_total{{{PGT}}}[{RI}])))",
                           "{{datname}}.{{relname}}")], "ops"),
        timeseries("Index scans per table", "Index scans per second, top 10 tables.",
                   [target(f"topk(10, sum by ({tby}) (rate(pg_stat_user_tables_idx_scan_total{{{PGT}}}[{RI}])))",
                           "{{datname}}.{{relname}}")], "ops"),
        table("Sequential vs index scans", "Over the selected range: sequential scans, rows they read, index "
              "scans, and the share of scans that were sequential.",
              [target(f"topk($topn, sum by ({tby}) (increase(pg_stat_user_tables_seq_tup_read_total{{{PGT}}}[$__range])))"),
               target(f"sum by ({tby}) (increase(pg_stat_user_tables_seq_scan_total{{{PGT}}}[$__range]))"),
               target(f"sum by ({tby}) (increase(pg_stat_user_tables_idx_scan_total{{{PGT}}}[$__range]))"),
               target(f"sum by ({tby}) (increase(pg_stat_user_tables_seq_scan_total{{{PGT}}}[$__range])) / "
                      f"(sum by ({tby}) (increase(pg_stat_user_tables_seq_scan_total{{{PGT}}}[$__range])) + "
                      f"sum by ({tby}) (increase(pg_stat_user_tables_idx_scan_total{{{PGT}}}[$__range])) > 0)")],
              "short", columns={"datname": "Database", "schemaname": "Schema", "relname": "Table",
                                "Value #A": "Rows read sequentially", "Value #B": "Sequential scans",
                                "Value #C": "Index scans", "Value #D": "Sequential share"},
              hide=("Time", "job", "instance", "target"), units={"Sequential share": "percentunit"},
              sort="Rows read sequentially"),
        row("Dead rows and vacuum"),
        table("Dead rows", "Tables with the most dead rows, their share of all rows and the time since the "
              "last autovacuum.",
              [target(f"topk($topn, pg_stat_user_tables_n_dead_tup{{{PGT}}})"),
               target(f"pg_stat_user_tables_n_dead_tup{{{PGT}}} / (pg_stat_user_tables_n_dead_tup{{{PGT}}} + "
                      f"pg_stat_user_tables_n_live_tup{{{PGT}}} > 0)"),
               target(f"time() - (pg_stat_user_tables_last_autovacuum_timestamp_seconds{{{PGT}}} > 0)")],
              "short", w=12, columns={"datname": "Database", "schemaname": "Schema", "relname": "Table",
                                      "Value #A": "Dead rows", "Value #B": "Dead share",
                                      "Value #C": "Since last autovacuum"},
              hide=("Time", "job", "instance", "target"),
              units={"Dead share": "percentunit", "Since last autovacuum": "dtdurations"}, sort="Dead rows"),
        timeseries("Dead row share (top 10 tables)", "Dead rows over live plus dead rows.",
                   [target(f"topk(10, pg_stat_user_tables_n_dead_tup{{{PGT}}} / (pg_stat_user_tables_n_dead_tup"
                           f"{{{PGT}}} + pg_stat_user_tables_n_live_tup{{{PGT}}} > 0))", "{{datname}}.{{relname}}")],
                   "percentunit", max_=1, thresholds=[T["dead_tuples_ratio"]]),
        row("Indexes"),
        table("Unused indexes", "Indexes with no scan over the selected range, largest first: candidates "
              "for removal (check replicas and rare jobs first).",
              [target(f"topk($topn, pg_stat_user_indexes_size_bytes{{{PGT}}} and on ({tby}, indexrelname) "
                      f"(sum by ({tby}, indexrelname) (increase(pg_stat_user_indexes_idx_scan_total{{{PGT}}}"
                      f"[$__range])) == 0))")], "bytes",
              columns={"datname": "Database", "schemaname": "Schema", "relname": "Table",
                       "indexrelname": "Index", "Value": "Size"},
              hide=("Time", "job", "instance", "target", "__name__"), sort="Size", w=12),
        table("Index usage", "Scans per index over the selected range, with its size.",
              [target(f"topk($topn, sum by ({tby}, indexrelname) (increase(pg_stat_user_indexes_idx_scan_total"
                      f"{{{PGT}}}[$__range])))"),
               target(f"pg_stat_user_indexes_size_bytes{{{PGT}}}")], "short",
              columns={"datname": "Database", "schemaname": "Schema", "relname": "Table",
                       "indexrelname": "Index", "Value #A": "Scans", "Value #B": "Size"},
              hide=("Time", "job", "instance", "target"), units={"Size": "bytes"}, sort="Scans", w=12),
    ]
    variables = [*pg_variables(), custom_var("topn", "Top N", ["5", "10", "20", "50"], "10")]
    return dashboard("dbperf-tables", "dbperf / Tables and indexes",
                     "Table and index sizes and growth, sequential versus index scans, dead rows and unused "
                     "indexes.", variables, items, tags=("tables",))


# -- Application ------------------------------------------------------------------------------
APP = 'job=~"$app_job", instance=~"$app_instance"'
APPH = APP + ', handler=~"$handler"'
APPR = 'job=~"$app_job", handler=~"$handler"'   # the http recording rules keep job and handler only


def route_link() -> dict:
    """A data link from a per-route series to the Queries dashboard, its Route variable set (the
    route template of the SQL comments is the handler label's value; Grafana encodes it)."""
    return {"title": "Open the DB load and the statements of this route (Queries dashboard)",
            "url": "/d/dbperf-queries/dbperf-queries?${__url_time_range}&var-datasource=${datasource}"
                   "&var-route=${__field.labels.handler}", "targetBlank": False}


def route_linked(panel: dict) -> dict:
    panel["fieldConfig"]["defaults"]["links"] = [route_link()]
    return panel


def application() -> dict:
    objective = T["slo_error_objective"]
    budget = 1 - objective
    lat = T["slo_latency_threshold"]
    items = [
        row("Requests, errors, duration (RED)"),
        route_linked(timeseries(
            "Requests per second", "HTTP requests per second by route template (a series links to the route's DB "
            "load on the Queries dashboard).",
            [target(f"sum by (handler) (rate(http_requests_total{{{APPH}}}[{RI}]))", "{{handler}}")], "reqps",
            stack=True)),
        timeseries("Errors per second", "HTTP responses with a 5xx status per second, by route.",
                   [target(f'sum by (handler) (rate(http_requests_total{{{APPH}, status=~"5.."}}[{RI}]))',
                           "{{handler}}")], "reqps"),
        timeseries("Error ratio", "Share of requests answered with a 5xx status (5 minute rate; recording rule).",
                   [target(f"dbperf:http_requests:error_ratio_rate5m{{{APPR}}}", "{{handler}}")], "percentunit",
                   max_=1),
        timeseries("Responses by status", "Responses per second by status code.",
                   [target(f"sum by (status) (rate(http_requests_total{{{APPH}}}[{RI}]))", "{{status}}")], "reqps",
                   stack=True),
        timeseries("Latency p50 / p95 / p99 per route", "Request duration percentiles per route (5 minute "
                   "rate; recording rules).",
                   [target(f"dbperf:http_request_duration_seconds:p{q}_rate5m{{{APPR}}}", f"p{q} {{{{handler}}}}")
                    for q in (50, 95, 99)], "s", thresholds=[lat], legend_table=True, w=24),
        timeseries("Requests in progress", "Requests being handled now, by route.",
                   [target(f"sum by (handler) (http_requests_in_progress{{{APPH}}})", "{{handler}}")], "short"),
        timeseries("Slow requests and exceptions", "Requests slower than the slow threshold and unhandled "
                   "exceptions, per second.",
                   [target(f"sum by (handler) (rate(http_slow_requests_total{{{APPH}}}[{RI}]))", "slow {{handler}}"),
                    target(f"sum by (handler, exception) (rate(http_request_exceptions_total{{{APPH}}}[{RI}]))",
                           "{{exception}} {{handler}}")], "reqps"),
        row(f"SLO: {objective:.1%} of requests succeed, {T['slo_latency_objective']:.0%} faster than {lat:g} s"),
        stat("Availability over the range", "Share of requests without a 5xx status over the selected range.",
             [target(f'1 - (sum(increase(http_requests_total{{{APPH}, status=~"5.."}}[$__range])) or vector(0)) / '
                     f"sum(increase(http_requests_total{{{APPH}}}[$__range]))", "availability")], "percentunit",
             thresholds=[objective], low_is_bad=True, decimals=3, w=6),
        stat("Error budget left", f"Share of the error budget ({budget:.1%} of requests) not yet spent over the "
             "selected range; negative when it is exhausted.",
             [target(f'1 - ((sum(increase(http_requests_total{{{APPH}, status=~"5.."}}[$__range])) or vector(0)) / '
                     f"sum(increase(http_requests_total{{{APPH}}}[$__range]))) / {budget:g}", "budget left")],
             "percentunit", thresholds=[0, 0.25], low_is_bad=True, decimals=1, w=6),
        stat("Requests faster than the threshold", f"Share of requests faster than {lat:g} s over the range.",
             [target(f'sum(increase(http_request_duration_seconds_bucket{{{APPH}, le="{lat:g}"}}[$__range])) / '
                     f"sum(increase(http_request_duration_seconds_count{{{APPH}}}[$__range]))", "fast")],
             "percentunit", thresholds=[T["slo_latency_objective"]], low_is_bad=True, decimals=2, w=6),
        stat("Requests over the range", "Requests handled over the selected range.",
             [target(f"sum(increase(http_requests_total{{{APPH}}}[$__range]))", "requests")], "short", w=6),
        timeseries("Error budget burn rate", "How fast the error budget burns (1 = exactly on budget) over "
                   f"5m, 30m, 1h and 6h windows; the page fires above {T['slo_page_factor']:g} on both 5m and 1h.",
                   [target(f"max(dbperf:http_requests:error_burn_rate{w}{{{APPR}}})", w)
                    for w in ("5m", "30m", "1h", "6h")], "none", thresholds=[T["slo_ticket_factor"],
                                                                               T["slo_page_factor"]]),
        timeseries("Latency budget burn rate", "How fast the latency objective's budget burns over 5m, 30m, 1h "
                   "and 6h windows.",
                   [target(f"max(dbperf:http_requests:latency_burn_rate{w}{{{APPR}}})", w)
                    for w in ("5m", "30m", "1h", "6h")], "none", thresholds=[T["slo_ticket_factor"],
                                                                               T["slo_page_factor"]]),
        row("Database time per request"),
        route_linked(timeseries(
            "SQL time per request (p95)", "95th percentile of total SQL time per HTTP request, by route. A "
            "route's series links to the Queries dashboard: the database's load from that route by wait event, "
            "and the top statements with their plans (the route's statements are tagged with sql_comments=True).",
            [target("histogram_quantile(0.95, sum by (handler, le) (rate("
                    f"db_client_request_operation_duration_seconds_bucket{{{APPH}}}[{RI}])))", "{{handler}}")],
            "s")),
        timeseries("Statements per request (mean)", "Mean number of SQL statements per HTTP request, by route.",
                   [target(f"sum by (handler) (rate(db_client_queries_per_request_sum{{{APPH}}}[{RI}])) / "
                           f"sum by (handler) (rate(db_client_queries_per_request_count{{{APPH}}}[{RI}]))",
                           "{{handler}}")], "short"),
        timeseries("SQL latency p95 by operation", "95th percentile of statement duration by database and "
                   "operation, measured in the application.",
                   [target("histogram_quantile(0.95, sum by (db_namespace, db_operation, le) (rate("
                           f"db_client_operation_duration_seconds_bucket{{{APP}}}[{RI}])))",
                           "{{db_namespace}} {{db_operation}}")], "s"),
        timeseries("SQL errors and slow statements", "Failed statements by error type and slow statements, per "
                   "second.",
                   [target(f"sum by (error_type) (rate(db_client_operation_errors_total{{{APP}}}[{RI}]))",
                           "{{error_type}}"),
                    target(f"sum(rate(db_client_slow_operations_total{{{APP}}}[{RI}]))", "slow statements")], "ops"),
        table("N+1 query patterns", "Requests per route and statement fingerprint that ran the same statement "
              "at least n_plus_one_threshold times, over the selected range (the application logs the SQL).",
              [target(f"sum by (handler, fingerprint) (increase(db_client_n_plus_one_total{{{APPH}}}[$__range])) > 0")],
              "short", columns={"handler": "Route", "fingerprint": "Fingerprint", "Value": "Requests with N+1"},
              sort="Requests with N+1"),
        row("Connection pools"),
        timeseries("Pool connections", "Connections of each pool in use and idle, and the pool maximum.",
                   [target(f"sum by (pool, state) (db_client_connections_usage{{{APP}}})", "{{pool}} {{state}}"),
                    target(f"sum by (pool) (db_client_connection_max{{{APP}}})", "{{pool}} max")], "short"),
        timeseries("Pool usage", "Connections in use over the pool maximum (recording rule).",
                   [target(f"dbperf:db_client_connections:use_ratio{{{APP}}}", "{{pool}}")], "percentunit", max_=1,
                   thresholds=[T["pool_warning"], T["pool_critical"]]),
        timeseries("Pool wait time p95", "95th percentile of the time to check a connection out of the pool.",
                   [target("histogram_quantile(0.95, sum by (pool, le) (rate("
                           f"db_client_connection_wait_time_seconds_bucket{{{APP}}}[{RI}])))", "{{pool}}")], "s"),
        timeseries("Pool waits and timeouts", "Checkouts waiting now and checkouts that timed out per second.",
                   [target(f"sum by (pool) (db_client_connection_pending_requests{{{APP}}})", "waiting {{pool}}"),
                    target(f"sum by (pool) (rate(db_client_connection_timeouts_total{{{APP}}}[{RI}]))",
                           "timeouts/s {{pool}}")], "short"),
    ]
    variables = [query_var("app_job", "Application job", "label_values(http_requests_total, job)"),
                 query_var("app_instance", "Instance", 'label_values(http_requests_total{job=~"$app_job"}, instance)'),
                 query_var("handler", "Route", 'label_values(http_requests_total{job=~"$app_job", '
                                               'instance=~"$app_instance"}, handler)')]
    return dashboard("dbperf-application", "dbperf / Application",
                     "An application instrumented with exporter.instrument: requests, errors and latency per "
                     "route, SLO and error budget, SQL time per request, N+1 patterns and connection pools.",
                     variables, items, tags=("application",))


# -- Pipelines --------------------------------------------------------------------------------
PIPE = PG + ', source=~"$source", pipeline=~"$pipeline"'


def pipelines() -> dict:
    pby = f"{BY}, source, pipeline"
    items = [
        table("Pipelines", "The latest finished run of each pipeline: status, finish time, duration, time "
              "since the last success over the expected interval (above 1: stale), success rate and runs "
              "over the selected range.",
              [target(f'max by ({pby}) (pipeline_last_run_status{{{PIPE}, status="success"}})'),
               target(f"max by ({pby}) (pipeline_last_run_timestamp_seconds{{{PIPE}}}) * 1000"),
               target(f"max by ({pby}) (pipeline_last_run_duration_seconds{{{PIPE}}})"),
               target(f"max by ({pby}) (time() - pipeline_last_success_timestamp_seconds{{{PIPE}}}) / "
                      f"max by ({pby}) (pipeline_expected_interval_seconds{{{PIPE}}} > 0)"),
               target(f'sum by ({pby}) (increase(pipeline_runs_total{{{PIPE}, status="success"}}[$__range])) / '
                      f"(sum by ({pby}) (increase(pipeline_runs_total{{{PIPE}}}[$__range])) > 0)"),
               target(f"sum by ({pby}) (increase(pipeline_runs_total{{{PIPE}}}[$__range]))"),
               target(f"max by ({pby}) (pipeline_runs_running{{{PIPE}}})")],
              "none", h=8, columns={"source": "Source", "pipeline": "Pipeline", "Value #A": "Last status",
                                    "Value #B": "Last finished", "Value #C": "Last duration",
                                    "Value #D": "Staleness", "Value #E": "Success rate",
                                    "Value #F": "Runs", "Value #G": "Running"},
              hide=("Time", "job", "instance"),
              units={"Last finished": "dateTimeFromNow", "Last duration": "s", "Staleness": "percentunit",
                     "Success rate": "percentunit", "Runs": "short", "Running": "short"},
              cell_colors={"Last status": "color-background", "Staleness": "color-background"},
              mappings={"Last status": value_map({0: ("failed", "red"), 1: ("success", "green")})}),
        state_timeline("Run timeline", "Status of each pipeline's latest finished run over time, and when a "
                       "run was in flight.",
                       [target(f'max by (pipeline) (pipeline_last_run_status{{{PIPE}, status="success"}}) + '
                               f"2 * max by (pipeline) (pipeline_runs_running{{{PIPE}}} > bool 0)", "{{pipeline}}")],
                       "none", value_map({0: ("failed", "red"), 1: ("success", "green"),
                                          2: ("running after a failure", "blue"), 3: ("running", "blue")})),
        timeseries("Success rate", "Successful runs over all finished runs, per pipeline, over 1 hour.",
                   [target(f'sum by (pipeline) (increase(pipeline_runs_total{{{PIPE}, status="success"}}[1h])) / '
                           f"(sum by (pipeline) (increase(pipeline_runs_total{{{PIPE}}}[1h])) > 0)", "{{pipeline}}")],
                   "percentunit", max_=1),
        timeseries("Runs finished", "Finished runs per second by status (success, failed).",
                   [target(f"sum by (pipeline, status) (rate(pipeline_runs_total{{{PIPE}}}[{RI}]))",
                           "{{pipeline}} {{status}}")], "ops"),
        timeseries("Duration of the latest run", "Duration of each pipeline's latest finished run, with the "
                   "7 day mean where the recording rule has data.",
                   [target(f"max by (pipeline) (pipeline_last_run_duration_seconds{{{PIPE}}})", "{{pipeline}}"),
                    target(f"max by (pipeline) (dbperf:pipeline_run_duration_seconds:mean7d{{{PIPE}}})",
                           "{{pipeline}} 7d mean")], "s"),
        timeseries("Duration p95", "95th percentile of run durations finished in the window, per pipeline.",
                   [target("histogram_quantile(0.95, sum by (pipeline, le) (rate("
                           f"pipeline_run_duration_seconds_bucket{{{PIPE}}}[{RI}])))", "{{pipeline}}")], "s"),
        timeseries("Rows processed", "Rows processed per second by finished runs, per pipeline.",
                   [target(f"sum by (pipeline) (rate(pipeline_rows_processed_total{{{PIPE}}}[{RI}]))",
                           "{{pipeline}}")], "cps"),
        timeseries("Errors", "Errors counted by finished runs per second, per pipeline.",
                   [target(f"sum by (pipeline) (rate(pipeline_errors_total{{{PIPE}}}[{RI}]))", "{{pipeline}}")], "ops"),
        bargauge("Staleness", "Time since each pipeline's last success over its expected interval; above 1 "
                 "the pipeline is stale.",
                 [target(f"max by (pipeline) (time() - pipeline_last_success_timestamp_seconds{{{PIPE}}}) / "
                         f"max by (pipeline) (pipeline_expected_interval_seconds{{{PIPE}}} > 0)", "{{pipeline}}")],
                 "percentunit", thresholds=[0.8, 1], max_=2),
        timeseries("Runs in flight", "Runs running and queued now, and the age of the oldest running run.",
                   [target(f"sum by (pipeline) (pipeline_runs_running{{{PIPE}}})", "running {{pipeline}}"),
                    target(f"sum by (pipeline) (pipeline_runs_queued{{{PIPE}}})", "queued {{pipeline}}")], "short"),
    ]
    variables = [*pg_variables(datname=False),
                 query_var("source", "Source", f"label_values(pipeline_source_info{{{PG}}}, source)"),
                 query_var("pipeline", "Pipeline",
                           f'label_values(pipeline_last_run_timestamp_seconds{{{PG}, source=~"$source"}}, pipeline)')]
    return dashboard("dbperf-pipelines", "dbperf / Pipelines",
                     "Data-pipeline runs read from PostgreSQL: last run and status, success rate, duration, "
                     "rows, a run timeline and stale pipelines.", variables, items, tags=("pipelines",))


# -- PgBouncer and host -----------------------------------------------------------------------
BN = 'job=~"$job", instance=~"$instance", target=~"$bouncer"'
HOST = 'job=~"$job", instance=~"$instance"'


def pgbouncer_host() -> dict:
    items = [
        row("PgBouncer"),
        stat("PgBouncer up", "1 when dbperf could query PgBouncer's admin console in its last scrape.",
             [target(f"pgbouncer_up{{{BN}}}", "{{target}}")], "none", mappings=UP_MAP, thresholds=[1],
             low_is_bad=True, w=4),
        stat("Version", "PgBouncer version.", [target(f"pgbouncer_version_info{{{BN}}}", "{{version}}",
                                                      instant=True)], "none", text_mode="name", w=4),
        gauge("Client slots used", "Client connections in use over max_client_conn.",
              [target(f"max by (target) (pgbouncer_used_clients{{{BN}}}) / max by (target) "
                      f"(pgbouncer_config_max_client_connections{{{BN}}})", "{{target}}")], "percentunit",
              thresholds=[0.8, 0.95], w=4),
        gauge("Pool utilisation (max)", "Server connections linked to clients over pool_size, the busiest pool.",
              [target(f"max(pgbouncer_pools_server_utilization_ratio{{{BN}}})", "busiest pool")], "percentunit",
              thresholds=[0.8, 0.95], w=4),
        stat("Longest client wait", "How long the oldest waiting client has waited for a server connection.",
             [target(f"max(pgbouncer_pools_client_maxwait_seconds{{{BN}}})", "max wait")], "s",
             thresholds=[1, 5], w=4),
        stat("Queries per second", "SQL queries pooled per second.",
             [target(f"sum(rate(pgbouncer_stats_queries_pooled_total{{{BN}}}[{RI}]))", "qps")], "ops", graph=True,
             w=4),
        timeseries("Client connections", "Client connections active and waiting for a server connection, per pool.",
                   [target(f"sum by (database) (pgbouncer_pools_client_active_connections{{{BN}}})",
                           "active {{database}}"),
                    target(f"sum by (database) (pgbouncer_pools_client_waiting_connections{{{BN}}})",
                           "waiting {{database}}")], "short"),
        timeseries("Server connections", "Server connections active, idle and used, per database.",
                   [target(f"sum by (database) (pgbouncer_pools_server_{s}_connections{{{BN}}})",
                           f"{s} {{{{database}}}}") for s in ("active", "idle", "used")], "short", stack=True),
        timeseries("Pool utilisation", "Server connections linked to clients over pool_size, per pool.",
                   [target(f"pgbouncer_pools_server_utilization_ratio{{{BN}}}", "{{database}}/{{user}}")],
                   "percentunit", max_=1, thresholds=[0.8, 0.95]),
        timeseries("Client wait time", "Seconds clients spent waiting for a server connection, per second.",
                   [target(f"sum by (database) (rate(pgbouncer_stats_client_wait_seconds_total{{{BN}}}[{RI}]))",
                           "{{database}}")], "s"),
        timeseries("Transactions and queries", "Transactions and queries pooled per second, per database.",
                   [target(f"sum by (database) (rate(pgbouncer_stats_sql_transactions_pooled_total{{{BN}}}[{RI}]))",
                           "transactions {{database}}"),
                    target(f"sum by (database) (rate(pgbouncer_stats_queries_pooled_total{{{BN}}}[{RI}]))",
                           "queries {{database}}")], "ops"),
        timeseries("Average query and transaction time", "Average query and transaction duration over "
                   "PgBouncer's stats_period.",
                   [target(f"max by (database) (pgbouncer_stats_average_query_duration_seconds{{{BN}}})",
                           "query {{database}}"),
                    target(f"max by (database) (pgbouncer_stats_average_transaction_duration_seconds{{{BN}}})",
                           "transaction {{database}}")], "s"),
        row("Host (the machine dbperf runs on)"),
        timeseries("CPU busy", "Share of CPU time not idle, all CPUs (recording rule).",
                   [target(f"dbperf:host_cpu:busy_ratio_rate5m{{{HOST}}}", "{{instance}}")], "percentunit", max_=1,
                   thresholds=[0.8, 0.95], w=8),
        timeseries("Load per CPU", "1-minute load average divided by the number of CPUs.",
                   [target(f'host_load_average{{{HOST}, period="1m"}} / on (job, instance) host_cpus{{{HOST}}}',
                           "{{instance}}")], "none", thresholds=[1, 2], w=8),
        timeseries("Memory", "Memory used, cached and available, and swap used.",
                   [target(f"host_memory_used_bytes{{{HOST}}}", "used"),
                    target(f"host_memory_cached_bytes{{{HOST}}}", "cached"),
                    target(f"host_memory_available_bytes{{{HOST}}}", "available"),
                    target(f"host_swap_used_bytes{{{HOST}}}", "swap used")], "bytes", w=8),
        timeseries("File system space available", "Space available to unprivileged users per mount point "
                   "(recording rule).",
                   [target(f"dbperf:host_filesystem:avail_ratio{{{HOST}}}", "{{mountpoint}}")], "percentunit",
                   max_=1, w=8),
        timeseries("Disk throughput", "Bytes read and written per second, per device.",
                   [target(f"sum by (device) (rate(host_disk_read_bytes_total{{{HOST}}}[{RI}]))", "read {{device}}"),
                    target(f"sum by (device) (rate(host_disk_written_bytes_total{{{HOST}}}[{RI}]))",
                           "write {{device}}")], "Bps", w=8),
        timeseries("Disk busy", "Share of time each device was busy with I/O.",
                   [target(f"sum by (device) (rate(host_disk_io_time_seconds_total{{{HOST}}}[{RI}]))", "{{device}}")],
                   "percentunit", max_=1, w=8),
        timeseries("Network", "Bytes received and sent per second, per interface.",
                   [target(f"sum by (device) (rate(host_network_receive_bytes_total{{{HOST}}}[{RI}]))",
                           "in {{device}}"),
                    target(f"sum by (device) (rate(host_network_transmit_bytes_total{{{HOST}}}[{RI}]))",
                           "out {{device}}")], "Bps"),
        timeseries("Network errors and drops", "Receive and transmit errors and drops per second.",
                   [target(f"sum(rate(host_network_{d}_{k}_total{{{HOST}}}[{RI}]))", f"{d} {k}")
                    for d in ("receive", "transmit") for k in ("errors", "drop")], "ops"),
    ]
    variables = [query_var("job", "Job", "label_values(dbperf_build_info, job)"),
                 query_var("instance", "Instance", 'label_values(dbperf_build_info{job=~"$job"}, instance)'),
                 query_var("bouncer", "PgBouncer target",
                           'label_values(pgbouncer_up{job=~"$job", instance=~"$instance"}, target)')]
    return dashboard("dbperf-pgbouncer-host", "dbperf / PgBouncer and host",
                     "PgBouncer pools, clients and traffic, and the CPU, memory, disks and network of the "
                     "machine dbperf runs on.", variables, items, tags=("pgbouncer", "host"))


# -- Monitoring health ------------------------------------------------------------------------
SELF = 'job=~"$job", instance=~"$instance"'
PROM = 'job=~"$prometheus_job"'
AM = 'job=~"$alertmanager_job"'


def monitoring() -> dict:
    items = [
        row("dbperf"),
        stat("Collectors failing", "Collectors whose last run failed (dbperf_collector_success 0).",
             [target(f"count(dbperf_collector_success{{{SELF}}} == 0) or vector(0)", "failing")], "none",
             thresholds=[1], w=6),
        stat("Collectors skipped", "Collectors skipped in the last scrape because they would not fit before the "
             "deadline.", [target(f"sum(dbperf_collector_skipped{{{SELF}}})", "skipped")], "none", thresholds=[1],
             w=6),
        stat("Scrape duration (max)", "Longest time a target's last scrape took.",
             [target(f"max(dbperf_scrape_duration_seconds{{{SELF}}})", "max")], "s", w=6),
        stat("dbperf up", "dbperf processes Prometheus scraped successfully.",
             [target(f"sum(up{{{SELF}}})", "up")], "none", w=6),
        timeseries("Collector success", "Share of each collector's series that succeeded in the last scrape "
                   "(1 = every database and target).",
                   [target(f"avg by (collector) (dbperf_collector_success{{{SELF}}})", "{{collector}}")],
                   "percentunit", max_=1),
        timeseries("Collector duration", "Time each collector's last run took (slowest database and target).",
                   [target(f"max by (collector) (dbperf_collector_duration_seconds{{{SELF}}})", "{{collector}}")],
                   "s"),
        timeseries("Collector errors and skips", "Failed collector runs per second, and collectors skipped for "
                   "lack of time.",
                   [target(f"sum by (collector) (rate(dbperf_collector_errors_total{{{SELF}}}[{RI}]))",
                           "errors {{collector}}"),
                    target(f"sum by (collector) (dbperf_collector_skipped{{{SELF}}})", "skipped {{collector}}")],
                   "short"),
        timeseries("Scrape durations", "dbperf's own time per target, and the whole scrape as Prometheus saw it.",
                   [target(f"dbperf_scrape_duration_seconds{{{SELF}}}", "{{target}}"),
                    target(f"scrape_duration_seconds{{{SELF}}}", "prometheus: {{instance}}")], "s"),
        timeseries("Cache age", "Age of the data served per cached collector.",
                   [target(f"max by (collector) (dbperf_collector_cache_age_seconds{{{SELF}}})", "{{collector}}")],
                   "s"),
        timeseries("dbperf memory", "Resident memory of the dbperf process.",
                   [target(f"process_resident_memory_bytes{{{SELF}}}", "{{instance}}")], "bytes", w=6),
        timeseries("dbperf CPU", "CPU used by the dbperf process, in cores.",
                   [target(f"rate(process_cpu_seconds_total{{{SELF}}}[{RI}])", "{{instance}}")], "percentunit", w=6),
        row("Prometheus and Alertmanager"),
        timeseries("Rule evaluation failures", "Failed rule evaluations per second (broken recording or "
                   "alerting rules).",
                   [target(f"sum by (rule_group) (rate(prometheus_rule_evaluation_failures_total{{{PROM}}}[{RI}]))",
                           "{{rule_group}}")], "ops"),
        timeseries("Rule group evaluation time", "Time the last evaluation of each rule group took.",
                   [target(f"max by (rule_group) (prometheus_rule_group_last_duration_seconds{{{PROM}}})",
                           "{{rule_group}}")], "s"),
        timeseries("Alerts sent by Prometheus", "Alerts Prometheus sent to Alertmanager, errors and drops, per "
                   "second.",
                   [target(f"sum(rate(prometheus_notifications_sent_total{{{PROM}}}[{RI}]))", "sent"),
                    target(f"sum(rate(prometheus_notifications_errors_total{{{PROM}}}[{RI}]))", "errors"),
                    target(f"sum(rate(prometheus_notifications_dropped_total{{{PROM}}}[{RI}]))", "dropped")], "ops"),
        timeseries("Notifications", "Notifications Alertmanager sent and failed per second, per integration.",
                   [target(f"sum by (integration) (rate(alertmanager_notifications_total{{{AM}}}[{RI}]))",
                           "sent {{integration}}"),
                    target(f"sum by (integration) (rate(alertmanager_notifications_failed_total{{{AM}}}[{RI}]))",
                           "failed {{integration}}")], "ops"),
        timeseries("Alerts in Alertmanager", "Alerts Alertmanager holds, by state (active, suppressed).",
                   [target(f"sum by (state) (alertmanager_alerts{{{AM}}})", "{{state}}")], "short"),
        timeseries("Silences", "Silences by state; an active silence is an acknowledged alert "
                   "(dbperf alerts ack).",
                   [target(f"sum by (state) (alertmanager_silences{{{AM}}})", "{{state}}")], "short"),
        timeseries("Scrape targets up", "Share of scrape targets up per job.",
                   [target('avg by (job) (up{job=~"$job|$prometheus_job|$alertmanager_job"})', "{{job}}")],
                   "percentunit", max_=1),
    ]
    variables = [query_var("job", "dbperf job", "label_values(dbperf_build_info, job)"),
                 query_var("instance", "dbperf instance", 'label_values(dbperf_build_info{job=~"$job"}, instance)'),
                 query_var("prometheus_job", "Prometheus job", "label_values(prometheus_build_info, job)"),
                 query_var("alertmanager_job", "Alertmanager job", "label_values(alertmanager_build_info, job)")]
    return dashboard("dbperf-monitoring", "dbperf / Monitoring health",
                     "Is the monitoring itself healthy: dbperf's collectors and scrapes, Prometheus's rule "
                     "evaluation and Alertmanager's notifications and silences.", variables, items,
                     tags=("monitoring",))


# -- Logs and access --------------------------------------------------------------------------
APPL = 'job=~"$app_job", instance=~"$app_instance"'
LOG_ERRORS = 'severity=~"ERROR|FATAL|PANIC"'


def logs_access() -> dict:
    """The server's log as metrics (the log reader's pg_log_*) and the application's own log."""
    failures = f"pg_log_auth_failures_total{{{PGD}}}"
    items = [
        row("Access: who connected, who was refused"),
        timeseries("Logins per second", "Authorised connections per second by user and database "
                   "(log_connections).",
                   [target(f"sum by (datname, user) (rate(pg_log_connections_total{{{PGD}}}[{RI}]))",
                           "{{user}}@{{datname}}")], "cps", stack=True),
        timeseries("Failed logins per second", "Authentication failures per second by user and reason; a "
                   "password-guessing script shows as a wall of distinct users (the rest share user=other). "
                   f"PostgreSQLAuthFailuresBurst fires above {T['auth_failures_burst']} in "
                   f"{T['auth_failures_window']}.",
                   [target(f"sum by (user, reason) (rate({failures}[{RI}]))", "{{user}} {{reason}}")], "cps"),
        timeseries("Failed logins by client network", "Authentication failures per second by client network "
                   "(the network prefix counter, off unless configured).",
                   [target(f"sum by (network) (rate(pg_log_auth_failures_by_network_total{{{PG}}}[{RI}]))",
                           "{{network}}")], "cps"),
        timeseries("Logins by method and disconnections", "Authorised connections per second by authentication "
                   "method, and disconnections (log_disconnections).",
                   [target(f"sum by (method) (rate(pg_log_connections_total{{{PGD}}}[{RI}]))", "{{method}}"),
                    target(f"sum(rate(pg_log_disconnections_total{{{PGD}}}[{RI}]))", "disconnections")], "cps"),
        timeseries("Session duration p50 / p95", "Duration of the sessions that ended, by database "
                   "(log_disconnections): short sessions mean a client without a pool.",
                   [target(f"histogram_quantile(0.{q}, sum by (datname, le) (rate("
                           f"pg_log_session_duration_seconds_bucket{{{PGD}}}[{RI}])))", f"p{q} {{{{datname}}}}")
                    for q in (50, 95)], "s"),
        table("Failed logins over the range", "Authentication failures by database, user and reason over the "
              "selected range.",
              [target(f"sum by (datname, user, reason) (increase({failures}[$__range])) > 0")], "short", w=12,
              columns={"datname": "Database", "user": "User", "reason": "Reason", "Value": "Failures"},
              sort="Failures"),
        row("Errors by SQLSTATE"),
        timeseries("Errors by SQLSTATE class", "Messages at ERROR, FATAL or PANIC per second by SQLSTATE "
                   "class (40 transaction rollback, 23 integrity, 53 resources, 57 operator intervention, 28 "
                   "authentication); PostgreSQLErrorsRising fires when a class triples its daily rate.",
                   [target(f"sum by (sqlstate_class) (rate(pg_log_messages_total{{{PG}, {LOG_ERRORS}}}[{RI}]))",
                           "{{sqlstate_class}}")], "cps", stack=True),
        timeseries("Messages by severity", "Server log messages per second by severity.",
                   [target(f"sum by (severity) (rate(pg_log_messages_total{{{PG}}}[{RI}]))", "{{severity}}")],
                   "cps"),
        timeseries("Errors by condition", "The common error codes per second: deadlocks, serialization "
                   "failures, unique violations, cancelled statements, lock and idle timeouts, out of memory, "
                   "disk full, too many connections.",
                   [target(f"sum by (sqlstate, condition) (rate(pg_log_errors_total{{{PG}}}[{RI}]))",
                           "{{sqlstate}} {{condition}}")], "cps"),
        timeseries("Deadlocks per second", "Deadlocks the server detected and resolved by killing a "
                   "transaction, by database (from the log, with the statements in /events).",
                   [target(f"sum by (datname) (rate(pg_log_deadlocks_total{{{PGD}}}[{RI}]))", "{{datname}}")],
                   "cps"),
        row("Slow statements, locks, temporary files, DDL"),
        timeseries("Slow statements per second", "Statements slower than log_min_duration_statement per "
                   "second, by database and user (their text and plan: /events?kind=slow).",
                   [target(f"sum by (datname, user) (rate(pg_log_statement_duration_seconds_count{{{PGD}}}[{RI}]))",
                           "{{user}}@{{datname}}")], "ops"),
        timeseries("Slow statement duration p50 / p95", "Duration of the logged slow statements, by database.",
                   [target(f"histogram_quantile(0.{q}, sum by (datname, le) (rate("
                           f"pg_log_statement_duration_seconds_bucket{{{PGD}}}[{RI}])))", f"p{q} {{{{datname}}}}")
                    for q in (50, 95)], "s"),
        timeseries("Lock waits per second", "Waits longer than deadlock_timeout per second, by database "
                   "(log_lock_waits).",
                   [target(f"sum by (datname) (rate(pg_log_lock_waits_total{{{PGD}}}[{RI}]))", "{{datname}}")],
                   "ops"),
        timeseries("Lock wait time p95", "95th percentile of the logged lock waits, by database.",
                   [target("histogram_quantile(0.95, sum by (datname, le) (rate("
                           f"pg_log_lock_wait_seconds_bucket{{{PGD}}}[{RI}])))", "{{datname}}")], "s"),
        timeseries("Temporary files", "Bytes per second written to temporary files (sorts and hashes over "
                   "work_mem, log_temp_files) and files per second, by database.",
                   [target(f"sum by (datname) (rate(pg_log_temp_file_bytes_sum{{{PGD}}}[{RI}]))", "{{datname}}"),
                    target(f"sum by (datname) (rate(pg_log_temp_files_total{{{PGD}}}[{RI}]))",
                           "files/s {{datname}}")], "Bps"),
        table("Schema changes over the range", "DDL statements (log_statement = ddl) by database, user and "
              "command over the selected range; PostgreSQLDDLOnProduction reports each as info.",
              [target(f"sum by (datname, user, command) (increase(pg_log_ddl_total{{{PGD}}}[$__range])) > 0")],
              "short", w=12,
              columns={"datname": "Database", "user": "User", "command": "Command", "Value": "Statements"},
              sort="Statements"),
        row("Checkpoints and autovacuum"),
        timeseries("Checkpoints per hour by reason", "Checkpoints in the last hour by reason (time, wal, "
                   "immediate, force, shutdown), and how many checkpoint_timeout allows: above it, WAL "
                   "volume forces checkpoints (PostgreSQLCheckpointsTooFrequent).",
                   [target(f"sum by (reason) (increase(pg_log_checkpoints_total{{{PG}}}[1h]))", "{{reason}}"),
                    target(f"3600 / max(pg_settings_checkpoint_timeout_seconds{{{PG}}})", "checkpoint_timeout allows")],
                   "short"),
        timeseries("Checkpoint time", "Seconds per second spent writing, syncing and in total by "
                   "checkpoints (1 = a checkpoint always running).",
                   [target(f"sum(rate(pg_log_checkpoint_{part}_seconds_total{{{PG}}}[{RI}]))", label)
                    for part, label in (("write", "write"), ("sync", "sync"))]
                   + [target(f"sum(rate(pg_log_checkpoint_seconds_total{{{PG}}}[{RI}]))", "total")], "percentunit"),
        timeseries("Buffers written by checkpoints", "Shared buffers written by checkpoints per second.",
                   [target(f"sum(rate(pg_log_checkpoint_buffers_written_total{{{PG}}}[{RI}]))", "buffers/s")],
                   "short"),
        timeseries("Autovacuum runs per hour", "Autovacuum and autoanalyze runs in the last hour by table "
                   "(the busiest tables; the rest share relname=other), log_autovacuum_min_duration.",
                   [target(f"sum by (schemaname, relname, operation) (increase(pg_log_autovacuum_total{{{PGD}}}[1h]))",
                           "{{operation}} {{schemaname}}.{{relname}}")], "short"),
        table("Autovacuum over the range", "Per table over the selected range: runs, time spent and dead "
              "tuples removed.",
              [target(f"sum by (datname, schemaname, relname) (increase(pg_log_autovacuum_total{{{PGD}}}[$__range]))"),
               target(f"sum by (datname, schemaname, relname) (increase(pg_log_autovacuum_seconds_total{{{PGD}}}"
                      f"[$__range]))"),
               target(f"sum by (datname, schemaname, relname) (increase(pg_log_autovacuum_tuples_removed_total"
                      f"{{{PGD}}}[$__range]))")], "short",
              columns={"datname": "Database", "schemaname": "Schema", "relname": "Table", "Value #A": "Runs",
                       "Value #B": "Time", "Value #C": "Tuples removed"},
              units={"Time": "s"}, sort="Time"),
        row("The application's own log"),
        timeseries("Application error logs by logger", "ERROR and CRITICAL records per second by application "
                   "and logger (exporter.instrument's log handler; the last ones are in its slow log); "
                   "AppErrorLogsRising fires when a logger triples its daily rate.",
                   [target(f'sum by (job, logger) (rate(app_log_messages_total{{{APPL}, level=~"ERROR|CRITICAL"}}'
                           f"[{RI}]))", "{{job}} {{logger}}")], "cps"),
        timeseries("Application log records by level", "Log records per second by level.",
                   [target(f"sum by (level) (rate(app_log_messages_total{{{APPL}}}[{RI}]))", "{{level}}")], "cps"),
        row("dbperf's log reader"),
        timeseries("Log lines read and dropped", "Server log lines dbperf parsed per second, and lines it "
                   "dropped by reason (over the parse budget, cut at the length limit, ...).",
                   [target(f"sum(rate(dbperf_log_lines_total{{{PG}}}[{RI}]))", "read"),
                    target(f"sum by (reason) (rate(dbperf_log_lines_dropped_total{{{PG}}}[{RI}]))",
                           "dropped {{reason}}")], "cps", w=24),
    ]
    variables = pg_variables() + [
        query_var("app_job", "Application job", "label_values(app_log_messages_total, job)"),
        query_var("app_instance", "Application instance",
                  'label_values(app_log_messages_total{job=~"$app_job"}, instance)')]
    return dashboard("dbperf-logs-access", "dbperf / Logs and access",
                     "PostgreSQL's own log as metrics: logins and refused logins, errors by SQLSTATE, slow "
                     "statements, lock waits, temporary files, schema changes, checkpoints and autovacuum; "
                     "and the application's error-log rate by logger.", variables, items, tags=("logs",))


DASHBOARDS = {"overview": overview, "postgresql-server": postgres, "queries": queries,
              "tables-indexes": tables, "mysql-server": lambda: mysql_dashboard.mysql(T, secs),
              "application": application, "pipelines": pipelines,
              "pgbouncer-host": pgbouncer_host, "monitoring-health": monitoring, "logs-access": logs_access}


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(build(), indent=2, sort_keys=False) + "\n" for name, build in DASHBOARDS.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 when dashboards/json differs from the generator")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    files = render()
    if args.check:
        stale = [name for name, text in files.items()
                 if not (args.out / name).exists() or (args.out / name).read_text() != text]
        extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
        for name in stale:
            print(f"dashboards/generate.py: {args.out / name} is out of date: run python dashboards/generate.py")
        for name in extra:
            print(f"dashboards/generate.py: {args.out / name} is not generated: remove it")
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
    for path in args.out.glob("*.json"):
        if path.name not in files:
            path.unlink()
    print(f"wrote {len(files)} dashboards to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
