"""The sample store (exporter.postgres.samples): the slowest recent sample per statement, a cap
that keeps the shown statements first, expiry; redacted output; the truncation guess."""

from __future__ import annotations

from dataclasses import replace

import pytest

from exporter.postgres.sampler import looks_truncated
from exporter.postgres.samples import MAX_TEXT, Sample, SampleStore

pytestmark = pytest.mark.fast

BASE = Sample(text="SELECT * FROM t WHERE a = 'bob' AND b LIKE '%x'", truncated=False, duration=1.0,
              wait_event_type="CPU", wait_event="CPU", application="app", client="10.0.0.1", user="u",
              datname="db", queryid="42", seen_at=1000.0)


def test_the_slowest_within_max_age_is_kept():
    store = SampleStore(limit=10, max_age=60)
    assert store.offer(BASE)
    assert not store.offer(replace(BASE, duration=0.5, seen_at=1010))    # faster: the slowest stays
    assert store.offer(replace(BASE, duration=2.0, seen_at=1020))        # slower: replaces it
    assert store.slowest("db", "42").duration == 2.0
    assert store.offer(replace(BASE, duration=0.1, seen_at=1090))        # the kept one is too old now
    assert store.slowest("db", "42").duration == 0.1
    assert store.slowest("db", "43") is None and store.slowest("other", "42") is None
    assert len(store) == 1


def test_recent_is_newest_first_and_bounded():
    store = SampleStore(limit=10, max_age=600)
    for i in range(5):
        store.offer(replace(BASE, queryid=str(i), seen_at=1000 + i))
    assert [s.queryid for s in store.recent(3)] == ["4", "3", "2"]
    assert store.recent(0) == [] and len(store.recent(100)) == 5


def test_the_cap_keeps_shown_statements_before_the_others():
    store = SampleStore(limit=3, max_age=600)
    store.offer(replace(BASE, queryid="s1", seen_at=1), shown=True)
    store.offer(replace(BASE, queryid="s2", seen_at=2), shown=True)
    store.offer(replace(BASE, queryid="o1", seen_at=3))
    assert store.offer(replace(BASE, queryid="o2", seen_at=4))          # pushes out o1, the only one not shown
    assert {s.queryid for s in store.recent(10)} == {"s1", "s2", "o2"}
    assert store.offer(replace(BASE, queryid="s3", seen_at=5), shown=True)
    assert {s.queryid for s in store.recent(10)} == {"s1", "s2", "s3"}
    assert not store.offer(replace(BASE, queryid="o3", seen_at=6))      # never pushes out a shown one
    assert store.offer(replace(BASE, queryid="s4", seen_at=7), shown=True)  # the oldest shown goes
    assert {s.queryid for s in store.recent(10)} == {"s2", "s3", "s4"}


def test_old_statements_expire_and_limit_0_keeps_none():
    store = SampleStore(limit=10, max_age=60)
    store.offer(replace(BASE, queryid="a", seen_at=1000))
    store.offer(replace(BASE, queryid="b", seen_at=1050))
    store.expire(1070)
    assert [s.queryid for s in store.recent(10)] == ["b"]
    none = SampleStore(limit=0)
    assert not none.offer(BASE) and none.recent(10) == []


def test_a_statement_without_queryid_is_keyed_by_its_normalised_text():
    store = SampleStore(limit=10)
    store.offer(replace(BASE, queryid=None))
    store.offer(replace(BASE, queryid=None, text="SELECT * FROM t WHERE a = 'alice' AND b LIKE '%y'", duration=3))
    (kept,) = store.recent(10)
    assert kept.duration == 3 and kept.key.startswith("text:")


def test_as_dict_is_redacted_unless_asked():
    shown = BASE.as_dict()
    assert shown["text"] == "SELECT * FROM t WHERE a = '\u2026' AND b LIKE '%\u2026'" and shown["redacted"]
    assert "bob" not in str(shown)
    assert BASE.as_dict(redact=False)["text"] == BASE.text


@pytest.mark.parametrize("text, octets, track, cut", [
    ("x" * 1023, 1023, 1024, True),     # PostgreSQL keeps track_activity_query_size - 1 bytes
    ("x" * 1020, 1020, 1024, True),     # ... on a character boundary
    ("x" * 500, 500, 1024, False),
    ("x" * 500, 500, None, False),      # the setting not read yet
    ("x" * MAX_TEXT, MAX_TEXT, 1_000_000, True),  # cut by the sampler
])
def test_looks_truncated(text, octets, track, cut):
    assert looks_truncated(text, octets, track) is cut


def test_a_secret_is_redacted_even_with_redact_false():
    secret = replace(BASE, text="ALTER ROLE app PASSWORD 'LeakMe123'")
    assert "LeakMe123" not in secret.as_dict(redact=False)["text"]
    assert "LeakMe123" not in secret.as_dict()["text"]
