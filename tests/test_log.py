"""exporter.log: the rate limiter of repeated log lines."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.fast


def test_rate_limiter_forgets_quiet_keys_past_its_bound(monkeypatch):
    from exporter import log

    monkeypatch.setattr(log, "MAX_KEYS", 3)
    now = [0.0]
    limiter = log.RateLimiter(60.0, clock=lambda: now[0])
    assert all(limiter.allow(k) for k in ("a", "b", "c"))
    now[0] = 61.0
    assert limiter.allow("d") and len(limiter._last) == 1  # a, b, c were quiet for a whole interval
    assert not limiter.allow("d") and limiter.allow("a")
