"""exporter.top.activity: who blocks whom (pure), and the sessions statement on a real server,
read by a role with only pg_monitor."""

from __future__ import annotations

import pytest

from exporter.top.activity import Session, chains, sessions_of, sessions_sql
from topkit import SECRET_LITERAL, lock_chain, monitor_dsn

pytestmark = pytest.mark.fast


def s(pid, blocked_by=(), duration=1.0, **kw):
    return Session(pid=pid, datname=kw.pop("datname", "app"), user="u", application="a", client="local",
                   state=kw.pop("state", "active"), wait_type=kw.pop("wait_type", "Lock" if blocked_by else ""),
                   wait_event="", duration=duration, query="SELECT ?", blocked_by=tuple(blocked_by), **kw)


def test_a_chain_is_a_blocker_then_its_waiters_indented():
    sessions = [s(3, [2], 5), s(1, [], 10), s(2, [1], 8), s(9)]
    assert [(d, p) for d, p, _ in chains(sessions)] == [(0, 1), (1, 2), (2, 3)]


def test_waiters_of_one_blocker_longest_first_and_chains_by_their_root():
    sessions = [s(1, [], 3), s(2, [1], 1), s(3, [1], 2), s(4, [], 9), s(5, [4], 1)]
    assert [(d, p) for d, p, _ in chains(sessions)] == [(0, 4), (1, 5), (0, 1), (1, 3), (1, 2)]


def test_a_blocker_not_listed_is_a_root_without_a_session_and_a_cycle_is_shown_once():
    walk = chains([s(2, [7]), s(3, [2])])
    assert [(d, p, x is None) for d, p, x in walk] == [(0, 7, True), (1, 2, False), (2, 3, False)]
    cycle = chains([s(1, [2]), s(2, [1])])  # a deadlock the server has not detected yet
    assert sorted(p for _, p, _ in cycle) == [1, 2] and len(cycle) == 2
    assert chains([s(1), s(2)]) == []


def test_a_waiter_with_several_blockers_hangs_under_the_first_listed():
    walk = chains([s(1), s(2), s(3, [8, 2, 1])])
    assert [(d, p) for d, p, _ in walk] == [(0, 2), (1, 3)]


def test_rows_become_sessions_with_the_text_redacted():
    rows = [(11, "app", "bob", "psql", None, "client backend", "active", None, None, -0.1, "42",
             "UPDATE t SET v = 'secret' WHERE id = 1", None)]
    (one,) = sessions_of(rows)
    assert one.query == "UPDATE t SET v = '…' WHERE id = ?" and one.duration == 0.0 and one.wait == ""
    assert one.blocked_by == () and one.client == ""


@pytest.mark.pg
def test_a_pg_monitor_role_reads_the_chain_and_never_a_literal(pg):
    dsn = monitor_dsn(pg)
    import psycopg

    with lock_chain(pg) as (a, b, c), psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.info.server_version
        rows = conn.execute(sessions_sql(version)).fetchall()
        by_pid = {x.pid: x for x in sessions_of(rows)}
        assert {a, b, c} <= set(by_pid)
        assert by_pid[a].state == "idle in transaction" and by_pid[a].blocked_by == ()
        assert by_pid[b].wait_type == "Lock" and by_pid[b].blocked_by == (a,)
        assert by_pid[c].wait_type == "Lock" and by_pid[c].blocked_by == (b,)
        assert by_pid[b].query.startswith("UPDATE top_chain_") and "?" in by_pid[b].query
        assert by_pid[a].application == "top-holder" and by_pid[a].user == "postgres"
        assert by_pid[a].query.startswith("UPDATE top_chain_")  # pg_monitor reads other roles' texts
        assert all(SECRET_LITERAL not in x.query for x in by_pid.values())
        assert conn.info.backend_pid not in by_pid  # its own session is not listed
        assert [p for _, p, _ in chains(list(by_pid.values()))][:3] == [a, b, c]
