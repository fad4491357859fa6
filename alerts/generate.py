#!/usr/bin/env python3
"""Generate dbperf's Prometheus recording and alerting rules from alerts/thresholds.yaml.

    python alerts/generate.py                      # production -> alerts/rules/*.yml, README table
    python alerts/generate.py --profile development  # -> alerts/rules-development/*.yml
    python alerts/generate.py --profile test --out /tmp/rules
    python alerts/generate.py --all                # production and development (the checked-in ones)
    python alerts/generate.py --all --check        # exit 1 when a checked-in file differs

The rules are written here once; every number, window and ``for:`` comes from the thresholds file,
substituted where a rule says ``${name}``. Each alert also carries the threshold in words and why
it was chosen: the table in alerts/README.md is generated from the same definitions."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
THRESHOLDS = HERE / "thresholds.yaml"
CONCERNS = ("postgres", "queries", "logs", "application", "pipelines", "pgbouncer", "mysql", "host", "monitoring")
CHECKED_IN = ("production", "development")
README_BEGIN, README_END = "<!-- alerts:begin -->", "<!-- alerts:end -->"
BY = "job, instance, target"          # the labels that identify one monitored server
BY_DB = "job, instance, target, datname"
APP_BY = "job, handler"
SENDER = "job, instance, target, application_name, client_addr, slot_name"  # one standby seen by its primary
APP_LOG_BY = "job, logger"


# -- definitions ---------------------------------------------------------------------------------

@dataclass
class Alert:
    name: str
    severity: str
    expr: str
    for_: str
    summary: str
    description: str
    threshold: str          # in words, with ${...}; the README table
    why: str = ""           # only on the first rule of a name (pairs share it)
    labels: dict = field(default_factory=dict)


@dataclass
class Record:
    record: str
    expr: str


def grown(series: str, window: str, by: str) -> str:
    """How much counter ``series`` (a selector) grew in ``window``, summed by ``by``, counting a
    series that appeared within the window from zero: ``increase()`` starts at a series' first
    sample, so the first failed login of a user never seen before, the first DDL of its kind or a
    database's first temporary file would count nothing (the server log's counters have a series
    per user, command or database, made when the first line of it is read)."""
    return f"sum by ({by}) (\n  increase({series}[{window}]) and {series} offset {window}\n  or {series}\n)"


def postgres():
    rec = [
        Record("dbperf:pg_connections:use_ratio", "pg_connections_used / pg_connections_limit"),
        Record("dbperf:pg_stat_database_xact:rate${rate_window}",
               f"sum by ({BY_DB}) (rate(pg_stat_database_xact_commit_total[${{rate_window}}])"
               f" + rate(pg_stat_database_xact_rollback_total[${{rate_window}}]))"),
        Record("dbperf:pg_stat_database_xact:rollback_ratio_rate${rate_window}",
               f"sum by ({BY_DB}) (rate(pg_stat_database_xact_rollback_total[${{rate_window}}]))\n"
               f"/ dbperf:pg_stat_database_xact:rate${{rate_window}}"),
        # rollbacks the client did not ask for with a ROLLBACK statement: a failed autocommit
        # statement, the COMMIT of an aborted transaction, a killed session. A pool's ROLLBACK on
        # every connection it gets back is left out (see PostgreSQLHighRollbackRatio). A database
        # without ROLLBACK statements counts zero of them when the target reports the family at all.
        Record("dbperf:pg_stat_database_xact:implicit_rollback_ratio_rate${rate_window}",
               f"clamp_min(\n"
               f"  sum by ({BY_DB}) (rate(pg_stat_database_xact_rollback_total[${{rate_window}}]))\n"
               f"  - (\n"
               f"    sum by ({BY_DB}) (rate(pg_stat_statements_transaction_control_calls_total{{command=\"rollback\"}}[${{rate_window}}]))\n"
               f"    or (0 * sum by ({BY_DB}) (rate(pg_stat_database_xact_rollback_total[${{rate_window}}]))\n"
               f"        and on ({BY}) pg_stat_statements_transaction_control_calls_total)\n"
               f"  ),\n"
               f"  0\n"
               f")\n"
               f"/ dbperf:pg_stat_database_xact:rate${{rate_window}}"),
        Record("dbperf:pg_stat_database_blks_read:rate${rate_window}",
               f"sum by ({BY_DB}) (rate(pg_stat_database_blks_read_total[${{rate_window}}]))"),
        Record("dbperf:pg_stat_database_blks:hit_ratio_rate${rate_window}",
               f"sum by ({BY_DB}) (rate(pg_stat_database_blks_hit_total[${{rate_window}}]))\n"
               f"/ (sum by ({BY_DB}) (rate(pg_stat_database_blks_hit_total[${{rate_window}}]))"
               f" + dbperf:pg_stat_database_blks_read:rate${{rate_window}})"),
        Record("dbperf:pg_stat_checkpointer:requested_ratio_increase${checkpoints_window}",
               f"sum by ({BY}) (increase(pg_stat_checkpointer_num_requested_total[${{checkpoints_window}}]))\n"
               f"/ (sum by ({BY}) (increase(pg_stat_checkpointer_num_requested_total[${{checkpoints_window}}]))"
               f" + sum by ({BY}) (increase(pg_stat_checkpointer_num_timed_total[${{checkpoints_window}}])))"),
    ]
    down_excl = f"and on ({BY}) pg_up == 1"
    sender_lag = (f"max by ({SENDER}) (\n  pg_stat_replication_replay_lag_seconds\n"
                  f"  and pg_stat_replication_lag_bytes\n)")
    sender_desc = ("Standby {{ $labels.application_name }} ({{ $labels.client_addr }}{{ if $labels.slot_name }}, slot "
                   "{{ $labels.slot_name }}{{ end }}) of {{ $labels.target }} replays {{ $value | humanizeDuration }} "
                   "behind it.")
    alerts = [
        Alert("PostgreSQLDown", "critical", "pg_up == 0", "${pg_down_for}",
              "PostgreSQL cannot be reached by dbperf.",
              "dbperf could not connect to and query target {{ $labels.target }} (instance {{ $labels.instance }}).",
              "pg_up == 0 for ${pg_down_for}",
              "Nothing works without the server; one minute rides out a single failed scrape and a fast restart."),
        Alert("DbperfExporterDown", "critical", 'up{job=~"${exporter_job_regex}"} == 0', "${exporter_down_for}",
              "Prometheus cannot scrape dbperf.",
              "Scrape of {{ $labels.job }} at {{ $labels.instance }} failed: every PostgreSQL alert of it is blind.",
              "up == 0 for ${exporter_down_for}",
              "Without the exporter no other PostgreSQL alert can fire; two minutes allow a deploy."),
        Alert("DbperfExporterAbsent", "critical", 'absent(up{job=~"${exporter_job_regex}"})',
              "${exporter_absent_for}",
              "No dbperf scrape job is known to Prometheus.",
              "Prometheus has no target of a job matching ${exporter_job_regex}: the scrape config or service discovery lost dbperf.",
              "no up series for ${exporter_absent_for}",
              "Catches a scrape config or discovery change that silently drops the exporter (up == 0 cannot fire then)."),
        Alert("DbperfCollectorFailing", "warning",
              f"max_over_time(dbperf_collector_success[${{collector_failing_window}}]) == 0\n{down_excl}",
              "${collector_failing_for}",
              "A dbperf collector keeps failing.",
              "Collector {{ $labels.collector }} of target {{ $labels.target }}{{ if $labels.datname }} (database "
              "{{ $labels.datname }}){{ end }} "
              "has not succeeded for ${collector_failing_window}: its metrics are missing or stale; see dbperf's log.",
              "no success in ${collector_failing_window}, for ${collector_failing_for}, while pg_up == 1",
              "One timeout is normal under load; a collector that never succeeds for 15 minutes hides metrics (and alerts) silently."),
        Alert("PostgreSQLRestarted", "info",
              "changes(pg_postmaster_start_time_seconds[${restarted_window}]) > 0", "${restarted_for}",
              "PostgreSQL restarted.",
              "Target {{ $labels.target }} restarted in the last ${restarted_window}: caches are cold and pg_stat_statements may be reset.",
              "start time changed in the last ${restarted_window}",
              "Context for other alerts (cold cache, reset statistics), not a page: PostgreSQLDown covers the outage."),
        Alert("PostgreSQLTooManyConnections", "warning",
              "dbperf:pg_connections:use_ratio > ${connections_warning}", "${connections_warning_for}",
              "PostgreSQL connections are near the limit.",
              "Target {{ $labels.target }} uses {{ $value | humanizePercentage }} of the connections available to ordinary roles.",
              "> ${connections_warning} of the usable limit for ${connections_warning_for}",
              "At the limit new sessions fail with 'too many clients'; 80% leaves room for a deploy's second pool, "
              "95% means the next burst fails."),
        Alert("PostgreSQLTooManyConnections", "critical",
              "dbperf:pg_connections:use_ratio > ${connections_critical}", "${connections_critical_for}",
              "PostgreSQL connections are near the limit.",
              "Target {{ $labels.target }} uses {{ $value | humanizePercentage }} of the connections available to ordinary roles.",
              "> ${connections_critical} for ${connections_critical_for}"),
        Alert("PostgreSQLLongTransaction", "warning",
              "pg_stat_activity_oldest_transaction_age_seconds > ${long_transaction_warning_seconds}",
              "${long_transaction_for}",
              "A PostgreSQL transaction has been open for a long time.",
              "The oldest transaction in {{ $labels.datname }} on {{ $labels.target }} is {{ $value | humanizeDuration }} old: "
              "it holds back vacuum and may hold locks.",
              "oldest transaction > ${long_transaction_warning}",
              "OLTP transactions take milliseconds; past 15 minutes vacuum falls behind on busy tables, past an hour "
              "bloat and lock pile-ups become likely. Batch jobs longer than that should be split."),
        Alert("PostgreSQLLongTransaction", "critical",
              "pg_stat_activity_oldest_transaction_age_seconds > ${long_transaction_critical_seconds}",
              "${long_transaction_for}",
              "A PostgreSQL transaction has been open for a long time.",
              "The oldest transaction in {{ $labels.datname }} on {{ $labels.target }} is {{ $value | humanizeDuration }} old: "
              "it holds back vacuum and may hold locks.",
              "> ${long_transaction_critical}"),
        Alert("PostgreSQLIdleInTransaction", "warning",
              "pg_stat_activity_oldest_idle_in_transaction_age_seconds > ${idle_in_transaction_warning_seconds}",
              "${idle_in_transaction_for}",
              "A PostgreSQL session is idle inside an open transaction.",
              "A session in {{ $labels.datname }} on {{ $labels.target }} has been idle in transaction for "
              "{{ $value | humanizeDuration }}: an application forgot to commit or roll back.",
              "idle in transaction > ${idle_in_transaction_warning}",
              "Always an application bug (a leaked transaction); 5 minutes (pgmonitor's value) leaves interactive "
              "sessions alone, 15 minutes is when its locks and snapshot start to hurt."),
        Alert("PostgreSQLIdleInTransaction", "critical",
              "pg_stat_activity_oldest_idle_in_transaction_age_seconds > ${idle_in_transaction_critical_seconds}",
              "${idle_in_transaction_for}",
              "A PostgreSQL session is idle inside an open transaction.",
              "A session in {{ $labels.datname }} on {{ $labels.target }} has been idle in transaction for "
              "{{ $value | humanizeDuration }}: an application forgot to commit or roll back.",
              "> ${idle_in_transaction_critical}"),
        Alert("PostgreSQLBlockedSessions", "warning",
              "pg_stat_activity_blocked_sessions > ${blocked_sessions_warning}", "${blocked_sessions_warning_for}",
              "PostgreSQL sessions are blocked by locks.",
              "{{ $value }} sessions in {{ $labels.datname }} on {{ $labels.target }} wait for locks held by other sessions.",
              "> ${blocked_sessions_warning} blocked for ${blocked_sessions_warning_for}",
              "Short lock waits are normal; any session blocked for five minutes straight is a pile-up, ten at once "
              "means a request path is stalled."),
        Alert("PostgreSQLBlockedSessions", "critical",
              "pg_stat_activity_blocked_sessions > ${blocked_sessions_critical}", "${blocked_sessions_critical_for}",
              "PostgreSQL sessions are blocked by locks.",
              "{{ $value }} sessions in {{ $labels.datname }} on {{ $labels.target }} wait for locks held by other sessions.",
              "> ${blocked_sessions_critical} for ${blocked_sessions_critical_for}"),
        Alert("PostgreSQLDeadlocks", "warning",
              f"sum by ({BY_DB}) (increase(pg_stat_database_deadlocks_total[${{deadlocks_window}}])) > ${{deadlocks_warning}}",
              "${deadlocks_for}",
              "PostgreSQL is detecting deadlocks.",
              "{{ $value | humanize }} deadlocks in {{ $labels.datname }} on {{ $labels.target }} in the last ${deadlocks_window}.",
              "> ${deadlocks_warning} in ${deadlocks_window}, for ${deadlocks_for}",
              "Every deadlock is a transaction the server killed because two code paths take the same locks in "
              "opposite order: a bug to fix even when retries hide it, so the first one is worth a look. More "
              "than one every two minutes for ten minutes is a hot path failing steadily: page."),
        Alert("PostgreSQLDeadlocks", "critical",
              f"sum by ({BY_DB}) (increase(pg_stat_database_deadlocks_total[${{deadlocks_window}}])) > ${{deadlocks_critical}}",
              "${deadlocks_critical_for}",
              "PostgreSQL is detecting deadlocks.",
              "{{ $value | humanize }} deadlocks in {{ $labels.datname }} on {{ $labels.target }} in the last ${deadlocks_window}.",
              "> ${deadlocks_critical} in ${deadlocks_window}, for ${deadlocks_critical_for}"),
        Alert("PostgreSQLHighRollbackRatio", "warning",
              "dbperf:pg_stat_database_xact:implicit_rollback_ratio_rate${rate_window} > ${rollback_ratio_warning}\n"
              "and dbperf:pg_stat_database_xact:rate${rate_window} > ${rollback_min_tps}",
              "${rollback_for}",
              "Many PostgreSQL transactions fail and roll back.",
              "{{ $value | humanizePercentage }} of the transactions in {{ $labels.datname }} on {{ $labels.target }} "
              "rolled back without a ROLLBACK from the client: failed statements, COMMITs of failed transactions "
              "or killed sessions.",
              "> ${rollback_ratio_warning} of transactions roll back without a ROLLBACK statement, at > "
              "${rollback_min_tps}/s, for ${rollback_for}",
              "Pools (SQLAlchemy's and most others) send ROLLBACK for every connection they get back, so a healthy "
              "app can roll back 90% of its transactions: rollbacks the client asked for are left out, what remains "
              "is work the server aborted. 10% of all transactions for a quarter of an hour is a failing request "
              "path; the rate guard keeps idle databases quiet. Needs pg_stat_statements (with track_utility, the "
              "default): without it the alert cannot fire."),
        Alert("PostgreSQLLowCacheHitRatio", "warning",
              "dbperf:pg_stat_database_blks:hit_ratio_rate${rate_window} < ${cache_hit_ratio_warning}\n"
              "and dbperf:pg_stat_database_blks_read:rate${rate_window} > ${cache_min_reads_per_second}",
              "${cache_hit_for}",
              "PostgreSQL reads much from outside shared buffers.",
              "Only {{ $value | humanizePercentage }} of the block reads of {{ $labels.datname }} on {{ $labels.target }} "
              "hit shared buffers.",
              "hit ratio < ${cache_hit_ratio_warning} while > ${cache_min_reads_per_second} blocks/s are read, for ${cache_hit_for}",
              "OLTP working sets should fit in memory (> 99% usual); below 90% with real read traffic the disk sets "
              "the latency. The traffic guard ignores idle databases and one-off scans."),
        Alert("PostgreSQLTransactionIdWraparound", "warning",
              "pg_database_xid_age_autovacuum_freeze_max_age_ratio > ${xid_freeze_ratio_warning}",
              "${xid_freeze_for}",
              "Anti-wraparound vacuum is not keeping up.",
              "Database {{ $labels.datname }} on {{ $labels.target }} is at {{ $value | humanize }}x autovacuum_freeze_max_age.",
              "xid age > ${xid_freeze_ratio_warning} x autovacuum_freeze_max_age for ${xid_freeze_for}",
              "Above 1x an anti-wraparound vacuum is forced (routine); 1.5x for half an hour means it is not "
              "finishing. One billion is half way to the shutdown at 2^31: page while there is time to vacuum."),
        Alert("PostgreSQLTransactionIdWraparound", "critical",
              "pg_database_xid_age > ${xid_age_critical}", "${xid_age_for}",
              "Anti-wraparound vacuum is not keeping up.",
              "Database {{ $labels.datname }} on {{ $labels.target }} has an xid age of {{ $value | humanize }} "
              "(PostgreSQL stops accepting writes near 2.1 billion).",
              "xid age > ${xid_age_critical}"),
        Alert("PostgreSQLCheckpointsRequested", "warning",
              "dbperf:pg_stat_checkpointer:requested_ratio_increase${checkpoints_window} > ${checkpoints_requested_ratio}\n"
              f"and on ({BY}) sum by ({BY}) (increase(pg_stat_checkpointer_num_requested_total[${{checkpoints_window}}]))"
              " >= ${checkpoints_min_requested}",
              "${checkpoints_for}",
              "Most PostgreSQL checkpoints are forced by WAL volume.",
              "{{ $value | humanizePercentage }} of the checkpoints on {{ $labels.target }} in the last "
              "${checkpoints_window} were requested, not timed: max_wal_size is too small for the write load.",
              "> ${checkpoints_requested_ratio} requested over ${checkpoints_window} (at least ${checkpoints_min_requested})",
              "Requested checkpoints come too often and write more full-page images; more than half of them means "
              "max_wal_size should grow. The minimum count ignores a manual CHECKPOINT."),
        # schemaname="": a database's other row (the tables max_series folded, summed) is no table
        Alert("PostgreSQLDeadTuplesAccumulating", "warning",
              "pg_stat_user_tables_n_dead_tup{schemaname!=\"\"} > ${dead_tuples_min}\n"
              "and pg_stat_user_tables_n_dead_tup / (pg_stat_user_tables_n_live_tup + pg_stat_user_tables_n_dead_tup)"
              " > ${dead_tuples_ratio}\n"
              "unless time() - pg_stat_user_tables_last_autovacuum_timestamp_seconds < ${dead_tuples_autovacuum_age_seconds}",
              "${dead_tuples_for}",
              "Dead rows pile up in a table that autovacuum does not clean.",
              "{{ $labels.schemaname }}.{{ $labels.relname }} in {{ $labels.datname }} on {{ $labels.target }} has "
              "{{ $value | humanize }} dead rows and no autovacuum in ${dead_tuples_autovacuum_age}.",
              "> ${dead_tuples_min} dead rows and > ${dead_tuples_ratio} of the table, no autovacuum in "
              "${dead_tuples_autovacuum_age}, for ${dead_tuples_for}",
              "Autovacuum should run long before 20% of a table is dead (its default scale factor); a large table "
              "with no autovacuum for a day is blocked (long transaction, slot, lock) or disabled."),
        # the standby an alert is about, on both sides (the alertmanager.yml inhibition mutes the
        # primary's view of a standby while the standby's own alert fires): a replica's dbperf target
        # name, a sender's application_name
        Alert("PostgreSQLReplicationLag", "warning",
              f"pg_replication_lag_seconds > ${{replication_lag_warning_seconds}}\nand on ({BY}) pg_replication_is_replica == 1",
              "${replication_lag_for}",
              "A PostgreSQL replica lags behind its primary.",
              "Replica {{ $labels.target }} is {{ $value | humanizeDuration }} behind.",
              "> ${replication_lag_warning} for ${replication_lag_for}",
              "Reads from the replica are stale and a failover would lose that much; dbperf reports 0 when all "
              "received WAL is replayed, so an idle primary does not count as lag (and a standby that receives "
              "nothing reads 0: PostgreSQLReplicationStandbyLag and PostgreSQLReplicationSlotLost cover it).",
              labels={"standby": "{{ $labels.target }}"}),
        Alert("PostgreSQLReplicationLag", "critical",
              f"pg_replication_lag_seconds > ${{replication_lag_critical_seconds}}\nand on ({BY}) pg_replication_is_replica == 1",
              "${replication_lag_for}",
              "A PostgreSQL replica lags behind its primary.",
              "Replica {{ $labels.target }} is {{ $value | humanizeDuration }} behind.",
              "> ${replication_lag_critical}",
              labels={"standby": "{{ $labels.target }}"}),
        # the same lag from the primary's pg_stat_replication: also for a standby dbperf does not
        # read. One series per standby connection; pid and state change on a reconnect, so they are
        # aggregated away (a standby that reconnects keeps its `for:`). Only senders whose client
        # reports a replay position (lag_bytes is there): pg_receivewal, pg_recvlogical and
        # pg_basebackup's WAL stream (Barman, backups) never replay, and PostgreSQL shows them a
        # replay_lag that grows with the clock.
        Alert("PostgreSQLReplicationStandbyLag", "warning",
              f"{sender_lag} > ${{replication_lag_warning_seconds}}",
              "${replication_lag_for}",
              "A standby lags behind its primary, as the primary sees it.",
              sender_desc,
              "primary's replay_lag > ${replication_lag_warning} for ${replication_lag_for}",
              "The same thresholds as PostgreSQLReplicationLag, measured by the primary from the standby's "
              "replies (pg_stat_replication.replay_lag): it also covers a standby dbperf does not read and one "
              "that receives slowly (the replica's own figure counts only WAL it received). Only senders that "
              "report a replay position: pg_receivewal and backups never replay and show a replay_lag growing "
              "with the clock. Muted while the standby's own PostgreSQLReplicationLag fires (same `standby` label).",
              labels={"standby": "{{ $labels.application_name }}"}),
        Alert("PostgreSQLReplicationStandbyLag", "critical",
              f"{sender_lag} > ${{replication_lag_critical_seconds}}",
              "${replication_lag_for}",
              "A standby lags behind its primary, as the primary sees it.",
              sender_desc,
              "> ${replication_lag_critical}",
              labels={"standby": "{{ $labels.application_name }}"}),
        Alert("PostgreSQLReplicationSlotInactive", "warning",
              "pg_replication_slots_retained_wal_bytes > ${slot_retained_warning_bytes}\n"
              "and on (job, instance, target, slot_name) pg_replication_slots_active == 0",
              "${slot_inactive_warning_for}",
              "An inactive replication slot holds back WAL.",
              "Slot {{ $labels.slot_name }} on {{ $labels.target }} has no consumer and retains "
              "{{ $value | humanize1024 }}B of WAL.",
              "inactive and retaining > ${slot_retained_warning_bytes_h} for ${slot_inactive_warning_for}",
              "An unused slot keeps WAL forever until the disk fills; an idle slot retaining little is harmless, "
              "so the alert needs both. 10 GiB is where pg_wal usually starts to threaten the disk."),
        Alert("PostgreSQLReplicationSlotInactive", "critical",
              "pg_replication_slots_retained_wal_bytes > ${slot_retained_critical_bytes}\n"
              "and on (job, instance, target, slot_name) pg_replication_slots_active == 0",
              "${slot_inactive_critical_for}",
              "An inactive replication slot holds back WAL.",
              "Slot {{ $labels.slot_name }} on {{ $labels.target }} has no consumer and retains "
              "{{ $value | humanize1024 }}B of WAL.",
              "> ${slot_retained_critical_bytes_h} for ${slot_inactive_critical_for}"),
        # a lost slot has no retained WAL (the series above disappears): this one takes over
        Alert("PostgreSQLReplicationSlotLost", "warning",
              'pg_replication_slots_wal_status{wal_status="unreserved"} == 1', "${slot_unreserved_for}",
              "A replication slot has lost or is about to lose WAL its consumer needs.",
              "Slot {{ $labels.slot_name }} on {{ $labels.target }} is past max_slot_wal_keep_size: the next "
              "checkpoint removes WAL its consumer has not received, unless it catches up first.",
              "wal_status unreserved, for ${slot_unreserved_for}",
              "Unreserved lasts until the next checkpoint at most, then the slot is lost for good: a warning "
              "after a minute, while letting the consumer catch up or raising max_slot_wal_keep_size still saves "
              "it (it returns to reserved by itself). Lost cannot be undone: the standby or CDC consumer can no "
              "longer catch up from the slot and has to be rebuilt, so it pages."),
        Alert("PostgreSQLReplicationSlotLost", "critical",
              'pg_replication_slots_wal_status{wal_status="lost"} == 1', "${slot_lost_for}",
              "A replication slot has lost or is about to lose WAL its consumer needs.",
              "Slot {{ $labels.slot_name }} on {{ $labels.target }} is lost: the WAL its consumer needs is gone, "
              "the standby or logical consumer using it cannot catch up and must be rebuilt.",
              "wal_status lost, for ${slot_lost_for}"),
        Alert("PostgreSQLWalArchivingFailing", "critical",
              "increase(pg_stat_archiver_failed_total[${archiving_window}]) > 0\n"
              "and pg_stat_archiver_last_failure_timestamp_seconds > pg_stat_archiver_last_archive_timestamp_seconds",
              "${archiving_for}",
              "PostgreSQL cannot archive WAL.",
              "archive_command failed {{ $value | humanize }} times in ${archiving_window} on {{ $labels.target }} and "
              "has not succeeded since: backups cannot be restored past this point and pg_wal grows.",
              "failures in ${archiving_window} and last failure after last success, for ${archiving_for}",
              "Failing archiving breaks point-in-time recovery and fills pg_wal; the 'failure after success' test "
              "resolves the alert as soon as one archive works again (an archive age would fire on idle servers)."),
        Alert("PostgreSQLDatabaseGrowingFast", "warning",
              "predict_linear(pg_database_size_bytes[${db_growth_window}], ${db_growth_horizon_seconds}) - pg_database_size_bytes"
              " > ${db_growth_min_bytes}\n"
              "and (predict_linear(pg_database_size_bytes[${db_growth_window}], ${db_growth_horizon_seconds}) - pg_database_size_bytes)"
              " / pg_database_size_bytes > ${db_growth_ratio}",
              "${db_growth_for}",
              "A PostgreSQL database grows unusually fast.",
              "{{ $labels.datname }} on {{ $labels.target }} is on course to grow by {{ $value | humanize1024 }}B in "
              "${db_growth_horizon}.",
              "predicted growth in ${db_growth_horizon} > ${db_growth_min_bytes_h} and > ${db_growth_ratio} of its size "
              "(trend over ${db_growth_window}), for ${db_growth_for}",
              "Growth of a fifth of the database in a day is a runaway job or missing cleanup; both floors and an "
              "hour of `for:` keep bulk loads and small databases quiet (predict_linear alone flaps)."),
    ]
    return rec, alerts


def queries():
    w = "${rate_window}"
    rec = [Record(f"dbperf:pg_statement_duration_seconds_count:rate{w}",
                  f"sum by ({BY_DB}) (rate(pg_statement_duration_seconds_count[{w}]))")]
    for q in ("50", "95", "99"):
        rec.append(Record(f"dbperf:pg_statement_duration_seconds:p{q}_rate{w}",
                          f"histogram_quantile(0.{q}, sum by ({BY_DB}, le) (rate(pg_statement_duration_seconds_bucket[{w}])))"))
    for window in (w, "${statement_mean_long_window}"):
        rec.append(Record(f"dbperf:pg_stat_statements_mean_seconds:rate{window}",
                          f'rate(pg_stat_statements_seconds_total{{queryid!="other"}}[{window}])\n'
                          f'/ rate(pg_stat_statements_calls_total{{queryid!="other"}}[{window}])'))
    pw, pr = "${plan_change_window}", "${plan_change_rate_window}"
    mean = f"dbperf:pg_statement_mean_seconds:rate{pr}"
    rec.append(Record(mean, f'sum by ({BY_DB}, queryid) (rate(pg_stat_statements_seconds_total{{queryid!="other"}}[{pr}]))\n'
                            f'/ sum by ({BY_DB}, queryid) (rate(pg_stat_statements_calls_total{{queryid!="other"}}[{pr}]))'))
    alerts = [
        Alert("PostgreSQLWorkloadLatencyHigh", "warning",
              f"dbperf:pg_statement_duration_seconds:p95_rate{w} > ${{workload_p95_warning}}\n"
              f"and dbperf:pg_statement_duration_seconds_count:rate{w} > ${{workload_min_calls_per_second}}",
              "${workload_p95_for}",
              "PostgreSQL statements are slow.",
              "95% of the statements in {{ $labels.datname }} on {{ $labels.target }} take up to {{ $value | humanizeDuration }}.",
              "p95 > ${workload_p95_warning}s for ${workload_p95_for}",
              "A web request runs several statements within a budget of a few hundred ms; a p95 of 250 ms spends "
              "it all. p99 above 2 s means timeouts for users. Needs > 1 statement/s to be meaningful."),
        Alert("PostgreSQLWorkloadLatencyHigh", "critical",
              f"dbperf:pg_statement_duration_seconds:p99_rate{w} > ${{workload_p99_critical}}\n"
              f"and dbperf:pg_statement_duration_seconds_count:rate{w} > ${{workload_min_calls_per_second}}",
              "${workload_p99_for}",
              "PostgreSQL statements are slow.",
              "99% of the statements in {{ $labels.datname }} on {{ $labels.target }} take up to {{ $value | humanizeDuration }}.",
              "p99 > ${workload_p99_critical}s for ${workload_p99_for}"),
        Alert("PostgreSQLWorkloadLatencyRegression", "warning",
              f"dbperf:pg_statement_duration_seconds:p95_rate{w}\n"
              f"> ${{regression_factor}} * (dbperf:pg_statement_duration_seconds:p95_rate{w} offset 1w)\n"
              f"and dbperf:pg_statement_duration_seconds:p95_rate{w} > ${{regression_floor}}\n"
              f"and dbperf:pg_statement_duration_seconds_count:rate{w} > ${{workload_min_calls_per_second}}",
              "${regression_for}",
              "PostgreSQL statements are slower than at the same time last week.",
              "The p95 statement time of {{ $labels.datname }} on {{ $labels.target }} is {{ $value | humanizeDuration }}, "
              "more than ${regression_factor}x the same hour last week.",
              "p95 > ${regression_factor}x last week's, and > ${regression_floor}s, for ${regression_for}",
              "Comparing with the same hour of last week takes the daily and weekly cycle out; doubling is a "
              "regression (new code, plan change, bloat), the floor ignores fast workloads."),
        Alert("PostgreSQLStatementSlower", "warning",
              f"dbperf:pg_stat_statements_mean_seconds:rate{w}\n"
              "> ${statement_mean_factor} * dbperf:pg_stat_statements_mean_seconds:rate${statement_mean_long_window}\n"
              f"and dbperf:pg_stat_statements_mean_seconds:rate{w} > ${{statement_mean_floor}}\n"
              f'and rate(pg_stat_statements_calls_total{{queryid!="other"}}[{w}]) > ${{statement_min_calls_per_second}}',
              "${statement_mean_for}",
              "A statement became much slower than its own average.",
              "Statement {{ $labels.queryid }} in {{ $labels.datname }} on {{ $labels.target }} now takes "
              "{{ $value | humanizeDuration }} per call, more than ${statement_mean_factor}x its ${statement_mean_long_window} mean.",
              "mean > ${statement_mean_factor}x its ${statement_mean_long_window} mean, > ${statement_mean_floor}s, "
              "> ${statement_min_calls_per_second} calls/s, for ${statement_mean_for}",
              "A plan flip or lock contention shows as one statement's mean tripling; the floor and the call rate "
              "skip fast and rare statements where a 3x jump costs nothing."),
        Alert("PostgreSQLStatementPlanChanged", "warning",
              # the current plan, new since the window began, with the plan of then as old_plan...
              f"(\n  (max by ({BY_DB}, queryid, plan) (pg_statement_plan_info)\n"
              f"    unless on ({BY_DB}, queryid, plan) (pg_statement_plan_info offset {pw}))\n"
              f"  * on ({BY_DB}, queryid) group_left (old_plan)\n"
              f"  max by ({BY_DB}, queryid, old_plan) (label_replace(pg_statement_plan_info offset {pw}, "
              '"old_plan", "$1", "plan", "(.*)"))\n'
              # ...times how many times slower a call is now than then (the alert's value)
              f")\n* on ({BY_DB}, queryid) group_left ()\n"
              f"(\n  {mean} / ({mean} offset {pw}) >= ${{plan_change_factor}}\n"
              f"  and {mean} - ({mean} offset {pw}) >= ${{plan_change_floor}}\n)",
              "${plan_change_for}",
              "A statement's plan changed and it became much slower.",
              "The plan of statement {{ $labels.queryid }} in {{ $labels.datname }} on {{ $labels.target }} changed "
              "from {{ $labels.old_plan }} to {{ $labels.plan }} within ${plan_change_window}, and a call now takes "
              "{{ $value | humanize }}x as long as before (dbperf plans --target {{ $labels.target }} --queryid "
              "{{ $labels.queryid }} prints both plans).",
              "plan changed within ${plan_change_window}, mean per call >= ${plan_change_factor}x and >= "
              "${plan_change_floor}s more than before it (over ${plan_change_rate_window})",
              "A new plan that makes a statement slower is the one regression that needs a DBA, not a code change: "
              "a dropped or invalid index, stale statistics. The floor keeps fast statements quiet; a plan change "
              "without a slowdown (ANALYZE picking an equally good plan) never fires. Needs plans: {enabled: true}."),
        Alert("PostgreSQLStatementsDeallocating", "warning",
              "increase(pg_stat_statements_dealloc_total[${dealloc_window}]) > 0", "${dealloc_for}",
              "PostgreSQL evicts statements from pg_stat_statements.",
              "pg_stat_statements on {{ $labels.target }} deallocated entries {{ $value | humanize }} times in "
              "${dealloc_window}: statistics of rarely run statements are lost; raise pg_stat_statements.max.",
              "any deallocation in ${dealloc_window}",
              "Each deallocation drops statistics (and the workload histogram's input) for 5% of the entries; any "
              "churn means pg_stat_statements.max is too small for the workload."),
    ]
    return rec, alerts


def logs():
    """The server's log (the log reader's pg_log_* counters)."""
    errors = 'pg_log_messages_total{severity=~"ERROR|FATAL|PANIC",sqlstate_class!="28"}'
    rec = [Record(f"dbperf:pg_log_errors:rate{w}", f"sum by ({BY}, sqlstate_class) (rate({errors}[{w}]))")
           for w in ("${rate_window}", "${log_errors_baseline_window}")]
    checkpoints = 'pg_log_checkpoints_total{reason!~"shutdown|end.of.recovery"}'
    requested = 'pg_log_checkpoints_total{reason!~"time|shutdown|end.of.recovery"}'
    cw = "${log_checkpoints_window}"
    alerts = [
        Alert("PostgreSQLAuthFailuresBurst", "warning",
              grown("pg_log_auth_failures_total", "${auth_failures_window}", BY) + " > ${auth_failures_burst}",
              "${auth_failures_for}",
              "Many PostgreSQL logins fail: possibly password guessing.",
              "{{ $value | humanize }} failed logins on {{ $labels.target }} in the last ${auth_failures_window}: "
              "someone is guessing passwords, or a client has the wrong ones.",
              "> ${auth_failures_burst} failed logins in ${auth_failures_window}, for ${auth_failures_for}",
              "A client with a wrong password fails a few times and stops (or retries every few seconds); more "
              "than 20 in five minutes is a script: password guessing, or a deploy that ships a wrong secret to "
              "every pod. Needs log_connections off or on (failures are always logged) and the log reader."),
        Alert("PostgreSQLErrorsRising", "warning",
              "dbperf:pg_log_errors:rate${rate_window}\n"
              "> ${log_errors_factor} * dbperf:pg_log_errors:rate${log_errors_baseline_window}\n"
              "and dbperf:pg_log_errors:rate${rate_window} > ${log_errors_min_per_second}\n"
              "and on (job, instance) up offset ${log_errors_baseline_window}",
              "${log_errors_for}",
              "PostgreSQL logs errors of one SQLSTATE class much more often than usual.",
              "Errors of SQLSTATE class {{ $labels.sqlstate_class }} on {{ $labels.target }}: {{ $value | humanize }}/s, "
              "more than ${log_errors_factor}x their rate over ${log_errors_baseline_window}.",
              "class rate > ${log_errors_factor}x its ${log_errors_baseline_window} rate and > "
              "${log_errors_min_per_second}/s, for ${log_errors_for}",
              "Every application has a steady trickle of errors (unique violations it retries, cancelled "
              "statements); what matters is a class that jumps: deadlocks or serialization failures (40), "
              "constraint violations (23), resources (53), timeouts (57). Three times the day's rate for a "
              "quarter of an hour is a change, not noise. Authentication (28) has its own alert. Quiet for the "
              "first day Prometheus scrapes a dbperf (no usual rate yet: a missing day would count as no errors)."),
        Alert("PostgreSQLLockWaitsFrequent", "warning",
              grown("pg_log_lock_waits_total", "${lock_waits_window}", BY_DB) + " > ${lock_waits_warning}",
              "${lock_waits_for}",
              "PostgreSQL sessions often wait for locks longer than deadlock_timeout.",
              "{{ $value | humanize }} lock waits longer than deadlock_timeout in {{ $labels.datname }} on "
              "{{ $labels.target }} in the last ${lock_waits_window}.",
              "> ${lock_waits_warning} waits over deadlock_timeout in ${lock_waits_window}, for ${lock_waits_for}",
              "log_lock_waits logs each wait past deadlock_timeout (1 s): one a minute for a quarter of an hour "
              "is a hot row or a long transaction that requests keep queueing behind. PostgreSQLBlockedSessions "
              "sees the waits in progress; this one counts the ones between scrapes."),
        Alert("PostgreSQLCheckpointsTooFrequent", "warning",
              f"{grown(checkpoints, cw, BY)}\n"
              f"/ on ({BY}) (${{log_checkpoints_window_seconds}} / max by ({BY}) (pg_settings_checkpoint_timeout_seconds))\n"
              "> ${log_checkpoints_factor}\n"
              f"and on ({BY}) {grown(requested, cw, BY)} >= ${{log_checkpoints_min_requested}}",
              "${log_checkpoints_for}",
              "PostgreSQL checkpoints much more often than checkpoint_timeout intends.",
              "{{ $labels.target }} checkpointed {{ $value | humanize }}x as often as checkpoint_timeout intends over the last "
              "${log_checkpoints_window}: WAL volume (or CHECKPOINT commands) forces them; max_wal_size is too small.",
              "checkpoints > ${log_checkpoints_factor}x window / checkpoint_timeout over ${log_checkpoints_window}, "
              "at least ${log_checkpoints_min_requested} not timed, for ${log_checkpoints_for}",
              "Timed checkpoints cannot come more often than checkpoint_timeout; twice as many as it allows "
              "means WAL checkpoints, each writing every dirty buffer and full-page images after it. From the "
              "log's reasons (log_checkpoints, on by default since 15), with the minimum count ignoring a "
              "manual CHECKPOINT or a base backup."),
        Alert("PostgreSQLTempFilesLarge", "warning",
              grown("pg_log_temp_file_bytes_sum", "${temp_files_window}", BY_DB) + " > ${temp_files_bytes}",
              "${temp_files_for}",
              "PostgreSQL queries spill large temporary files to disk.",
              "Queries in {{ $labels.datname }} on {{ $labels.target }} wrote {{ $value | humanize1024 }}B of temporary "
              "files in the last ${temp_files_window}.",
              "> ${temp_files_bytes_h} of temporary files in ${temp_files_window}, for ${temp_files_for}",
              "Sorts and hashes larger than work_mem spill to disk: a few are normal for reports, 10 GiB an hour "
              "sustained is a query that needs an index or more work_mem, and it competes for I/O (and can fill "
              "the disk). Counts files at least log_temp_files in size."),
        Alert("PostgreSQLDDLOnProduction", "info",
              grown("pg_log_ddl_total", "${ddl_window}", BY_DB + ", user, command") + " > 0",
              "0s",
              "A schema change ran on PostgreSQL.",
              "{{ $labels.user }} ran {{ $value | humanize }} {{ $labels.command }} in {{ $labels.datname }} on "
              "{{ $labels.target }} in the last ${ddl_window}.",
              "any DDL in ${ddl_window}",
              "Context, not a page: a migration outside a deploy, or a manual ALTER, explains the next lock "
              "pile-up or plan change. Needs log_statement = ddl (or mod, all)."),
    ]
    return rec, alerts


def application():
    rec = []
    windows = sorted({"${slo_page_long}", "${slo_page_short}", "${slo_ticket_long}", "${slo_ticket_short}"})
    for window in windows:
        rec += [
            Record(f"dbperf:http_requests:rate{window}", f"sum by ({APP_BY}) (rate(http_requests_total[{window}]))"),
            Record(f"dbperf:http_requests:error_ratio_rate{window}",
                   f'(sum by ({APP_BY}) (rate(http_requests_total{{status=~"5.."}}[{window}]))'
                   f" or 0 * dbperf:http_requests:rate{window})\n/ dbperf:http_requests:rate{window}"),
            Record(f"dbperf:http_requests:slow_ratio_rate{window}",
                   f'1 - sum by ({APP_BY}) (rate(http_request_duration_seconds_bucket{{le="${{slo_latency_threshold_le}}"}}[{window}]))\n'
                   f"/ sum by ({APP_BY}) (rate(http_request_duration_seconds_count[{window}]))"),
            Record(f"dbperf:http_requests:error_burn_rate{window}",
                   f"dbperf:http_requests:error_ratio_rate{window} / ${{slo_error_budget}}"),
            Record(f"dbperf:http_requests:latency_burn_rate{window}",
                   f"dbperf:http_requests:slow_ratio_rate{window} / ${{slo_latency_budget}}"),
        ]
    w = "${rate_window}"
    if True:  # duplicates of the SLO windows are dropped in build()
        rec.append(Record(f"dbperf:http_requests:rate{w}", f"sum by ({APP_BY}) (rate(http_requests_total[{w}]))"))
        rec.append(Record(f"dbperf:http_requests:error_ratio_rate{w}",
                          f'(sum by ({APP_BY}) (rate(http_requests_total{{status=~"5.."}}[{w}])) or 0 * dbperf:http_requests:rate{w})'
                          f'\n/ dbperf:http_requests:rate{w}'))
    for q in ("50", "95", "99"):
        rec.append(Record(f"dbperf:http_request_duration_seconds:p{q}_rate{w}",
                          f"histogram_quantile(0.{q}, sum by ({APP_BY}, le) (rate(http_request_duration_seconds_bucket[{w}])))"))
    app_errors = 'app_log_messages_total{level=~"ERROR|CRITICAL"}'
    for window in (w, "${app_error_logs_baseline_window}"):
        rec.append(Record(f"dbperf:app_log_errors:rate{window}", f"sum by ({APP_LOG_BY}) (rate({app_errors}[{window}]))"))
    rec.append(Record("dbperf:db_client_connections:use_ratio",
                      'sum by (job, instance, pool) (db_client_connections_usage{state="used"})\n'
                      "/ (db_client_connection_max > 0)"))

    def burn(kind, severity, speed):
        traffic = f"and dbperf:http_requests:rate${{slo_{speed}_long}} > ${{slo_min_requests_per_second}}"
        return (f"dbperf:http_requests:{kind}_burn_rate${{slo_{speed}_long}} > ${{slo_{speed}_factor}}\n"
                f"and dbperf:http_requests:{kind}_burn_rate${{slo_{speed}_short}} > ${{slo_{speed}_factor}}\n{traffic}")

    err_desc = ("Handler {{ $labels.handler }} of {{ $labels.job }} burns its error budget "
                "(${slo_error_objective_pct} of requests without a 5xx) {{ $value | humanize }}x too fast "
                "over ${slo_%s_long} and ${slo_%s_short}.")
    lat_desc = ("Handler {{ $labels.handler }} of {{ $labels.job }} burns its latency budget "
                "(${slo_latency_objective_pct} of requests under ${slo_latency_threshold}s) {{ $value | humanize }}x too fast "
                "over ${slo_%s_long} and ${slo_%s_short}.")
    alerts = [
        Alert("AppErrorBudgetBurn", "critical", burn("error", "critical", "page"), "${slo_page_for}",
              "An application handler is burning its error budget fast.", err_desc % ("page", "page"),
              "5xx burn rate > ${slo_page_factor} over ${slo_page_long} and ${slo_page_short} (objective ${slo_error_objective})",
              "The SRE-workbook multi-window pairs: 14.4x spends 2% of a 30-day budget in one hour (page now); 6x "
              "spends 5% in six hours (a ticket that is handled today). The short window resolves the alert "
              "quickly after a fix; the traffic floor ignores handlers with a request a minute.",
              labels={"slo_objective": "${slo_error_objective}"}),
        Alert("AppErrorBudgetBurn", "warning", burn("error", "warning", "ticket"), "${slo_ticket_for}",
              "An application handler is burning its error budget fast.", err_desc % ("ticket", "ticket"),
              "> ${slo_ticket_factor} over ${slo_ticket_long} and ${slo_ticket_short}",
              labels={"slo_objective": "${slo_error_objective}"}),
        Alert("AppLatencyBudgetBurn", "critical", burn("latency", "critical", "page"), "${slo_page_for}",
              "An application handler is burning its latency budget fast.", lat_desc % ("page", "page"),
              "share slower than ${slo_latency_threshold}s burns > ${slo_page_factor}x (objective ${slo_latency_objective})",
              "Same windows as the error budget; 0.5 s is the instrumentation's slow-request threshold (a histogram "
              "bucket bound), 99% the usual interactive objective.",
              labels={"slo_objective": "${slo_latency_objective}"}),
        Alert("AppLatencyBudgetBurn", "warning", burn("latency", "warning", "ticket"), "${slo_ticket_for}",
              "An application handler is burning its latency budget fast.", lat_desc % ("ticket", "ticket"),
              "> ${slo_ticket_factor}x over ${slo_ticket_long} and ${slo_ticket_short}",
              labels={"slo_objective": "${slo_latency_objective}"}),
        # the share in one expression: both rates over the same window at the same instant (a
        # recorded denominator from another evaluation made the text say "102.4%" while traffic grew)
        Alert("AppSlowRequests", "warning",
              f"sum by ({APP_BY}) (rate(http_slow_requests_total[{w}]))\n"
              f"/ sum by ({APP_BY}) (rate(http_requests_total[{w}])) > ${{slow_requests_ratio}}\n"
              f"and dbperf:http_requests:rate{w} > ${{slo_min_requests_per_second}}",
              "${slow_requests_for}",
              "Many requests of a handler are slow.",
              "{{ $value | humanizePercentage }} of the requests to {{ $labels.handler }} of {{ $labels.job }} are slower "
              "than the application's slow-request threshold.",
              "> ${slow_requests_ratio} slow for ${slow_requests_for}",
              "Also catches handlers without an SLO: one request in twenty over the slow threshold for a quarter "
              "of an hour is visible to users."),
        Alert("AppNPlusOneQueries", "warning",
              f"sum by ({APP_BY}) (increase(db_client_n_plus_one_total[${{n_plus_one_window}}])) > ${{n_plus_one_warning}}",
              "${n_plus_one_for}",
              "A handler runs the same statement many times per request (N+1).",
              "{{ $value | humanize }} requests to {{ $labels.handler }} of {{ $labels.job }} in ${n_plus_one_window} ran one "
              "statement fingerprint repeatedly: batch it or join.",
              "> ${n_plus_one_warning} requests with N+1 in ${n_plus_one_window}",
              "An N+1 costs a round trip per row; a hundred such requests an hour is a hot path worth a ticket. "
              "Development reports every one, so it is fixed before production."),
        Alert("AppErrorLogsRising", "warning",
              f"dbperf:app_log_errors:rate{w}\n"
              "> ${app_error_logs_factor} * dbperf:app_log_errors:rate${app_error_logs_baseline_window}\n"
              f"and dbperf:app_log_errors:rate{w} > ${{app_error_logs_min_per_second}}\n"
              "and on (job) count by (job) (up offset ${app_error_logs_baseline_window})",
              "${app_error_logs_for}",
              "An application logs errors much more often than usual.",
              "Logger {{ $labels.logger }} of {{ $labels.job }} logs {{ $value | humanize }} errors/s, more than "
              "${app_error_logs_factor}x its rate over ${app_error_logs_baseline_window}: see the last ones in its slow log.",
              "ERROR+ rate > ${app_error_logs_factor}x its ${app_error_logs_baseline_window} rate and > "
              "${app_error_logs_min_per_second}/s, for ${app_error_logs_for}",
              "Errors the application logs but answers without a 5xx (a failed background job, a retried "
              "call to another service) escape the error budget; a logger whose error rate triples for a "
              "quarter of an hour has a new failure. Quiet for the first day Prometheus scrapes the job. Needs "
              "the library's log handler (install_log_handler)."),
        Alert("AppDBPoolNearExhaustion", "warning",
              "dbperf:db_client_connections:use_ratio > ${pool_warning}", "${pool_warning_for}",
              "An application's database connection pool is nearly exhausted.",
              "Pool {{ $labels.pool }} of {{ $labels.job }} ({{ $labels.instance }}) has {{ $value | humanizePercentage }} "
              "of its connections checked out.",
              "> ${pool_warning} used for ${pool_warning_for}",
              "A full pool makes requests queue for a connection; 80% for ten minutes is the time to size it, 95% "
              "for five means checkouts are about to time out."),
        Alert("AppDBPoolNearExhaustion", "critical",
              "dbperf:db_client_connections:use_ratio > ${pool_critical}", "${pool_critical_for}",
              "An application's database connection pool is nearly exhausted.",
              "Pool {{ $labels.pool }} of {{ $labels.job }} ({{ $labels.instance }}) has {{ $value | humanizePercentage }} "
              "of its connections checked out.",
              "> ${pool_critical} for ${pool_critical_for}"),
        Alert("AppDBPoolCheckoutTimeouts", "warning",
              "sum by (job, instance, pool) (increase(db_client_connection_timeouts_total[${pool_timeouts_window}]))"
              " > ${pool_timeouts_warning}",
              "${pool_timeouts_for}",
              "Requests time out waiting for a database connection.",
              "{{ $value | humanize }} checkouts from pool {{ $labels.pool }} of {{ $labels.job }} timed out in "
              "${pool_timeouts_window}.",
              "> ${pool_timeouts_warning} in ${pool_timeouts_window}",
              "Every timeout is a failed request; a handful is a ticket, twenty in ten minutes is an outage of "
              "that pool."),
        Alert("AppDBPoolCheckoutTimeouts", "critical",
              "sum by (job, instance, pool) (increase(db_client_connection_timeouts_total[${pool_timeouts_window}]))"
              " > ${pool_timeouts_critical}",
              "${pool_timeouts_for}",
              "Requests time out waiting for a database connection.",
              "{{ $value | humanize }} checkouts from pool {{ $labels.pool }} of {{ $labels.job }} timed out in "
              "${pool_timeouts_window}.",
              "> ${pool_timeouts_critical} in ${pool_timeouts_window}"),
    ]
    return rec, alerts


def pipelines():
    rec = [Record("dbperf:pipeline_run_duration_seconds:mean${pipeline_slow_window}",
                  "increase(pipeline_run_duration_seconds_sum[${pipeline_slow_window}])\n"
                  "/ increase(pipeline_run_duration_seconds_count[${pipeline_slow_window}])")]
    stale = ("time() - (pipeline_last_success_timestamp_seconds or pipeline_expected_interval_seconds * 0)\n"
             "> %s * pipeline_expected_interval_seconds")
    stale_desc = ("Pipeline {{ $labels.pipeline }} ({{ $labels.source }} on {{ $labels.target }}) has not succeeded "
                  "for {{ $value | humanizeDuration }}, more than %s times its expected interval.")
    alerts = [
        Alert("PipelineRunFailed", "warning", 'pipeline_last_run_status{status="failed"} == 1', "${pipeline_failed_for}",
              "The latest run of a pipeline failed.",
              "The latest finished run of {{ $labels.pipeline }} ({{ $labels.source }} on {{ $labels.target }}) failed.",
              "latest finished run failed",
              "A failed run needs a look the same day; it resolves by itself when the next run succeeds "
              "(a retry), so it is a warning, and staleness escalates."),
        Alert("PipelineStale", "warning", stale % "${pipeline_stale_warning_factor}", "${pipeline_stale_for}",
              "A pipeline has not succeeded within its expected interval.",
              stale_desc % "${pipeline_stale_warning_factor}",
              "no success for ${pipeline_stale_warning_factor}x expected_intervals",
              "expected_intervals already includes the schedule's slack (26h for a daily job); 1.25x tolerates "
              "one slow run, 3x means consumers read data several runs old. Also fires for a pipeline that "
              "never succeeded."),
        Alert("PipelineStale", "critical", stale % "${pipeline_stale_critical_factor}", "${pipeline_stale_for}",
              "A pipeline has not succeeded within its expected interval.",
              stale_desc % "${pipeline_stale_critical_factor}",
              "no success for ${pipeline_stale_critical_factor}x expected_intervals"),
        Alert("PipelineRunSlow", "warning",
              "pipeline_last_run_duration_seconds\n"
              "> ${pipeline_slow_factor} * dbperf:pipeline_run_duration_seconds:mean${pipeline_slow_window}\n"
              "and pipeline_last_run_duration_seconds > ${pipeline_slow_floor}\n"
              "and increase(pipeline_run_duration_seconds_count[${pipeline_slow_window}]) >= ${pipeline_slow_min_runs}",
              "${pipeline_slow_for}",
              "A pipeline run took much longer than usual.",
              "The latest run of {{ $labels.pipeline }} ({{ $labels.source }} on {{ $labels.target }}) took "
              "{{ $value | humanizeDuration }}, more than ${pipeline_slow_factor}x its ${pipeline_slow_window} average.",
              "last run > ${pipeline_slow_factor}x the ${pipeline_slow_window} mean and > ${pipeline_slow_floor}s",
              "Twice the usual duration is an early sign of data growth or a bad plan before the run misses its "
              "window; needs five runs of history and a one-minute floor to ignore noise in short jobs."),
        Alert("PipelineRunStuck", "warning",
              "pipeline_oldest_running_run_age_seconds\n"
              "> ${pipeline_stuck_factor} * (pipeline_run_duration_seconds_sum / pipeline_run_duration_seconds_count > 0)\n"
              "and pipeline_oldest_running_run_age_seconds > ${pipeline_stuck_floor_seconds}\n"
              "or pipeline_oldest_running_run_age_seconds > ${pipeline_stuck_no_history_seconds}",
              "${pipeline_stuck_for}",
              "A pipeline run has been running far longer than its runs take.",
              "A run of {{ $labels.pipeline }} ({{ $labels.source }} on {{ $labels.target }}) has been running for "
              "{{ $value | humanizeDuration }}.",
              "running > ${pipeline_stuck_factor}x the mean duration and > ${pipeline_stuck_floor}, or > "
              "${pipeline_stuck_no_history} in any case",
              "A run at four times its usual length is hung (lock, dead worker) rather than slow; the absolute "
              "limits cover pipelines with no finished history."),
    ]
    return rec, alerts


def pgbouncer():
    alerts = [
        Alert("PgBouncerDown", "critical", "pgbouncer_up == 0", "${pgbouncer_down_for}",
              "PgBouncer cannot be reached by dbperf.",
              "dbperf could not connect to and query the admin console of PgBouncer target {{ $labels.target }} "
              "(instance {{ $labels.instance }}).",
              "pgbouncer_up == 0 for ${pgbouncer_down_for}",
              "Every client of the pooler fails while it is down, whatever PostgreSQL does; one minute rides out "
              "a single failed scrape and a restart."),
        Alert("PgBouncerClientsWaiting", "warning", "pgbouncer_pools_client_waiting_connections > 0",
              "${pgbouncer_waiting_for}",
              "PgBouncer clients keep waiting for a server connection.",
              "{{ $value }} clients of pool {{ $labels.database }}/{{ $labels.user }} on {{ $labels.target }} wait for "
              "a server connection.",
              "> 0 waiting for ${pgbouncer_waiting_for}",
              "Waiting clients at a peak are what a pooler is for; waiting continuously for five minutes means "
              "pool_size is too small or server connections are held too long."),
        Alert("PgBouncerMaxWaitHigh", "warning",
              "pgbouncer_pools_client_maxwait_seconds > ${pgbouncer_maxwait_warning}", "${pgbouncer_maxwait_for}",
              "PgBouncer clients wait long for a server connection.",
              "The oldest waiting client of pool {{ $labels.database }}/{{ $labels.user }} on {{ $labels.target }} has "
              "waited {{ $value | humanizeDuration }}.",
              "max wait > ${pgbouncer_maxwait_warning}s for ${pgbouncer_maxwait_for}",
              "A second of waiting is added to every query of that client (user-visible); ten seconds hits "
              "application timeouts."),
        Alert("PgBouncerMaxWaitHigh", "critical",
              "pgbouncer_pools_client_maxwait_seconds > ${pgbouncer_maxwait_critical}", "${pgbouncer_maxwait_for}",
              "PgBouncer clients wait long for a server connection.",
              "The oldest waiting client of pool {{ $labels.database }}/{{ $labels.user }} on {{ $labels.target }} has "
              "waited {{ $value | humanizeDuration }}.",
              "> ${pgbouncer_maxwait_critical}s"),
    ]
    return [], alerts


def mysql():
    """MySQL and MariaDB targets (kind: mysql). Where the concept is PostgreSQL's (connections near
    the limit, replication lag, deadlocks, a statement slower than its usual), the thresholds are the
    same keys as the PostgreSQL alerts'."""
    w, long_w, slow_w = "${rate_window}", "${statement_mean_long_window}", "${mysql_slow_queries_baseline_window}"
    up = f"and on ({BY}) mysql_up == 1"
    rec = [Record("dbperf:mysql_connections:use_ratio",
                  "mysql_global_status_threads_connected / mysql_global_variables_max_connections")]
    # the heartbeat table's lag where one is configured (it grows while the SQL thread is stopped),
    # Seconds_Behind_Source elsewhere
    rec.append(Record("dbperf:mysql_replication_lag:seconds",
                      "mysql_replication_heartbeat_lag_seconds\nor mysql_replication_lag_seconds"))
    rec += [Record(f"dbperf:mysql_global_status_slow_queries:rate{x}",
                   f"sum by ({BY}) (rate(mysql_global_status_slow_queries_total[{x}]))") for x in (w, slow_w)]
    rec.append(Record(f"dbperf:mysql_innodb_buffer_pool:hit_ratio_rate{w}",
                      f"rate(mysql_innodb_buffer_pool_read_requests_total[{w}])\n"
                      f"/ (rate(mysql_innodb_buffer_pool_read_requests_total[{w}])"
                      f" + rate(mysql_innodb_buffer_pool_disk_reads_total[{w}]))"))
    rec += [Record(f"dbperf:mysql_statements_mean_seconds:rate{x}",
                   f'rate(mysql_statements_seconds_total{{digest!="other"}}[{x}])\n'
                   f'/ rate(mysql_statements_calls_total{{digest!="other"}}[{x}])') for x in (w, long_w)]
    conn_desc = ("Target {{ $labels.target }} has {{ $value | humanizePercentage }} of max_connections in use.")
    channel = "{{ if $labels.channel }} (channel {{ $labels.channel }}){{ end }}"
    lag_desc = (f"Replica {{{{ $labels.target }}}}{channel} is {{{{ $value | humanizeDuration }}}} behind its source "
                "{{ $labels.source_host }}.")
    deadlock_desc = "{{ $value | humanize }} InnoDB deadlocks on {{ $labels.target }} in the last ${deadlocks_window}."
    history_desc = ("InnoDB's history list on {{ $labels.target }} holds {{ $value | humanize }} undo records not "
                    "purged yet: a long-running transaction keeps them.")
    alerts = [
        Alert("MySQLDown", "critical", "mysql_up == 0", "${mysql_down_for}",
              "MySQL cannot be reached by dbperf.",
              "dbperf could not connect to and query MySQL target {{ $labels.target }} (instance {{ $labels.instance }}).",
              "mysql_up == 0 for ${mysql_down_for}",
              "As PostgreSQLDown: nothing works without the server; one minute rides out a failed scrape and a "
              "fast restart."),
        Alert("MySQLTooManyConnections", "warning",
              "dbperf:mysql_connections:use_ratio > ${connections_warning}", "${connections_warning_for}",
              "MySQL connections are near max_connections.", conn_desc,
              "> ${connections_warning} of max_connections for ${connections_warning_for}",
              "The PostgreSQL thresholds: at max_connections new clients get 'Too many connections' (one more "
              "is kept for a SUPER/CONNECTION_ADMIN user); 80% leaves room for a deploy's second pool."),
        Alert("MySQLTooManyConnections", "critical",
              "dbperf:mysql_connections:use_ratio > ${connections_critical}", "${connections_critical_for}",
              "MySQL connections are near max_connections.", conn_desc,
              "> ${connections_critical} for ${connections_critical_for}"),
        Alert("MySQLThreadsRunningHigh", "warning",
              f"mysql_global_status_threads_running > ${{mysql_threads_running_warning}}\n{up}",
              "${mysql_threads_running_for}",
              "Many MySQL threads run at once.",
              "{{ $value }} threads run statements at once on {{ $labels.target }}.",
              "> ${mysql_threads_running_warning} running for ${mysql_threads_running_for}",
              "Connections are cheap, running threads are not: beyond a few per CPU core they queue for CPU and "
              "InnoDB's latches and every statement slows down; sustained, it is a pile-up (a lock, a slow plan, "
              "a traffic spike)."),
        Alert("MySQLReplicationStopped", "critical",
              f"mysql_replication_io_thread_running * mysql_replication_sql_thread_running == 0\n{up}",
              "${mysql_replication_stopped_for}",
              "MySQL replication has stopped.",
              f"Replication of {{{{ $labels.target }}}}{channel} from {{{{ $labels.source_host }}}} is stopped: its I/O or SQL thread does not run (see Last_IO_Error / Last_SQL_Error).",
              "I/O or SQL thread not running for ${mysql_replication_stopped_for}",
              "A stopped replica falls behind without end and Seconds_Behind_Source is NULL then (no lag alert "
              "can fire); five minutes allow a planned STOP REPLICA and a reconnect after a source restart."),
        Alert("MySQLReplicationLagging", "warning",
              "dbperf:mysql_replication_lag:seconds > ${replication_lag_warning_seconds}", "${replication_lag_for}",
              "A MySQL replica lags behind its source.", lag_desc,
              "> ${replication_lag_warning} for ${replication_lag_for}",
              "The PostgreSQL thresholds: reads from the replica are that stale and a failover loses as much. "
              "The heartbeat table's lag where one is configured (replication.heartbeat_table), "
              "Seconds_Behind_Source elsewhere."),
        Alert("MySQLReplicationLagging", "critical",
              "dbperf:mysql_replication_lag:seconds > ${replication_lag_critical_seconds}", "${replication_lag_for}",
              "A MySQL replica lags behind its source.", lag_desc,
              "> ${replication_lag_critical}"),
        Alert("MySQLInnoDBRowLockWaits", "warning",
              f"rate(mysql_innodb_row_lock_wait_seconds_total[{w}]) > ${{mysql_row_lock_wait_sessions}}",
              "${mysql_row_lock_wait_for}",
              "MySQL sessions spend much time waiting for InnoDB row locks.",
              "Sessions on {{ $labels.target }} waited {{ $value | humanize }} s per second for InnoDB row locks "
              "(on average that many sessions always waiting).",
              "> ${mysql_row_lock_wait_sessions} s of row lock waits per second for ${mysql_row_lock_wait_for}",
              "Row lock time per second is the average number of sessions blocked; one session always blocked "
              "for ten minutes is a hot row or a transaction held open, not a passing conflict."),
        Alert("MySQLDeadlocks", "warning",
              "increase(mysql_innodb_deadlocks_total[${deadlocks_window}]) > ${deadlocks_warning}", "${deadlocks_for}",
              "MySQL is detecting InnoDB deadlocks.", deadlock_desc,
              "> ${deadlocks_warning} in ${deadlocks_window}, for ${deadlocks_for}",
              "The PostgreSQL thresholds: each deadlock is a transaction rolled back by InnoDB, a bug in lock "
              "order worth a look; more than one every two minutes for ten minutes is a hot path failing."),
        Alert("MySQLDeadlocks", "critical",
              "increase(mysql_innodb_deadlocks_total[${deadlocks_window}]) > ${deadlocks_critical}",
              "${deadlocks_critical_for}",
              "MySQL is detecting InnoDB deadlocks.", deadlock_desc,
              "> ${deadlocks_critical} in ${deadlocks_window}, for ${deadlocks_critical_for}"),
        Alert("MySQLHistoryListLong", "warning",
              "mysql_innodb_history_list_length > ${mysql_history_list_warning}", "${mysql_history_list_for}",
              "InnoDB's undo history is not being purged.", history_desc,
              "> ${mysql_history_list_warning} for ${mysql_history_list_for}",
              "A few thousand is normal churn; a hundred thousand that stays means an old transaction (or a "
              "stuck replica's view) stops the purge: reads walk longer version chains and undo grows. A "
              "million slows every query of busy tables."),
        Alert("MySQLHistoryListLong", "critical",
              "mysql_innodb_history_list_length > ${mysql_history_list_critical}", "${mysql_history_list_for}",
              "InnoDB's undo history is not being purged.", history_desc,
              "> ${mysql_history_list_critical} for ${mysql_history_list_for}"),
        Alert("MySQLSlowQueriesRising", "warning",
              f"dbperf:mysql_global_status_slow_queries:rate{w}\n"
              f"> ${{mysql_slow_queries_factor}} * dbperf:mysql_global_status_slow_queries:rate{slow_w}\n"
              f"and dbperf:mysql_global_status_slow_queries:rate{w} > ${{mysql_slow_queries_min_per_second}}\n"
              f"and on (job, instance) up offset {slow_w}",
              "${mysql_slow_queries_for}",
              "MySQL runs slow queries much more often than usual.",
              "{{ $labels.target }} runs {{ $value | humanize }} slow queries/s (longer than long_query_time), "
              "more than ${mysql_slow_queries_factor}x its rate over ${mysql_slow_queries_baseline_window}.",
              "rate > ${mysql_slow_queries_factor}x its ${mysql_slow_queries_baseline_window} rate and > "
              "${mysql_slow_queries_min_per_second}/s, for ${mysql_slow_queries_for}",
              "Every server has a steady trickle of slow queries (reports, batch jobs); a rate three times the "
              "day's for a quarter of an hour is a change (a plan, a missing index, contention). Quiet for the "
              "first day of a server (no baseline)."),
        Alert("MySQLStatementLatencyRegression", "warning",
              f"dbperf:mysql_statements_mean_seconds:rate{w}\n"
              f"> ${{statement_mean_factor}} * dbperf:mysql_statements_mean_seconds:rate{long_w}\n"
              f"and dbperf:mysql_statements_mean_seconds:rate{w} > ${{statement_mean_floor}}\n"
              f'and rate(mysql_statements_calls_total{{digest!="other"}}[{w}]) > ${{statement_min_calls_per_second}}',
              "${statement_mean_for}",
              "A MySQL statement digest became much slower than its own average.",
              "Digest {{ $labels.digest }} in schema '{{ $labels.schema }}' on {{ $labels.target }} now takes "
              "{{ $value | humanizeDuration }} per call, more than ${statement_mean_factor}x its "
              "${statement_mean_long_window} mean.",
              "mean > ${statement_mean_factor}x its ${statement_mean_long_window} mean, > ${statement_mean_floor}s, "
              "> ${statement_min_calls_per_second} calls/s, for ${statement_mean_for}",
              "PostgreSQLStatementSlower's rule and thresholds on performance_schema's digests: a plan change or "
              "lock contention shows as one digest's mean tripling; the floor and the call rate skip fast and "
              "rare statements."),
    ]
    return rec, alerts


