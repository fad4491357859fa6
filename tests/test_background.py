"""The per-target background worker's life: started at most once, never after close, close
wakes the loop and waits for it (never for itself)."""

from __future__ import annotations

import threading

import pytest

from exporter.background import Worker

pytestmark = pytest.mark.fast


def test_starts_once_and_close_wakes_the_loop():
    rounds = []

    def loop():
        while not worker.stop.is_set():
            rounds.append(1)
            worker.stop.wait(60)  # close() must wake it, not the timeout

    worker = Worker("dbperf-test-worker", loop)
    assert not worker.running and not worker.started
    assert worker.start() and not worker.start()
    assert worker.running and worker.started
    closed = []
    worker.close(5, before_join=lambda: closed.append(worker.stop.is_set()))
    assert closed == [True] and not worker.running and rounds == [1]
    assert not worker.start()  # closed for good


def test_close_before_start_and_close_from_inside():
    idle = Worker("dbperf-test-idle", lambda: None)
    idle.close()
    assert not idle.start() and not idle.started

    ended = threading.Event()

    def loop():
        inner.close(wait=5)  # from its own thread: no join of itself
        ended.set()

    inner = Worker("dbperf-test-inner", loop)
    inner.start()
    assert ended.wait(5) and inner.stop.is_set()


def test_before_runs_under_start_only_once():
    calls = []
    worker = Worker("dbperf-test-before", lambda: worker.stop.wait(5))
    worker.start(before=lambda: calls.append(1))
    worker.start(before=lambda: calls.append(2))
    worker.close()
    assert calls == [1]


def test_a_loop_that_raises_is_said_with_its_traceback(caplog):
    def loop():
        raise KeyError("boom")

    worker = Worker("dbperf-test-raises", loop)
    worker.start()
    worker.close(5)
    assert not worker.running
    (record,) = [r for r in caplog.records if r.name == "dbperf.background"]
    assert "dbperf-test-raises stopped by an unexpected error" in record.getMessage() and record.exc_info
