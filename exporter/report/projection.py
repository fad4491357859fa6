"""When a file system will be full: a least-squares line through its free space, trusted only when
there is enough history and the line is stable (docs/reports.md, "Disk projection").

A projection is made when all of these hold; otherwise the report says why and recommends nothing:

- at least ``MIN_HISTORY_SECONDS`` (6 h) between the first and the last point of the series in the
  window (10 minutes of a demo say nothing about next week);
- free space falls over the whole window, and over each half of it on its own, and each half's slope
  is within ``HALF_SLOPE_TOLERANCE`` (50%) of the whole window's: a line that only one half supports
  (a burst of temporary files, a daily cycle caught at one phase) is not a trend;
- the line explains at least ``MIN_R2`` (half) of the variance of the points (R²): short bursts on
  a flat line leave a slope that explains nothing.
"""

from __future__ import annotations

import math

from exporter.report.render_common import bytes_h, dur

MIN_HISTORY_SECONDS = 6 * 3600
WINDOW_SECONDS = 86400          # the fit uses at least the last day before the end of the report
HALF_SLOPE_TOLERANCE = 0.5
MIN_R2 = 0.5
LAST_DATE = 253402300799.0      # 9999-12-31T23:59:59Z: a disk full later is a disk not filling


def linear_fit(values: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope (per second) and intercept of (t, v) points."""
    n = len(values)
    mt = sum(t for t, _ in values) / n
    mv = sum(v for _, v in values) / n
    var = sum((t - mt) * (t - mt) for t, _ in values)  # products, not ** 2: huge values give inf, no OverflowError
    slope = sum((t - mt) * (v - mv) for t, v in values) / var if var else 0.0
    return slope, mv - slope * mt


def r_squared(values: list[tuple[float, float]], slope: float, intercept: float) -> float:
    """The share of the points' variance the line explains (1 for a constant series on its line)."""
    mv = sum(v for _, v in values) / len(values)
    total = sum((v - mv) * (v - mv) for _, v in values)
    residual = sum((v - (slope * t + intercept)) * (v - (slope * t + intercept)) for t, v in values)
    return 1.0 - residual / total if total else 1.0


def project(values: list[tuple[float, float]], end: float) -> dict:
    """The projection of free-space points ``(t, bytes)`` (sorted, no NaN) at time ``end``.

    ``status`` is ``projected`` (with ``full_timestamp``), ``not_enough_history``, ``unstable`` or
    ``not_filling``; ``reason`` says it in words for the report."""
    history = values[-1][0] - values[0][0] if values else 0.0
    out = {"status": None, "reason": None, "history_seconds": history, "needed_seconds": MIN_HISTORY_SECONDS,
           "slope_bytes_per_second": None, "half_slopes_bytes_per_second": None, "r2": None, "full_timestamp": None}
    if history < MIN_HISTORY_SECONDS or len(values) < 4:
        out["status"] = "not_enough_history"
        out["reason"] = f"not enough history ({history / 60:.0f} min of {MIN_HISTORY_SECONDS / 60:.0f} needed)"
        return out
    slope, intercept = linear_fit(values)
    middle = (values[0][0] + values[-1][0]) / 2
    halves = [linear_fit(part)[0] for part in ([p for p in values if p[0] <= middle], [p for p in values if p[0] > middle])]
    r2 = r_squared(values, slope, intercept)
    out.update(slope_bytes_per_second=slope, half_slopes_bytes_per_second=halves, r2=r2)
    if not all(math.isfinite(x) for x in (slope, r2, *halves)):  # values beyond any disk (a broken exporter)
        out["status"], out["reason"] = "unstable", "no stable trend (free space out of range)"
        return out
    if slope >= 0:
        out["status"], out["reason"] = "not_filling", "not filling"
        return out
    agree = all(h < 0 and abs(h - slope) <= HALF_SLOPE_TOLERANCE * -slope for h in halves)
    if not agree or r2 < MIN_R2:
        out["status"] = "unstable"
        out["reason"] = (f"no stable trend ({_per_day(slope)}/day over {dur(history)}, "
                         f"halves {_per_day(halves[0])} and {_per_day(halves[1])}/day, R² {r2:.2f})")
        return out
    last = values[-1][1]
    full = end + last / -slope
    if not full <= LAST_DATE:
        out["status"], out["reason"] = "not_filling", "not filling"
        return out
    out["status"] = "projected"
    out["full_timestamp"] = full
    return out


def _per_day(slope: float) -> str:
    value = slope * 86400
    return ("+" if value >= 0 else "") + bytes_h(value)
