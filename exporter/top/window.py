"""Rates over the last N seconds of cumulative counters (the sampler's seconds of sessions): the
increase of each key between the oldest point still in the window and the newest, divided by the
time between them, which is the average number of active sessions ("database load"). Pure: the
times are passed in."""

from __future__ import annotations

from collections import deque


class Window:
    def __init__(self, seconds: float):
        self.seconds = seconds
        self._points: deque[tuple[float, dict]] = deque()

    def add(self, at: float, totals: dict) -> None:
        """The counters' values at ``at`` (times increase); points older than the window are
        dropped, but one at or before its start is kept as the base."""
        self._points.append((at, dict(totals)))
        while len(self._points) > 2 and self._points[1][0] <= at - self.seconds:
            self._points.popleft()

    @property
    def span(self) -> float:
        """Seconds between the oldest point kept and the newest (0 with fewer than two)."""
        if len(self._points) < 2:
            return 0.0
        return self._points[-1][0] - self._points[0][0]

    def rates(self) -> dict:
        """Per key, the increase per second over :attr:`span` (a key absent at the base counts
        from 0; a counter that went down, as after ``forget``, counts 0); empty before two points."""
        span = self.span
        if span <= 0:
            return {}
        base, last = self._points[0][1], self._points[-1][1]
        return {key: max(0.0, value - base.get(key, 0.0)) / span for key, value in last.items()}
