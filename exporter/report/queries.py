"""Collect a report's figures from Prometheus: one function per section, each returning a dict with
``missing`` (metric names without samples in the period) and its figures. Keys are stable: JSON
tooling reads them (docs/reports.md)."""

from __future__ import annotations

import json
import math
import re

from exporter.errors import RuntimeFailure
from exporter.postgres.sqlmark import is_own
from exporter.report import anomalies as anom
from exporter.report import projection
from exporter.report.period import Period, choose_step, iso
from exporter.report.prom import MAX_TIME, PromError, Prometheus
from exporter.secrets import one_line

# every metric the report reads, and whether the --target filter applies to it
PG_METRICS = [
    "pg_up", "pg_stat_statements_calls_total", "pg_stat_statements_seconds_total", "pg_stat_statements_query_info",
    "pg_statement_duration_seconds_bucket", "pg_stat_database_xact_commit_total",
    "pg_stat_database_xact_rollback_total", "pg_stat_database_deadlocks_total", "pg_stat_database_blks_hit_total",
    "pg_stat_database_blks_read_total", "pg_connections_used", "pg_connections_limit", "pg_database_size_bytes",
    "pg_postmaster_start_time_seconds", "dbperf_advisor_findings", "pg_stat_statements_transaction_control_calls_total",
]
OTHER_METRICS = [
    "http_requests_total", "http_request_duration_seconds_bucket", "db_client_n_plus_one_total",
    "pipeline_runs_total", "pipeline_run_duration_seconds_count", "pipeline_last_success_timestamp_seconds",
    "pipeline_expected_interval_seconds", "pipeline_last_run_timestamp_seconds", "pipeline_last_run_duration_seconds",
    "host_cpu_seconds_total", "host_memory_available_bytes", "host_memory_total_bytes", "host_filesystem_avail_bytes",
    "host_filesystem_size_bytes", "ALERTS",
]
REQUIRED = ["pg_up"]
IDLE = 'mode="idle"'
ERR5XX = 'status=~"5.."'


# rows of pg_stat_statements_* that are not one statement of the application's: left out of the top
# lists, counted in the totals (the statements collector folds them into these pseudo queryids)
LEFT_OUT = {
    "transaction_control": "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT ...)",
    "dbperf": "dbperf's own statements",
    "other": "other (statements outside the top N of each database)",
}
TRANSACTION_CONTROL = re.compile(
    r"(BEGIN|START\s+TRANSACTION|COMMIT|END|ROLLBACK|ABORT|SAVEPOINT|RELEASE|PREPARE\s+TRANSACTION)\b", re.I)
LEADING_COMMENTS = re.compile(r"\s*(?:/\*.*?\*/\s*|--[^\n]*\n\s*)*", re.S)


def left_out_kind(queryid: str, text: str | None) -> str | None:
    """``transaction_control``, ``dbperf`` or ``other`` for a row left out of the top lists, else None.

    The pseudo queryids of the statements collector, and, where the text is known (older collectors
    did not fold these rows), dbperf's marked SQL and transaction-control statements by their text."""
    if queryid in LEFT_OUT:
        return queryid
    if text:
        if is_own(text):  # carries /*application='dbperf'*/
            return "dbperf"
        if TRANSACTION_CONTROL.match(text, LEADING_COMMENTS.match(text).end()):
            return "transaction_control"
    return None


class ReportError(RuntimeFailure):
    """A report that cannot be made (empty period, required metrics missing; exit code 1); one-line message."""


def _f(value):
    if value is None or (isinstance(value, float) and (math.isnan(value) or math.isinf(value))):
        return None
    return value


def _time(value):
    """A value read as a Unix time (a last success, a run's finish): None unless within 1970 .. 9999."""
    return value if value is not None and 0 <= value <= MAX_TIME else None


def _seconds(value):
    """A value read as a duration (a run's): None unless from 0 to 100 years."""
    return value if value is not None and 0 <= value <= 100 * 365 * 86400 else None