def host():
    fs = "host_filesystem_avail_bytes / (host_filesystem_size_bytes > 0)"
    rec = [
        Record("dbperf:host_filesystem:avail_ratio", fs),
        Record("dbperf:host_memory:available_ratio", "host_memory_available_bytes / host_memory_total_bytes"),
        Record("dbperf:host_cpu:busy_ratio_rate${rate_window}",
               'sum without (mode) (rate(host_cpu_seconds_total{mode!="idle"}[${rate_window}]))\n'
               "/ sum without (mode) (rate(host_cpu_seconds_total[${rate_window}]))"),
    ]
    fill_desc = ("{{ $labels.mountpoint }} on {{ $labels.instance }} has {{ $value | humanizePercentage }} space "
                 "left and is predicted to fill within ${fs_filling_%s_horizon}.")
    full_desc = "{{ $labels.mountpoint }} on {{ $labels.instance }} has only {{ $value | humanizePercentage }} space left."
    alerts = [
        Alert("HostFilesystemFillingUp", "warning",
              "dbperf:host_filesystem:avail_ratio < ${fs_filling_warning_ratio}\n"
              "and predict_linear(host_filesystem_avail_bytes[${fs_filling_window}], ${fs_filling_warning_horizon_seconds}) < 0",
              "${fs_filling_warning_for}",
              "A filesystem is predicted to fill up.", fill_desc % "warning",
              "< ${fs_filling_warning_ratio} free and full within ${fs_filling_warning_horizon} (trend over ${fs_filling_window})",
              "node-mixin's pairing of a level with a trend: the level keeps half-empty disks with a busy hour "
              "quiet, the long `for:` stops predict_linear flapping. PostgreSQL stops on a full disk."),
        Alert("HostFilesystemFillingUp", "critical",
              "dbperf:host_filesystem:avail_ratio < ${fs_filling_critical_ratio}\n"
              "and predict_linear(host_filesystem_avail_bytes[${fs_filling_window}], ${fs_filling_critical_horizon_seconds}) < 0",
              "${fs_filling_critical_for}",
              "A filesystem is predicted to fill up.", fill_desc % "critical",
              "< ${fs_filling_critical_ratio} free and full within ${fs_filling_critical_horizon}"),
        Alert("HostFilesystemAlmostFull", "warning",
              "dbperf:host_filesystem:avail_ratio < ${fs_full_warning_ratio}", "${fs_full_for}",
              "A filesystem is almost full.", full_desc,
              "< ${fs_full_warning_ratio} free for ${fs_full_for}",
              "Whatever the trend, under 10% free leaves little room for WAL bursts and vacuum; under 5% a "
              "checkpoint spike can stop PostgreSQL."),
        Alert("HostFilesystemAlmostFull", "critical",
              "dbperf:host_filesystem:avail_ratio < ${fs_full_critical_ratio}", "${fs_full_for}",
              "A filesystem is almost full.", full_desc,
              "< ${fs_full_critical_ratio} free"),
        Alert("HostMemoryLow", "warning",
              "dbperf:host_memory:available_ratio < ${memory_warning_ratio}", "${memory_warning_for}",
              "The host is running out of memory.",
              "{{ $labels.instance }} has {{ $value | humanizePercentage }} of its memory available.",
              "< ${memory_warning_ratio} available for ${memory_warning_for}",
              "PostgreSQL relies on the page cache; under 10% available the cache shrinks and reads hit the disk, "
              "under 5% the OOM killer is near (it kills a backend and PostgreSQL restarts)."),
        Alert("HostMemoryLow", "critical",
              "dbperf:host_memory:available_ratio < ${memory_critical_ratio}", "${memory_critical_for}",
              "The host is running out of memory.",
              "{{ $labels.instance }} has {{ $value | humanizePercentage }} of its memory available.",
              "< ${memory_critical_ratio} for ${memory_critical_for}"),
        Alert("HostCPUBusy", "warning",
              "dbperf:host_cpu:busy_ratio_rate${rate_window} > ${cpu_busy_ratio}", "${cpu_busy_for}",
              "The host's CPUs are nearly saturated.",
              "{{ $labels.instance }} has been {{ $value | humanizePercentage }} busy.",
              "> ${cpu_busy_ratio} busy for ${cpu_busy_for}",
              "Above 90% for a quarter of an hour queries queue for CPU; brief peaks are fine."),
        Alert("HostLoadHigh", "warning",
              'host_load_average{period="5m"} / ignoring (period) host_cpus > ${load_per_cpu}', "${load_for}",
              "The host's load is high for its CPU count.",
              "{{ $labels.instance }} has a 5-minute load of {{ $value | humanize }} per CPU.",
              "5m load > ${load_per_cpu} per CPU for ${load_for}",
              "Load counts processes waiting for CPU and disk; twice the CPUs sustained is saturation "
              "(node-mixin's NodeSystemSaturation)."),
    ]
    return rec, alerts


