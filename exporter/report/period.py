"""``--period 24h|7d|START..END`` and ``--end``: the report's time window and its query step.

A relative period is a duration of exporter/durations.py, dbperf's one duration syntax (``24h``,
``7d``, ``1h30m``, ``2w``; a unit is required), ending ``--end`` or now. Times are Unix seconds or
ISO 8601. Every period lies between 1970-01-01 and a day after now and lasts from 10 minutes to 366
days; anything else is a :class:`PeriodError`, one line that quotes the value at most 80 characters
long."""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from exporter.durations import DAY, DurationError, parse_duration
from exporter.errors import UsageError
from exporter.secrets import one_line

MIN_SECONDS = 600                # a shorter period is refused
MAX_SECONDS = 366 * DAY          # and a longer one
FUTURE_SECONDS = DAY             # the latest end: now + a day (clocks and time zones differ)
TIME_TEXT = "Unix seconds or ISO 8601, e.g. 2026-11-20T00:00:00Z"
DURATION_TEXT = "e.g. 24h, 7d, 90m"

_UNIX = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


class PeriodError(UsageError):
    """A refused ``--period`` or ``--end`` (exit code 2): ``option`` names it, ``str()`` says why
    in one line."""

    def __init__(self, reason: str, option: str = "--period"):
        super().__init__(reason)
        self.option = option

    def describe(self) -> str:
        return f"{self.option}: {self}"


def shown(text: str) -> str:
    return one_line(repr(text[:400]), 80)


def parse_time(text: str, option: str = "--period", now: float | None = None) -> float:
    """Unix seconds of ``text`` (Unix seconds or ISO 8601; UTC unless it says otherwise), from
    1970-01-01 to a day after ``now``."""
    stripped = text.strip()
    if _UNIX.fullmatch(stripped):
        ts = float(stripped)  # any length: 400 digits are too late, not "no time"
    else:
        try:
            if len(stripped) > 64:
                raise ValueError(stripped)
            parsed = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", stripped))
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=timezone.utc)
            ts = parsed.timestamp()
        except (ValueError, OverflowError):
            raise PeriodError(f"{shown(text)} is not a time ({TIME_TEXT})", option) from None
    latest = (time.time() if now is None else now) + FUTURE_SECONDS
    if ts < 0:
        raise PeriodError(f"{shown(text)} is before 1970-01-01", option)
    if ts > latest:
        raise PeriodError(f"{shown(text)} is more than a day after now ({iso(latest - FUTURE_SECONDS)}): "
                          "a report covers the past", option)
    return ts


def iso(ts: float) -> str:
    """``2026-11-20T00:00:00Z``; ``n/a`` for what is no time (NaN, infinite, beyond year 9999)."""
    try:
        return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "n/a"


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


def period_seconds(text: str) -> float:
    """The length of a relative ``--period`` (``24h``, ``1h30m``), not checked against 10m .. 366d."""
    try:
        return parse_duration(text, minimum=0.0, maximum=math.inf, bare_seconds=False)
    except DurationError as exc:
        if exc.kind == "range":  # negative
            raise PeriodError(f"{shown(text)} {exc}") from None
        raise PeriodError(f"{shown(text)} is not a duration ({DURATION_TEXT})") from None


def parse_period(text: str, end: str | None = None, now: float | None = None) -> Period:
    now = time.time() if now is None else now
    if ".." in text:
        if end:
            raise PeriodError("--end goes with a relative --period (24h, 7d), not with START..END", "--end")
        first, _, last = text.partition("..")
        start_ts, end_ts = parse_time(first, now=now), parse_time(last, now=now)
        label = f"{iso(start_ts)} .. {iso(end_ts)}"
    else:
        seconds = period_seconds(text)
        end_ts = float(int(parse_time(end, "--end", now) if end else now))
        if seconds > MAX_SECONDS:  # before the subtraction: 1e400 weeks is too long, not "before 1970"
            raise PeriodError(f"the period is longer than {MAX_SECONDS // DAY:.0f} days")
        start_ts = end_ts - seconds
        if start_ts < 0:
            raise PeriodError(f"the period starts before 1970-01-01 ({shown(text)} before {iso(end_ts)})")
        label = f"{text.strip()} ending {iso(end_ts)}"
    if end_ts <= start_ts:
        raise PeriodError(f"the period ends before it starts ({iso(start_ts)} .. {iso(end_ts)})")
    if end_ts - start_ts < MIN_SECONDS:
        raise PeriodError("the period is shorter than 10 minutes")
    if end_ts - start_ts > MAX_SECONDS:
        raise PeriodError(f"the period is longer than {MAX_SECONDS // DAY:.0f} days")
    return Period(start_ts, end_ts, label)