def finite(value):
    """``value`` with every NaN and infinity (nested in dicts, lists, tuples) made None: the JSON
    report says null for a figure without data, never NaN or Infinity (not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def _ratio(a, b):
    return a / b if a is not None and b else None


def _change(now, before):
    if now is None or before in (None, 0):
        return None
    return (now - before) / before


class Collector:
    def __init__(self, prom: Prometheus, period: Period, target: str | None = None, top: int = 10, progress=None):
        self.prom = prom
        self.p = period
        self.target = target
        self.top = top
        self.progress = progress or (lambda message: None)
        self.present: set[str] = set()
        self._targets_by_instance: dict[str, set[str]] | None = None

    # -- helpers -------------------------------------------------------------------------------
    def sel(self, name: str, extra: str = "") -> str:
        """``name{target="x",extra}``; the target filter applies to PostgreSQL metrics only."""
        parts = []
        if self.target and name in PG_METRICS:
            parts.append(f"target={json.dumps(self.target)}")  # a PromQL string: quotes and backslashes escaped
        if extra:
            parts.append(extra)
        return f"{name}{{{','.join(parts)}}}"

    def q(self, expr: str, at: float | None = None) -> list[tuple[dict, float]]:
        return [(m, _f(v)) for m, v in self.prom.instant(expr, self.p.end if at is None else at)]

    def scalar(self, expr: str, at: float | None = None):
        result = self.q(expr, at)
        return result[0][1] if result else None

    def inc(self, name: str, extra: str = "", by: str = "", offset: bool = False) -> str:
        grouping = f" by ({by})" if by else ""
        off = f" offset {self.p.seconds}s" if offset else ""
        return f"sum{grouping} (increase({self.sel(name, extra)}{self.p.window}{off}))"

    def missing(self, *names: str) -> list[str]:
        return [n for n in names if n not in self.present]

    # -- presence --------------------------------------------------------------------------------
    def find_present(self) -> None:
        names = PG_METRICS + OTHER_METRICS
        parts = [f'label_replace(count(count_over_time({self.sel(n)}{self.p.window})), "metric", "{n}", "", "")'
                 for n in names]
        # a few at a time: one query per metric would be slow, one huge query hard to read in logs
        for i in range(0, len(parts), 8):
            for metric, _ in self.q(" or ".join(parts[i:i + 8])):
                self.present.add(metric["metric"])
        if not self.present:
            raise ReportError(f"no samples at all between {iso(self.p.start)} and {iso(self.p.end)} "
                              f"(none of the {len(names)} metrics the report reads)")
        lacking = self.missing(*REQUIRED)
        if lacking:
            where = f" for target {one_line(json.dumps(self.target, ensure_ascii=False), 200)}" if self.target else ""
            raise ReportError(f"the metrics needed are missing between {iso(self.p.start)} and {iso(self.p.end)}{where}: "
                              f"{', '.join(lacking)} (is Prometheus scraping dbperf?)")

    # -- sections --------------------------------------------------------------------------------
    def summary(self) -> dict:
        out: dict = {"missing": self.missing("pg_up", "pg_stat_statements_calls_total", "pg_stat_statements_seconds_total",
                                             "pg_statement_duration_seconds_bucket", "pg_stat_database_xact_commit_total",
                                             "pg_stat_database_xact_rollback_total", "pg_connections_used",
                                             "pg_connections_limit", "pg_database_size_bytes",
                                             "pg_stat_database_blks_hit_total", "pg_stat_database_blks_read_total")}
        calls = self.scalar(self.inc("pg_stat_statements_calls_total")) if "pg_stat_statements_calls_total" in self.present else None
        seconds = self.scalar(self.inc("pg_stat_statements_seconds_total")) if "pg_stat_statements_seconds_total" in self.present else None
        out["queries"] = calls
        out["statement_seconds"] = seconds
        out["mean_latency_seconds"] = _ratio(seconds, calls)
        for q in (0.95, 0.99):
            key = f"p{int(q * 100)}_latency_seconds"
            out[key] = None
            if "pg_statement_duration_seconds_bucket" in self.present:
                out[key] = self.scalar(f"histogram_quantile({q}, {self.inc('pg_statement_duration_seconds_bucket', by='le')})")
        commits = self.scalar(self.inc("pg_stat_database_xact_commit_total")) if "pg_stat_database_xact_commit_total" in self.present else None
        rollbacks = self.scalar(self.inc("pg_stat_database_xact_rollback_total")) if "pg_stat_database_xact_rollback_total" in self.present else None
        out["commits"] = commits
        out["rollbacks"] = rollbacks
        out["transactions"] = (commits or 0) + (rollbacks or 0) if commits is not None or rollbacks is not None else None
        out["rollback_ratio"] = _ratio(rollbacks, out["transactions"])
        out["failed_rollbacks"] = self.failed_rollbacks() if rollbacks is not None else None
        out["failed_rollback_ratio"] = _ratio(out["failed_rollbacks"], out["transactions"])
        out["deadlocks"] = self.scalar(self.inc("pg_stat_database_deadlocks_total")) if "pg_stat_database_deadlocks_total" in self.present else None
        out["availability"] = sorted(
            ({"target": m.get("target") or m.get("instance", ""), "ratio": v}
             for m, v in self.q(f"avg by (target, instance) (avg_over_time({self.sel('pg_up')}{self.p.window}))")),
            key=lambda r: r["target"])
        out["connections"] = []
        if not self.missing("pg_connections_used", "pg_connections_limit"):
            used = self.sel("pg_connections_used")
            peak_ratio = {m.get("target", ""): v for m, v in self.q(
                f"max by (target) (max_over_time(({used} / on (target, instance) {self.sel('pg_connections_limit')})"
                f"{self.p.window[:-1]}:{self.p.step}s]))")}
            peak = {m.get("target", ""): v for m, v in self.q(f"max by (target) (max_over_time({used}{self.p.window}))")}
            limit = {m.get("target", ""): v for m, v in self.q(f"max by (target) ({self.sel('pg_connections_limit')})")}
            out["connections"] = [{"target": t, "peak": peak.get(t), "limit": limit.get(t), "peak_ratio": peak_ratio.get(t)}
                                  for t in sorted(peak)]
        out["database_size"] = []
        if "pg_database_size_bytes" in self.present:
            expr = f"sum by (target, datname) ({self.sel('pg_database_size_bytes')})"
            first = {(m.get("target", ""), m.get("datname", "")): v for m, v in self.q(expr, self.p.start)}
            last = {(m.get("target", ""), m.get("datname", "")): v for m, v in self.q(expr)}
            for key in sorted(set(first) | set(last)):
                a, b = first.get(key), last.get(key)
                growth = b - a if a is not None and b is not None else None
                out["database_size"].append({"target": key[0], "datname": key[1], "first_bytes": a, "last_bytes": b,
                                             "growth_bytes": growth,
                                             "growth_bytes_per_day": growth * 86400 / self.p.seconds if growth is not None else None})
        hit = self.scalar(self.inc("pg_stat_database_blks_hit_total")) if "pg_stat_database_blks_hit_total" in self.present else None
        read = self.scalar(self.inc("pg_stat_database_blks_read_total")) if "pg_stat_database_blks_read_total" in self.present else None
        out["cache_hit_ratio"] = _ratio(hit, (hit or 0) + (read or 0)) if hit is not None and read is not None else None
        return out

    def failed_rollbacks(self) -> float | None:
        """Rollbacks without a ROLLBACK from the client (failed statements, COMMITs of failed
        transactions, killed sessions), per (target, datname) where the statements collector counts
        the ROLLBACK statements; None when no target does. A pool's ROLLBACK on every connection
        return is no failed work (the alert PostgreSQLHighRollbackRatio reads the same figure)."""
        metric = "pg_stat_statements_transaction_control_calls_total"
        if metric not in self.present:
            return None
        covered = {m.get("target", "") for m, _ in self.q(f"group by (target) (last_over_time({self.sel(metric)}{self.p.window}))")}
        client = {(m.get("target", ""), m.get("datname", "")): v or 0
                  for m, v in self.q(self.inc(metric, 'command="rollback"', by="target, datname"))}
        return sum(max(0.0, (v or 0) - client.get((m.get("target", ""), m.get("datname", "")), 0.0))
                   for m, v in self.q(self.inc("pg_stat_database_xact_rollback_total", by="target, datname"))
                   if m.get("target", "") in covered)

    def statements(self) -> dict:
        out: dict = {"missing": self.missing("pg_stat_statements_calls_total", "pg_stat_statements_seconds_total")}
        out.update(by_total_time=[], by_mean_time=[], by_calls=[], statements=0, left_out=[])
        if out["missing"]:
            return out
        by = "datname, queryid"
        now_calls = self.q(self.inc("pg_stat_statements_calls_total", by=by))
        now_secs = self.q(self.inc("pg_stat_statements_seconds_total", by=by))
        prev_calls = self.q(self.inc("pg_stat_statements_calls_total", by=by, offset=True))
        prev_secs = self.q(self.inc("pg_stat_statements_seconds_total", by=by, offset=True))
        texts = {}
        if "pg_stat_statements_query_info" in self.present:
            for m, _ in self.q(f"max by (datname, queryid, query) (last_over_time({self.sel('pg_stat_statements_query_info')}{self.p.window}))"):
                texts[(m.get("datname", ""), m.get("queryid", ""))] = m.get("query", "")

        def keyed(rows):
            return {(m.get("datname", ""), m.get("queryid", "")): v for m, v in rows}

        nc, ns, pc, ps = keyed(now_calls), keyed(now_secs), keyed(prev_calls), keyed(prev_secs)
        total = sum(v for v in ns.values() if v) or 0
        rows = []
        left_out = {kind: {"kind": kind, "label": label, "calls": 0.0, "total_seconds": 0.0, "rows": 0}
                    for kind, label in LEFT_OUT.items()}
        for key in set(nc) | set(ns):
            calls, secs = nc.get(key), ns.get(key)
            kind = left_out_kind(key[1], texts.get(key))
            if kind:  # not one statement of the application's: counted in the totals, not listed
                left_out[kind]["calls"] += calls or 0
                left_out[kind]["total_seconds"] += secs or 0
                left_out[kind]["rows"] += 1
                continue
            if not calls:
                continue
            mean = _ratio(secs, calls)
            prev_mean = _ratio(ps.get(key), pc.get(key))
            rows.append({"datname": key[0], "queryid": key[1], "query": texts.get(key), "calls": calls,
                         "total_seconds": secs, "mean_seconds": mean, "share_of_time": _ratio(secs, total),
                         "previous_calls": pc.get(key), "previous_total_seconds": ps.get(key),
                         "previous_mean_seconds": prev_mean, "calls_change": _change(calls, pc.get(key)),
                         "total_seconds_change": _change(secs, ps.get(key)), "mean_seconds_change": _change(mean, prev_mean)})
        out["statements"] = len(rows)
        out["left_out"] = [dict(row, share_of_time=_ratio(row["total_seconds"], total))
                           for row in left_out.values() if row["rows"]]
        out["by_total_time"] = sorted(rows, key=lambda r: (-(r["total_seconds"] or 0), r["queryid"]))[:self.top]
        out["by_mean_time"] = sorted(rows, key=lambda r: (-(r["mean_seconds"] or 0), r["queryid"]))[:self.top]
        out["by_calls"] = sorted(rows, key=lambda r: (-(r["calls"] or 0), r["queryid"]))[:self.top]
        return out

    def application(self) -> dict:
        out: dict = {"missing": self.missing("http_requests_total", "http_request_duration_seconds_bucket",
                                             "db_client_n_plus_one_total")}
        out.update(requests=None, errors=None, error_ratio=None, endpoints=[], slowest=[], n_plus_one=[])
        if "http_requests_total" in self.present:
            requests = {m.get("handler", ""): v for m, v in self.q(self.inc("http_requests_total", by="handler"))}
            errors = {m.get("handler", ""): v for m, v in self.q(self.inc("http_requests_total", 'status=~"5.."', by="handler"))}
            p95 = {}
            if "http_request_duration_seconds_bucket" in self.present:
                p95 = {m.get("handler", ""): v for m, v in self.q(
                    f"histogram_quantile(0.95, {self.inc('http_request_duration_seconds_bucket', by='handler, le')})")}
            out["requests"] = sum(v for v in requests.values() if v)
            out["errors"] = sum(v for v in errors.values() if v)
            out["error_ratio"] = _ratio(out["errors"], out["requests"])
            endpoints = [{"handler": h, "requests": r, "errors": errors.get(h, 0.0),
                          "error_ratio": _ratio(errors.get(h, 0.0), r), "p95_seconds": p95.get(h)}
                         for h, r in requests.items() if r]
            out["endpoints"] = sorted(endpoints, key=lambda e: (-e["requests"], e["handler"]))
            out["slowest"] = [e["handler"] for e in sorted((e for e in endpoints if e["p95_seconds"] is not None),
                                                            key=lambda e: (-e["p95_seconds"], e["handler"]))][:5]
        if "db_client_n_plus_one_total" in self.present:
            rows = self.q(self.inc("db_client_n_plus_one_total", by="handler, fingerprint") + " > 0")
            out["n_plus_one"] = sorted(({"handler": m.get("handler", ""), "fingerprint": m.get("fingerprint", ""),
                                         "requests": v} for m, v in rows if v is not None),
                                       key=lambda r: (-r["requests"], r["handler"]))
        return out

    def pipelines(self) -> dict:
        out: dict = {"missing": self.missing("pipeline_runs_total", "pipeline_run_duration_seconds_count",
                                             "pipeline_last_success_timestamp_seconds", "pipeline_expected_interval_seconds")}
        out.update(pipelines=[], runs=None, failures=None, success_rate=None, stale=[])
        if "pipeline_runs_total" not in self.present:
            return out
        runs: dict[str, dict] = {}
        for m, v in self.q(self.inc("pipeline_runs_total", by="pipeline, status")):
            runs.setdefault(m.get("pipeline", ""), {})[m.get("status", "")] = round(v) if v and v > 0 else 0
        mean_now, mean_prev = {}, {}
        if "pipeline_run_duration_seconds_count" in self.present:
            for target, offset in ((mean_now, False), (mean_prev, True)):
                expr = (f"{self.inc('pipeline_run_duration_seconds_sum', by='pipeline', offset=offset)} / "
                        f"{self.inc('pipeline_run_duration_seconds_count', by='pipeline', offset=offset)}")
                target.update({m.get("pipeline", ""): v for m, v in self.q(expr)})
        last_success = {m.get("pipeline", ""): _time(v)
                        for m, v in self.q(f"max by (pipeline) ({self.sel('pipeline_last_success_timestamp_seconds')})")}
        expected = {m.get("pipeline", ""): v for m, v in self.q(f"max by (pipeline) ({self.sel('pipeline_expected_interval_seconds')})")}
        for name in sorted(set(runs) | set(expected)):
            counts = runs.get(name, {})
            total = sum(counts.values())
            failed = counts.get("failed", 0)
            row = {"pipeline": name, "runs": total, "failures": failed,
                   "success_rate": _ratio(total - failed, total), "mean_duration_seconds": mean_now.get(name),
                   "previous_mean_duration_seconds": mean_prev.get(name),
                   "duration_change": _change(mean_now.get(name), mean_prev.get(name)),
                   "last_success": last_success.get(name), "expected_interval_seconds": expected.get(name), "stale": False}
            if expected.get(name):
                since = self.p.end - last_success[name] if last_success.get(name) else None
                row["stale"] = since is None or since > 1.5 * expected[name]
                row["seconds_since_success"] = since
            out["pipelines"].append(row)
        out["runs"] = sum(r["runs"] for r in out["pipelines"])
        out["failures"] = sum(r["failures"] for r in out["pipelines"])
        out["success_rate"] = _ratio(out["runs"] - out["failures"], out["runs"])
        out["stale"] = [r["pipeline"] for r in out["pipelines"] if r["stale"]]
        return out

    def resources(self) -> dict:
        out: dict = {"missing": self.missing("host_cpu_seconds_total", "host_memory_available_bytes",
                                             "host_memory_total_bytes", "host_filesystem_avail_bytes")}
        out.update(cpu=[], memory=[], filesystems=[])
        step, rw = self.p.step, self.p.rate_window
        if "host_cpu_seconds_total" in self.present:
            busy = (f"1 - sum by (instance) (rate({self.sel('host_cpu_seconds_total', IDLE)}{rw})) / "
                    f"sum by (instance) (rate({self.sel('host_cpu_seconds_total')}{rw}))")
            avg = {m.get("instance", ""): v for m, v in self.q(
                f"1 - {self.inc('host_cpu_seconds_total', IDLE, by='instance')} / {self.inc('host_cpu_seconds_total', by='instance')}")}
            for m, values in self.prom.range(busy, self.p.start, self.p.end, step):
                vals = [v for _, v in values if v == v]
                out["cpu"].append({"instance": m.get("instance", ""), "host": self.host(m.get("instance", "")),
                                   "mean": avg.get(m.get("instance", "")),
                                   "peak": max(vals) if vals else None})
        if not self.missing("host_memory_available_bytes", "host_memory_total_bytes"):
            expr = f"{self.sel('host_memory_available_bytes')} / {self.sel('host_memory_total_bytes')}"
            for m, values in self.prom.range(expr, self.p.start, self.p.end, step):
                vals = [v for _, v in values if v == v]
                out["memory"].append({"instance": m.get("instance", ""), "host": self.host(m.get("instance", "")),
                                      "min_available_ratio": min(vals) if vals else None,
                                      "mean_available_ratio": sum(vals) / len(vals) if vals else None})
        if "host_filesystem_avail_bytes" in self.present:
            out["filesystems"] = self.filesystems()
        return out

    def host(self, instance: str) -> str:
        """The host metrics' ``instance`` is dbperf's scrape address (``127.0.0.1:9847``): name the
        host by the dbperf target(s) scraped at the same address, and say which address it is."""
        if self._targets_by_instance is None:
            self._targets_by_instance = {}
            if "pg_up" in self.present:  # every target, whatever --target says: it only names hosts
                for m, _ in self.q(f"group by (instance, target) (last_over_time(pg_up{self.p.window}))"):
                    if m.get("instance") and m.get("target"):
                        self._targets_by_instance.setdefault(m["instance"], set()).add(m["target"])
        return host_label(instance, sorted(self._targets_by_instance.get(instance, ())))

    def filesystems(self) -> list[dict]:
        """Free space per file system over the period, and its projection (exporter/report/projection.py)
        from at least the last day of history."""
        window = max(self.p.seconds, projection.WINDOW_SECONDS)
        step = max(60, choose_step(window) // 5)
        sizes = {(m.get("instance", ""), m.get("mountpoint", "")): v
                 for m, v in self.q(self.sel("host_filesystem_size_bytes"))} if "host_filesystem_size_bytes" in self.present else {}
        rows = []
        for m, values in self.prom.range(self.sel("host_filesystem_avail_bytes"), self.p.end - window, self.p.end, step):
            values = [(t, v) for t, v in values if v == v]
            period = [(t, v) for t, v in values if t >= self.p.start]
            if len(period) < 2:
                continue
            key = (m.get("instance", ""), m.get("mountpoint", ""))
            fit = projection.project(values, self.p.end)
            fill = fit["full_timestamp"]
            slope = fit["slope_bytes_per_second"]
            first, last = period[0][1], period[-1][1]
            rows.append({
                "instance": key[0], "host": self.host(key[0]), "mountpoint": key[1], "size_bytes": sizes.get(key),
                "first_avail_bytes": first, "last_avail_bytes": last, "used_growth_bytes": first - last,
                "avail_change_bytes_per_day": slope * 86400 if slope is not None else None,
                "projection": {k: v for k, v in fit.items() if k != "full_timestamp"} | {"window_seconds": window},
                "projected_full": iso(fill) if fill else None, "projected_full_timestamp": fill,
                "days_until_full": (fill - self.p.end) / 86400 if fill else None})
        return sorted(rows, key=lambda f: (f["instance"], f["mountpoint"]))

    def alerts(self) -> dict:
        out: dict = {"missing": self.missing("ALERTS"), "fired": []}
        if "ALERTS" in self.present:
            step = max(60, math.ceil(self.p.seconds / 10000))
            # (t - step, t]: each rule evaluation's sample is seen at exactly one step
            series = self.prom.range(f'count_over_time(ALERTS{{alertstate="firing"}}[{step * 1000 - 1}ms]) > 0',
                                     self.p.start, self.p.end, step)
            episodes = []
            for m, values in series:
                labels = {k: v for k, v in m.items() if k not in ("__name__", "alertstate")}
                for first, last in runs_of([t for t, _ in values], step, gap=2):
                    episodes.append({"alertname": labels.get("alertname", ""), "severity": labels.get("severity"),
                                     "labels": labels, "start": first, "end": last,
                                     "duration_seconds": last - first + step})
            out["fired"] = sorted(episodes, key=lambda e: (e["start"], e["alertname"]))
        return out

    def advisor(self) -> dict:
        out: dict = {"missing": self.missing("dbperf_advisor_findings"), "findings": []}
        if not out["missing"]:
            rows = self.q(f"max by (target, datname, kind, check, severity) "
                          f"(last_over_time({self.sel('dbperf_advisor_findings')}{self.p.window})) > 0")
            out["findings"] = sorted(({**{k: m.get(k, "") for k in ("target", "datname", "kind", "check", "severity")},
                                       "count": v} for m, v in rows if v is not None), key=lambda r: (-r["count"], r["check"]))
        return out

    # -- key series and anomalies ------------------------------------------------------------------
    def key_series(self) -> dict:
        """Range series for the charts and the anomaly detection, from a day before the period (the
        baselines) to its end."""
        step, rw = self.p.step, self.p.rate_window
        lookback = max(86400, anom.TRAILING_POINTS * step)
        start = self.p.start - lookback
        exprs = {
            "workload_p95_latency": ("pg_statement_duration_seconds_bucket",
                                     f"histogram_quantile(0.95, sum by (le) (rate({self.sel('pg_statement_duration_seconds_bucket')}{rw})))"),
            "statements_per_second": ("pg_stat_statements_calls_total", f"sum(rate({self.sel('pg_stat_statements_calls_total')}{rw}))"),
            "http_error_ratio": ("http_requests_total",
                                 f"sum(rate({self.sel('http_requests_total', ERR5XX)}{rw})) / sum(rate({self.sel('http_requests_total')}{rw}))"),
            "connections_used": ("pg_connections_used", f"sum(max_over_time({self.sel('pg_connections_used')}{rw}))"),
            "cpu_use": ("host_cpu_seconds_total",
                        f"1 - sum(rate({self.sel('host_cpu_seconds_total', IDLE)}{rw})) / sum(rate({self.sel('host_cpu_seconds_total')}{rw}))"),
        }
        out = {}
        for key, (metric, expr) in exprs.items():
            if metric not in self.present:
                continue
            result = self.prom.range(expr, start, self.p.end, step)
            if result:
                out[key] = [(t, _f(v)) for t, v in result[0][1]]
        return out

    def anomaly_context(self) -> dict:
        step = self.p.step
        start = self.p.start - step
        context: dict = {"restarts": [], "pipeline_runs": [], "alerts": []}
        if "pg_postmaster_start_time_seconds" in self.present:
            for m, values in self.prom.range(self.sel("pg_postmaster_start_time_seconds"), start, self.p.end, step):
                for (_, a), (_, b) in zip(values, values[1:]):
                    if a == a and _time(b) is not None and b > a:
                        context["restarts"].append((m.get("target", ""), b))
        if not self.missing("pipeline_last_run_timestamp_seconds", "pipeline_last_run_duration_seconds"):
            context["runs"] = self.pipeline_runs(start - 86400)
            context["pipeline_runs"] = [(p, finish - duration, finish) for finish, duration, p in context["runs"]]
        return context

    def pipeline_runs(self, start: float) -> list[tuple[float, float, str]]:
        """Distinct finished runs (finish, duration, pipeline) seen in the gauges of the latest run."""
        step = min(self.p.step, 300)
        finish = self.prom.range(f"max by (pipeline) ({self.sel('pipeline_last_run_timestamp_seconds')})", start, self.p.end, step)
        duration = {m.get("pipeline", ""): dict(v) for m, v in
                    self.prom.range(f"max by (pipeline) ({self.sel('pipeline_last_run_duration_seconds')})", start, self.p.end, step)}
        runs = set()
        for m, values in finish:
            name = m.get("pipeline", "")
            for t, ts in values:
                d = _seconds(duration.get(name, {}).get(t))
                if _time(ts) is not None and d is not None and ts - d >= 0:
                    runs.add((ts, d, name))
        return sorted(runs)

    def anomalies(self, series: dict, alerts: list[dict]) -> dict:
        out: dict = {"missing": [], "found": [], "method": {
            "z_threshold": anom.Z_THRESHOLD, "trailing_points": anom.TRAILING_POINTS, "step_seconds": self.p.step,
            "mad_floor": anom.MAD_FLOOR}}
        for key in ("workload_p95_latency", "http_error_ratio", "connections_used", "cpu_use"):
            if key not in series:
                out["missing"].append(key)
                continue
            out["found"] += anom.detect(anom.SPECS[key], series[key], self.p.start, self.p.step)
        context = self.anomaly_context()
        if "runs" in context:
            out["found"] += anom.detect_runs(anom.SPECS["pipeline_duration"], context["runs"], self.p.start)
        else:
            out["missing"].append("pipeline_duration")
        context["alerts"] = alerts
        out["found"].sort(key=lambda a: (a["start"], a["series"]))
        anom.attribute_causes(out["found"], context, self.p.step)
        return out


def runs_of(times: list[float], step: float, gap: int = 1) -> list[tuple[float, float]]:
    """Group sorted times into (first, last) runs whose points are at most ``gap`` steps apart."""
    groups: list[list[float]] = []
    for t in sorted(times):
        if groups and t - groups[-1][-1] <= step * gap + 0.5:
            groups[-1].append(t)
        else:
            groups.append([t])
    return [(g[0], g[-1]) for g in groups]


def host_label(instance: str, targets: list[str]) -> str:
    """``host of target main (scraped at 127.0.0.1:9847)``; the instance alone when no target shares it."""
    if not targets:
        return instance
    where = f"scraped at {instance}" if re.fullmatch(r"\[?[\w.:-]+\]?:\d+", instance) else f"instance {instance}"
    if len(targets) == 1:
        return f"host of target {targets[0]} ({where})"
    return f"host of dbperf serving targets {', '.join(targets)} ({where})"


def build_report(prom: Prometheus, period: Period, target: str | None = None, top: int = 10, progress=None) -> dict:
    c = Collector(prom, period, target, top, progress)
    steps = ["checking Prometheus", "finding metrics", "summary", "statements", "application", "pipelines",
             "resources", "alerts", "advisor", "key series", "anomalies", "recommendations"]
    done = iter(range(1, len(steps) + 1))

    def tick(name):
        c.progress(f"[{next(done)}/{len(steps)}] {name}")

    tick(steps[0])
    version = prom.check()
    tick(steps[1])
    c.find_present()
    report: dict = {
        "report_version": 1,
        "prometheus": {"url": prom.shown, "version": version},
        "period": {"label": period.label, "start": iso(period.start), "end": iso(period.end),
                   "start_timestamp": period.start, "end_timestamp": period.end, "seconds": period.seconds,
                   "step_seconds": period.step},
        "target": target,
    }
    sections = {}
    for name in ("summary", "statements", "application", "pipelines", "resources", "alerts", "advisor"):
        tick(name)
        sections[name] = getattr(c, name)()
    tick("key series")
    series = c.key_series()
    tick("anomalies")
    sections["anomalies"] = c.anomalies(series, sections["alerts"]["fired"])
    tick("recommendations")
    from exporter.report.recommend import recommendations

    sections["recommendations"] = recommendations(sections)
    report["sections"] = sections
    report["series"] = {k: [[t, v] for t, v in pts if t >= period.start] for k, pts in series.items()}
    report["queries"] = prom.queries
    return finite(report)


__all__ = ["build_report", "ReportError", "PromError"]