def monitoring():
    alerts = [
        Alert("Watchdog", "info", "vector(1)", "0s",
              "The alerting pipeline works.",
              "Always firing, routed to a heartbeat receiver: when the heartbeat stops, Prometheus, Alertmanager "
              "or the path between them is broken.",
              "always",
              "A dead man's switch: the only alert that proves the others could be delivered."),
        Alert("PrometheusRuleEvaluationFailures", "critical",
              "increase(prometheus_rule_evaluation_failures_total[${rule_failures_window}]) > 0",
              "${rule_failures_for}",
              "Prometheus fails to evaluate rules.",
              "{{ $value | humanize }} evaluations of rule group {{ $labels.rule_group }} on {{ $labels.instance }} failed "
              "in ${rule_failures_window}: its alerts cannot fire.",
              "any failure in ${rule_failures_window}, for ${rule_failures_for}",
              "A rule that fails to evaluate is an alert that can never fire, so it pages like the alerts it hides."),
        Alert("PrometheusNotConnectedToAlertmanager", "critical",
              "max_over_time(prometheus_notifications_alertmanagers_discovered[${am_discovered_window}]) < 1",
              "${am_discovered_for}",
              "Prometheus has no Alertmanager to send alerts to.",
              "Prometheus {{ $labels.instance }} has discovered no Alertmanager: no alert is delivered "
              "(this one only through the missing Watchdog heartbeat).",
              "no Alertmanager discovered for ${am_discovered_for}",
              "Without an Alertmanager nothing is delivered; max_over_time stops one bad discovery from resetting `for:`."),
        Alert("PrometheusAlertmanagerSendErrors", "warning",
              "rate(prometheus_notifications_errors_total[${rate_window}])\n"
              "/ rate(prometheus_notifications_sent_total[${rate_window}]) > ${am_send_errors_ratio}",
              "${am_send_errors_for}",
              "Prometheus fails to send alerts to an Alertmanager.",
              "{{ $value | humanizePercentage }} of the alerts Prometheus {{ $labels.instance }} sent to "
              "{{ $labels.alertmanager }} failed.",
              "> ${am_send_errors_ratio} of sends failing for ${am_send_errors_for}",
              "The prometheus-mixin's 1%: occasional errors are retried, a steady share means one Alertmanager is "
              "unreachable."),
        Alert("AlertmanagerNotificationsFailing", "critical",
              "rate(alertmanager_notifications_failed_total[${rate_window}])\n"
              "/ rate(alertmanager_notifications_total[${rate_window}]) > ${am_notify_failed_ratio}",
              "${am_notify_failed_for}",
              "Alertmanager fails to deliver notifications.",
              "{{ $value | humanizePercentage }} of the {{ $labels.integration }} notifications of Alertmanager "
              "{{ $labels.instance }} failed.",
              "> ${am_notify_failed_ratio} failing for ${am_notify_failed_for}",
              "A broken integration (expired Slack URL, SMTP password) silently drops pages; critical so it goes "
              "out through the other integrations."),
    ]
    return [], alerts


