"""``--period 24h|7d|START..END`` and ``--end``: the report's time window and its query step."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class PeriodError(ValueError):
    pass


def parse_duration(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhdw])", text.strip())
    if not match:
        raise PeriodError(f"{text!r} is not a duration (e.g. 24h, 7d, 90m)")
    return float(match.group(1)) * UNITS[match.group(2)]


def parse_time(text: str) -> float:
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PeriodError(f"{text!r} is not a time (Unix seconds or ISO 8601, e.g. 2026-11-20T00:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def choose_step(seconds: float) -> int:
    """About 150-300 points per chart: 24h -> 5m, 7d -> 1h, 30d -> 3h."""
    for step in (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400):
        if seconds / step <= 300:
            return step
    return 86400


@dataclass(frozen=True)
class Period:
    start: float
    end: float
    label: str

    @property
    def seconds(self) -> int:
        return int(round(self.end - self.start))

    @property
    def step(self) -> int:
        return choose_step(self.seconds)

    @property
    def window(self) -> str:
        """The range selector of the whole period: ``[86400s]``."""
        return f"[{self.seconds}s]"

    @property
    def rate_window(self) -> str:
        """The window of rate() in range queries: the step, at least 5m (4 scrapes at 1m+)."""
        return f"[{max(self.step, 300)}s]"


def parse_period(text: str, end: str | None = None, now: float | None = None) -> Period:
    if ".." in text:
        if end:
            raise PeriodError("--end goes with a relative --period (24h, 7d), not with START..END")
        first, _, last = text.partition("..")
        start_ts, end_ts = parse_time(first), parse_time(last)
        label = f"{iso(start_ts)} .. {iso(end_ts)}"
    else:
        seconds = parse_duration(text)
        end_ts = parse_time(end) if end else (now if now is not None else datetime.now(timezone.utc).timestamp())
        end_ts = float(int(end_ts))
        start_ts = end_ts - seconds
        label = f"{text.strip()} ending {iso(end_ts)}"
    if end_ts <= start_ts:
        raise PeriodError(f"the period ends before it starts ({iso(start_ts)} .. {iso(end_ts)})")
    if end_ts - start_ts < 600:
        raise PeriodError("the period is shorter than 10 minutes")
    return Period(start_ts, end_ts, label)
