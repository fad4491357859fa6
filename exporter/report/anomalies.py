"""Anomalies: points where a key series departs from its own baseline, in two robust ways at once.

For each point ``x`` at time ``t`` of a series sampled every ``step``:

* trailing baseline: the median ``m`` and the median absolute deviation ``MAD`` of the previous
  ``TRAILING_POINTS`` points; robust z = 0.6745 * (x - m) / max(MAD, MAD_FLOOR * |m|);
* same-hour baseline: the points within max(step, 15 min) of ``t - k * 24h`` (k = 1 .. 7) that were
  fetched; the same robust z against them (skipped when fewer than 3 such points exist).

A point is anomalous when both z-scores exceed ``Z_THRESHOLD`` (upward: every key series is one
where higher is worse) and the departure is large in plain terms too (``min_factor`` times the
median and at least ``min_delta`` above it). Consecutive anomalous points make one episode.
Pipelines are judged per run instead: a run whose duration departs from the previous runs.
Everything here is plain arithmetic so a reader can redo it from the numbers in the report."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

Z_THRESHOLD = 6.0
TRAILING_POINTS = 24
MAD_FLOOR = 0.05
SAME_HOUR_WINDOW = 900  # seconds either side of t - k days (at least one step)
DAY = 86400


@dataclass(frozen=True)
class SeriesSpec:
    key: str
    title: str
    unit: str  # seconds | ratio | count
    min_factor: float
    min_delta: float


SPECS = {
    "workload_p95_latency": SeriesSpec("workload_p95_latency", "workload p95 statement latency", "seconds", 2.0, 0.0),
    "http_error_ratio": SeriesSpec("http_error_ratio", "HTTP error ratio (5xx)", "ratio", 3.0, 0.01),
    "connections_used": SeriesSpec("connections_used", "connections used", "count", 1.5, 5.0),
    "cpu_use": SeriesSpec("cpu_use", "CPU use", "ratio", 1.5, 0.2),
    "pipeline_duration": SeriesSpec("pipeline_duration", "pipeline run duration", "seconds", 2.0, 0.0),
}


def robust_z(x: float, baseline: list[float]) -> tuple[float, float]:
    """(z, median) of ``x`` against ``baseline``."""
    median = statistics.median(baseline)
    mad = statistics.median(abs(v - median) for v in baseline)
    scale = max(mad, MAD_FLOOR * abs(median), 1e-12)
    return 0.6745 * (x - median) / scale, median


def _finite(v) -> bool:
    return v is not None and v == v and v not in (float("inf"), float("-inf"))


def detect(spec: SeriesSpec, points: list[tuple[float, float]], start: float, step: float) -> list[dict]:
    """Episodes of ``points`` (time, value; may start before ``start`` to give a baseline) that lie
    at or after ``start``."""
    points = [(t, v) for t, v in points if _finite(v)]
    flagged = []
    for i, (t, x) in enumerate(points):
        if t < start:
            continue
        trailing = [v for _, v in points[max(0, i - TRAILING_POINTS):i]]
        if len(trailing) < TRAILING_POINTS // 2:
            continue
        z, median = robust_z(x, trailing)
        if z < Z_THRESHOLD or x < median * spec.min_factor or x - median < spec.min_delta:
            continue
        near = max(step, SAME_HOUR_WINDOW)
        same_hour = [v for u, v in points if any(abs(u - (t - k * DAY)) <= near for k in range(1, 8))]
        z_day, day_median = (robust_z(x, same_hour) if len(same_hour) >= 3 else (None, None))
        if z_day is not None and (z_day < Z_THRESHOLD or x < day_median * spec.min_factor):
            continue
        flagged.append({"t": t, "value": x, "median": median, "z": z, "z_same_hour": z_day,
                        "same_hour_median": day_median})
    return _episodes(spec, flagged, step)


def detect_runs(spec: SeriesSpec, runs: list[tuple[float, float, str]], start: float) -> list[dict]:
    """``runs``: (finish time, duration, pipeline) of distinct runs, oldest first; each run is judged
    against the previous ``TRAILING_POINTS`` runs of the same pipeline."""
    found = []
    by_pipeline: dict[str, list[tuple[float, float]]] = {}
    for finish, duration, pipeline in runs:
        by_pipeline.setdefault(pipeline, []).append((finish, duration))
    for pipeline, items in sorted(by_pipeline.items()):
        for i, (finish, duration) in enumerate(items):
            previous = [d for _, d in items[max(0, i - TRAILING_POINTS):i]]
            if finish < start or len(previous) < 3:
                continue
            z, median = robust_z(duration, previous)
            if z >= Z_THRESHOLD and duration >= median * spec.min_factor and duration - median >= spec.min_delta:
                found.append(_episode(spec, [{"t": finish, "value": duration, "median": median, "z": z,
                                              "z_same_hour": None, "same_hour_median": None}],
                                      0, subject=pipeline, start=finish - duration))
    return found


def _episodes(spec: SeriesSpec, flagged: list[dict], step: float) -> list[dict]:
    groups: list[list[dict]] = []
    for point in flagged:
        if groups and point["t"] - groups[-1][-1]["t"] <= step * 1.5:
            groups[-1].append(point)
        else:
            groups.append([point])
    return [_episode(spec, group, step) for group in groups]


def _episode(spec: SeriesSpec, group: list[dict], step: float, subject: str | None = None,
             start: float | None = None) -> dict:
    peak = max(group, key=lambda p: p["value"])
    median = peak["median"]
    factor = peak["value"] / median if median > 0 else None
    return {
        "series": spec.key,
        "title": spec.title + (f" ({subject})" if subject else ""),
        "subject": subject,
        "start": start if start is not None else group[0]["t"] - step,
        "end": group[-1]["t"],
        "peak_time": peak["t"],
        "peak": peak["value"],
        "median": median,
        "factor": factor,
        "z": round(peak["z"], 1),
        "z_same_hour": None if peak["z_same_hour"] is None else round(peak["z_same_hour"], 1),
        "size": describe_size(spec, peak["value"], median, factor),
        "causes": [],
    }


def fmt_value(unit: str, value: float) -> str:
    if value is None:
        return "n/a"
    if unit == "seconds":
        if value >= 60:
            return f"{value / 60:.1f} min"
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    return f"{value:.0f}"


def describe_size(spec: SeriesSpec, value: float, median: float, factor: float | None) -> str:
    base = f"{fmt_value(spec.unit, value)} against a median of {fmt_value(spec.unit, median)}"
    if factor is None:
        return base
    return f"{factor:.0f}x the median ({base})" if factor >= 2 else f"{factor:.1f}x the median ({base})"


# alerts that fire all the time on purpose (alerts/rules/monitoring.yml): never a likely cause
HEARTBEAT_ALERTS = frozenset({"Watchdog"})


def overlaps(a_start: float, a_end: float, b_start: float, b_end: float, slack: float) -> bool:
    return a_start - slack <= b_end and b_start <= a_end + slack


def attribute_causes(anomalies: list[dict], context: dict, step: float) -> None:
    """Fill ``causes`` of each anomaly from what happened at the same time: another anomaly (a
    connections spike, CPU), a PostgreSQL restart, a pipeline run, an alert firing."""
    for anomaly in anomalies:
        s, e = anomaly["start"], anomaly["end"]
        causes = anomaly["causes"]
        for other in anomalies:
            if other is not anomaly and other["series"] != anomaly["series"] and overlaps(s, e, other["start"], other["end"], step):
                causes.append(f"concurrent {other['title']} anomaly: {other['size']}")
        for target, when in context.get("restarts", []):
            if s - 2 * step <= when <= e + step:
                causes.append(f"PostgreSQL restart (target {target}) at {_hm(when)}")
        for pipeline, run_start, run_end in context.get("pipeline_runs", []):
            if anomaly["series"] != "pipeline_duration" and overlaps(s, e, run_start, run_end, 0):
                causes.append(f"pipeline {pipeline} was running ({_hm(run_start)}-{_hm(run_end)})")
        for alert in context.get("alerts", []):
            if alert["alertname"] in HEARTBEAT_ALERTS:
                continue  # always firing by design: it overlaps everything and explains nothing
            if overlaps(s, e, alert["start"], alert["end"], step):
                causes.append(f"alert {alert['alertname']} firing ({_hm(alert['start'])}-{_hm(alert['end'])})")
        if not causes:
            causes.append("no concurrent event found (no restart, connection spike, pipeline run or alert)")


def _hm(ts: float) -> str:
    from exporter.report.period import iso

    return iso(ts)[5:16].replace("T", " ")