DEFINITIONS = {"postgres": postgres, "queries": queries, "logs": logs, "application": application, "pipelines": pipelines,
               "pgbouncer": pgbouncer, "mysql": mysql, "host": host, "monitoring": monitoring}


# -- thresholds ------------------------------------------------------------------------------------

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", str(duration))
    if not m:
        raise ValueError(f"not a duration: {duration!r}")
    return float(m.group(1)) * UNITS[m.group(2)]


def _num(x) -> str:
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    return str(x)


def _bytes(x) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if x >= size:
            return f"{_num(x / size)} {unit}"
    return f"{x} B"


def load_profile(name: str, path: Path = THRESHOLDS) -> dict:
    data = yaml.safe_load(path.read_text())
    profiles = data["profiles"]
    if name not in profiles:
        raise SystemExit(f"generate.py: unknown profile {name!r} (known: {', '.join(profiles)})")
    chain, seen = [], set()
    while name:
        if name in seen:
            raise SystemExit(f"generate.py: profiles inherit in a loop at {name!r}")
        seen.add(name)
        chain.append(profiles[name])
        name = profiles[name].get("inherits")
    values = {}
    for depth, layer in enumerate(reversed(chain)):
        for key, value in layer.items():
            if key != "inherits" and depth and key not in values:
                raise SystemExit(f"generate.py: {path.name}: {key}: not a key of the base profile (typo?)")
            values[key] = value
    values.pop("inherits", None)
    values["runbook_base_url"] = data["runbook_base_url"]
    values["exporter_job_regex"] = data["exporter_job_regex"]
    # derived values
    values["slo_error_budget"] = _num(round(1 - float(values["slo_error_objective"]), 10))
    values["slo_latency_budget"] = _num(round(1 - float(values["slo_latency_objective"]), 10))
    for kind in ("error", "latency"):
        values[f"slo_{kind}_objective_pct"] = _num(round(float(values[f"slo_{kind}_objective"]) * 100, 6)) + "%"
    le = float(values["slo_latency_threshold"])
    values["slo_latency_threshold_le"] = f"{le:.1f}" if le.is_integer() else repr(le)  # prometheus_client's le
    for key in list(values):
        if key.endswith(("_for", "_window", "_horizon", "_age", "_warning", "_critical", "_floor", "_history")):
            v = values[key]
            if isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?[smhdw]", v):
                values[key + "_seconds"] = _num(seconds(v))
        if key.endswith("_bytes"):
            values[key + "_h"] = _bytes(values[key])
    return values


