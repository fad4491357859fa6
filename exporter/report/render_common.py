"""Formatting shared by the Markdown and HTML renderers."""

from __future__ import annotations

from datetime import datetime, timezone


def num(value, digits: int = 0) -> str:
    if value is None:
        return "n/a"
    if abs(value) >= 1e9:
        return f"{value / 1e9:.2f}G"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    return f"{value:,.{digits}f}"


def pct(value, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value * 100:.{digits}f}%"


def dur(seconds) -> str:
    if seconds is None:
        return "n/a"
    if seconds == 0:
        return "0"
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def bytes_h(value) -> str:
    if value is None:
        return "n/a"
    sign = "-" if value < 0 else ""
    value = abs(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{sign}{value:.1f} {unit}" if unit != "B" else f"{sign}{value:.0f} B"
        value /= 1024
    return ""


def change(value) -> str:
    if value is None:
        return "new" if value is None else ""
    arrow = "+" if value >= 0 else ""
    return f"{arrow}{value * 100:.0f}%"


def when(ts) -> str:
    """``2026-11-20 07:30``; ``n/a`` for no time (None, NaN, beyond year 9999)."""
    try:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (TypeError, OverflowError, OSError, ValueError):
        return "n/a"


def no_data(missing: list[str]) -> str:
    return f"no data (missing: {', '.join(missing)})"


def short_query(text: str | None, limit: int = 80) -> str:
    if not text:
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def projection_cell(fs: dict) -> str:
    """The "projected full" cell of a file system: the date, or why there is none."""
    if fs.get("projected_full"):
        return f"{fs['projected_full'][:10]} ({fs['days_until_full']:.0f} days)"
    projection = fs.get("projection") or {}
    return projection.get("reason") or "not filling"


def left_out_text(statements: dict) -> str:
    """The rows left out of the top lists and what they account for (they count in every total)."""
    rows = statements.get("left_out") or []
    if not rows:
        return ""
    parts = [f"{r['label']}: {num(r['calls'])} calls, {dur(r['total_seconds'])} ({pct(r['share_of_time'])} of statement time)"
             for r in rows]
    return "Left out of the lists, counted in the totals and shares: " + "; ".join(parts) + "."
