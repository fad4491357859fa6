"""Recommendations, each tied to a figure of the report (the ``evidence``) and a threshold."""

from __future__ import annotations

from exporter.report.render_common import bytes_h, dur, pct

CACHE_HIT_MIN = 0.99
CONNECTIONS_PEAK_MAX = 0.8
AVAILABILITY_MIN = 0.999
DISK_FULL_DAYS = 30
STATEMENT_SHARE_MAX = 0.3
REGRESSION_MIN = 0.5
ERROR_RATIO_MAX = 0.01
ROLLBACK_RATIO_MAX = 0.05
CPU_PEAK_MAX = 0.9
MEMORY_MIN = 0.1


def recommendations(s: dict) -> list[dict]:
    out: list[dict] = []

    def add(severity: str, area: str, text: str, evidence: str):
        out.append({"severity": severity, "area": area, "text": text, "evidence": evidence})

    summary = s["summary"]
    for row in summary.get("availability", []):
        if row["ratio"] is not None and row["ratio"] < AVAILABILITY_MIN:
            add("critical" if row["ratio"] < 0.99 else "warning", "availability",
                f"Find out why target {row['target']} was unreachable and add a replica or failover if it matters.",
                f"pg_up was 1 in {pct(row['ratio'], 2)} of scrapes (goal {pct(AVAILABILITY_MIN, 1)})")
    for row in summary.get("connections", []):
        if row["peak_ratio"] is not None and row["peak_ratio"] >= CONNECTIONS_PEAK_MAX:
            add("warning", "connections",
                f"Put a connection pooler (PgBouncer, transaction mode) in front of {row['target']} or lower the "
                "applications' pool sizes before raising max_connections.",
                f"connections peaked at {_count(row['peak'])} of {_count(row['limit'])} ({pct(row['peak_ratio'])})")
    ratio = summary.get("cache_hit_ratio")
    if ratio is not None and ratio < CACHE_HIT_MIN:
        add("warning", "memory",
            "Raise shared_buffers (if memory allows) or find the statements reading from disk "
            "(pg_stat_statements_shared_read_bytes_total).",
            f"cache hit ratio {pct(ratio, 2)} (goal {pct(CACHE_HIT_MIN, 0)})")
    if summary.get("failed_rollback_ratio") is not None:
        if summary["failed_rollback_ratio"] > ROLLBACK_RATIO_MAX:
            add("warning", "transactions", "Look at why transactions fail (application errors, serialization failures, "
                "killed sessions).",
                f"{pct(summary['failed_rollback_ratio'])} of {_count(summary['transactions'])} transactions rolled back without "
                f"a ROLLBACK from the client ({_count(summary['rollbacks'])} rollbacks in all)")
    elif summary.get("rollback_ratio") is not None and summary["rollback_ratio"] > ROLLBACK_RATIO_MAX:
        add("warning", "transactions", "Look at why transactions roll back (application errors, serialization failures).",
            f"{pct(summary['rollback_ratio'])} of {_count(summary['transactions'])} transactions rolled back")
    for row in s["statements"].get("by_total_time", [])[:3]:
        label = _stmt(row)
        if row["share_of_time"] is not None and row["share_of_time"] >= STATEMENT_SHARE_MAX:
            add("warning", "statements", f"Optimise {label} first (EXPLAIN ANALYZE; `dbperf advise`): it dominates statement time.",
                f"{pct(row['share_of_time'])} of all statement time, {_count(row['calls'])} calls at {dur(row['mean_seconds'])} mean")
    for row in s["statements"].get("by_total_time", []):
        change = row["mean_seconds_change"]
        if change is not None and change >= REGRESSION_MIN and (row["share_of_time"] or 0) >= 0.01:
            add("warning", "statements", f"{_stmt(row)} got slower: check for a plan change or a growing table.",
                f"mean {dur(row['mean_seconds'])} against {dur(row['previous_mean_seconds'])} the period before (+{pct(change, 0)})")
    app = s["application"]
    for row in app.get("endpoints", []):
        if row["error_ratio"] is not None and row["error_ratio"] > ERROR_RATIO_MAX and row["requests"] >= 100:
            add("warning", "application", f"Fix the server errors of {row['handler']}.",
                f"{pct(row['error_ratio'], 2)} of {_count(row['requests'])} requests answered 5xx")
    for row in app.get("n_plus_one", [])[:5]:
        add("info", "application",
            f"Load the rows of {row['handler']} in one statement (a join or an IN list / eager loading) instead of one per item.",
            f"{_count(row['requests'])} requests ran statement {row['fingerprint']} repeatedly (N+1)")
    pipes = s["pipelines"]
    for row in pipes.get("pipelines", []):
        if row["failures"]:
            add("warning", "pipelines", f"Look at the failed runs of pipeline {row['pipeline']}.",
                f"{row['failures']} of {row['runs']} runs failed (success rate {pct(row['success_rate'])})")
        if row["stale"]:
            add("critical", "pipelines", f"Pipeline {row['pipeline']} is stale: check its scheduler.",
                f"no success for {dur(row.get('seconds_since_success'))} (expected every {dur(row['expected_interval_seconds'])})"
                if row.get("seconds_since_success") else "never succeeded")
        if row["duration_change"] is not None and row["duration_change"] >= REGRESSION_MIN:
            add("info", "pipelines", f"Pipeline {row['pipeline']} takes longer than the period before.",
                f"mean {dur(row['mean_duration_seconds'])} against {dur(row['previous_mean_duration_seconds'])}")
    res = s["resources"]
    for row in res.get("filesystems", []):
        if row["days_until_full"] is not None and row["days_until_full"] <= DISK_FULL_DAYS:
            add("critical" if row["days_until_full"] <= 7 else "warning", "disk",
                f"Grow {row['mountpoint']} on {_host(row)} or free space before {row['projected_full'][:10]}.",
                f"free space falls by {bytes_h(-row['avail_change_bytes_per_day'])}/day, steadily over the last "
                f"{dur(row['projection']['history_seconds'])}; full in {row['days_until_full']:.1f} days at that rate")
    for row in res.get("cpu", []):
        if row["peak"] is not None and row["peak"] >= CPU_PEAK_MAX:
            add("info", "cpu", f"CPU on {_host(row)} reached saturation: see the anomalies for when and why.",
                f"peak {pct(row['peak'])}, mean {pct(row['mean'])}")
    for row in res.get("memory", []):
        if row["min_available_ratio"] is not None and row["min_available_ratio"] < MEMORY_MIN:
            add("warning", "memory", f"Memory on {_host(row)} ran low: lower work_mem or the connection count, or add memory.",
                f"available memory fell to {pct(row['min_available_ratio'])}")
    findings = s["advisor"].get("findings", [])
    if findings:
        total = sum(f["count"] for f in findings)
        top = ", ".join(f"{f['check']} ({_count(f['count'])}, {f['severity']})" for f in findings[:3])
        add("info", "advisor", "Run `dbperf advise` for the details and the suggested DDL.",
            f"{_count(total)} advisor findings: {top}")
    order = {"critical": 0, "warning": 1, "info": 2}
    out.sort(key=lambda r: order.get(r["severity"], 3))
    return out


def _count(value) -> str:
    """A count as a whole number; ``n/a`` when Prometheus had none (a series of one target only)."""
    return "n/a" if value is None else f"{value:.0f}"


def _host(row: dict) -> str:
    """``the host of target main (scraped at 127.0.0.1:9847)``, or the instance when no target shares it."""
    host = row.get("host") or row["instance"]
    return f"the {host}" if host.startswith("host of ") else host


def _stmt(row: dict) -> str:
    return f"queryid {row['queryid']} ({row['datname']})"