def substitute(text: str, values: dict) -> str:
    def one(m):
        key = m.group(1)
        if key not in values:
            raise KeyError(f"threshold {key!r} is not in thresholds.yaml")
        return _num(values[key])
    return re.sub(r"\$\{(\w+)\}", one, text)


# -- output ----------------------------------------------------------------------------------------

class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def anchor(name: str) -> str:
    return name.lower()


def build(concern: str, values: dict) -> dict:
    """One group per concern: its recording rules first, then its alerts. Prometheus evaluates the
    rules of a group in order at one timestamp, each seeing the results of those before it, while
    groups run in no fixed order: an alert reading a series recorded in another group would read
    this evaluation's value or the previous one, by chance (a flaky unit test, a value that lags)."""
    records, alerts = DEFINITIONS[concern]()
    recorded = {}  # windows that coincide in a profile (rate_window and slo_page_short) record once
    for r in records:
        recorded.setdefault(substitute(r.record, values), substitute(r.expr, values))
    rules = [{"record": k, "expr": v} for k, v in recorded.items()]
    for a in alerts:
        labels = {"severity": a.severity}
        labels.update({k: substitute(v, values) for k, v in a.labels.items()})
        rules.append({
            "alert": a.name,
            "expr": substitute(a.expr, values),
            "for": substitute(a.for_, values),
            "labels": labels,
            "annotations": {
                "summary": a.summary,
                "description": substitute(a.description, values),
                "runbook_url": f"{values['runbook_base_url']}#{anchor(a.name)}",
            },
        })
    group = {"name": f"dbperf-{concern}", "rules": rules}
    check_order(group)
    return {"groups": [group]}


RECORDED_NAME = re.compile(r"(?<![\w:])dbperf:[a-zA-Z0-9_]+:[a-zA-Z0-9_]+")


def check_order(group: dict) -> None:
    """Every recorded series a rule reads is recorded earlier in the same group (see build())."""
    seen = set()
    for rule in group["rules"]:
        expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', rule["expr"])  # not inside label values
        missing = sorted(set(RECORDED_NAME.findall(expr)) - seen)
        if missing:
            raise SystemExit(f"generate.py: group {group['name']}: {rule.get('alert') or rule['record']} reads "
                             f"{', '.join(missing)}, not recorded earlier in the same group")
        if "record" in rule:
            seen.add(rule["record"])


def build_all(profile: str) -> list[dict]:
    """Every alerting rule of a profile."""
    values = load_profile(profile)
    return [r for c in CONCERNS for g in build(c, values)["groups"] for r in g["rules"] if "alert" in r]


def render(concern: str, profile: str, values: dict) -> str:
    head = (f"# Generated by alerts/generate.py from alerts/thresholds.yaml (profile {profile}).\n"
            f"# Do not edit: change the thresholds or the generator and run `python alerts/generate.py --all`.\n")
    return head + yaml.dump(build(concern, values), Dumper=_Dumper, sort_keys=False, width=1000,
                            default_flow_style=False)


def out_dir(profile: str) -> Path:
    return HERE / "rules" if profile == "production" else HERE / f"rules-{profile}"


def files(profile: str) -> dict[str, str]:
    values = load_profile(profile)
    return {f"{c}.yml": render(c, profile, values) for c in CONCERNS}


def alert_table() -> str:
    profiles = {p: load_profile(p) for p in ("production", "development", "test")}
    lines = ["| alert | severity | production | development | test | why |", "|---|---|---|---|---|---|"]
    for concern in CONCERNS:
        for a in DEFINITIONS[concern]()[1]:
            cells = []
            for p in profiles:
                text, for_ = substitute(a.threshold, profiles[p]), substitute(a.for_, profiles[p])
                if f"for {for_}" not in text and for_ != "0s":
                    text += f", for {for_}"
                cells.append(text)
            cells = [c.replace("|", "\\|") for c in cells]
            if cells[1] == cells[0]:
                cells[1] = "same"
            if cells[2] == cells[0]:
                cells[2] = "same"
            lines.append(f"| [{a.name}](runbook.md#{anchor(a.name)}) | {a.severity} | {cells[0]} | {cells[1]} | "
                         f"{cells[2]} | {a.why} |")
    return "\n".join(lines) + "\n"


def readme_with_table(text: str) -> str:
    start, end = text.index(README_BEGIN) + len(README_BEGIN), text.index(README_END)
    return text[:start] + "\n" + alert_table() + text[end:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="production")
    parser.add_argument("--all", action="store_true", help="the checked-in profiles (production, development)")
    parser.add_argument("--out", help="directory to write to (default alerts/rules or alerts/rules-<profile>)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    args = parser.parse_args(argv)
    outputs: dict[Path, str] = {}
    for profile in (CHECKED_IN if args.all else (args.profile,)):
        target = Path(args.out) if args.out and not args.all else out_dir(profile)
        for name, text in files(profile).items():
            outputs[target / name] = text
    readme = HERE / "README.md"
    if readme.exists() and (args.all or (args.profile == "production" and not args.out)):
        outputs[readme] = readme_with_table(readme.read_text())
    stale = []
    for path, text in outputs.items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print("generate.py: out of date (run `python alerts/generate.py --all`): "
              + ", ".join(str(p.relative_to(HERE.parent)) if p.is_relative_to(HERE.parent) else str(p) for p in stale),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
