"""exporter.top.frame: the screen as lines, from data (no terminal, no server)."""

from __future__ import annotations

import time

import pytest

from exporter.top.activity import Session
from exporter.top.feed import Snapshot, Statement
from exporter.top.frame import MIN_HEIGHT, MIN_WIDTH, View, databases_of, duration_text, plain, render

pytestmark = pytest.mark.fast

AT = time.mktime((2026, 12, 1, 16, 30, 5, 0, 0, -1))


def sess(pid, datname="shop", duration=1.0, state="active", wait=("", ""), blocked_by=(), query="SELECT ?", **kw):
    return Session(pid=pid, datname=datname, user="app", application="web", client="10.0.0.7", state=state,
                   wait_type=wait[0], wait_event=wait[1], duration=duration, query=query, blocked_by=blocked_by, **kw)


def snapshot(**kw) -> Snapshot:
    sessions = [
        sess(101, duration=75, state="idle in transaction", wait=("Client", "ClientRead"), query="UPDATE t SET v = ?"),
        sess(102, duration=70, wait=("Lock", "transactionid"), blocked_by=(101,), query="UPDATE t SET w = ?"),
        sess(103, duration=65, wait=("Lock", "tuple"), blocked_by=(102,)),
        sess(201, datname="crm", duration=2.5, wait=("IO", "DataFileRead")),
        sess(202, datname="crm", duration=400),
    ]
    data = dict(target="prod", at=AT, version=170002, span=60.0,
                load={("shop", "Lock", "transactionid"): 1.0, ("shop", "Lock", "tuple"): 1.0,
                      ("shop", "Client", "ClientRead"): 1.0, ("crm", "IO", "DataFileRead"): 0.5,
                      ("crm", "CPU", "CPU"): 1.5},
                sessions=sessions,
                statements=[Statement("shop", "-42", 2.0, "Lock", "UPDATE t SET w = ?"),
                            Statement("crm", "77", 1.5, "CPU", "SELECT count(*) FROM big")])
    data.update(kw)
    return Snapshot(**data)


def texts(lines) -> list[str]:
    return [text for _, text in lines]


def test_the_whole_frame():
    out = plain(render(snapshot(), View(), 120, None, 1.0))
    lines = out.splitlines()
    assert lines[0] == "dbperf top - prod - PostgreSQL 17.2 - 16:30:05 - every 1s"
    assert lines[1] == ("load 5.00 average active sessions over 1m | sessions: 4 active, 2 waiting on locks, "
                        "1 idle in transaction")
    assert lines[2].split()[:2] == ["Lock", "2.00"] and lines[2].endswith("transactionid 1.00, tuple 1.00")
    assert "#" * 30 in lines[2] and lines[3].split()[:2] == ["CPU", "1.50"]
    chain = lines.index("BLOCKING CHAINS (blocker, then who waits on it)")
    assert lines[chain + 1] == "  101 idle-tx 1m15s blocks 2 [shop] UPDATE t SET v = ?"
    assert lines[chain + 2] == "  +- 102 Lock:transactionid 1m10s blocked by 101 [shop] UPDATE t SET w = ?"
    assert lines[chain + 3] == "     +- 103 Lock:tuple 1m05s blocked by 102 [shop] SELECT ?"
    header = lines[chain + 4]
    assert header.split()[:3] == ["PID", "DATABASE", "USER"] and header.endswith("QUERY")
    assert [line.split()[0] for line in lines[chain + 5:chain + 10]] == ["202", "101", "102", "103", "201"]
    assert "6m40s" in lines[chain + 5]
    top = lines.index("TOP STATEMENTS BY LOAD")
    assert lines[top + 2].split()[:4] == ["2.00", "shop", "Lock", "-42"]
    assert lines[-1] == "s sort: duration | d database: all | p pause | q quit | up/down scroll"
    assert all(len(line) <= 120 for line in lines)


def test_sort_cycles_duration_database_wait():
    view = View()
    order = []
    for _ in range(3):
        lines = texts(render(snapshot(), view, 120, None))
        start = next(i for i, t in enumerate(lines) if t.startswith("PID")) + 1
        order.append([t.split()[0] for t in lines[start:start + 5]])
        view.cycle_sort()
    assert order[0] == ["202", "101", "102", "103", "201"]  # longest first
    assert order[1] == ["202", "201", "101", "102", "103"]  # crm, then shop
    assert order[2] == ["101", "201", "102", "103", "202"]  # Client, IO, Lock..., then no wait
    assert view.sort == "duration"


def test_the_database_filter_cycles_and_filters_every_section():
    view = View()
    snap = snapshot()
    seen = []
    for _ in range(3):
        view.cycle_database(databases_of(snap))
        seen.append(view.database)
    assert seen == ["crm", "shop", None]
    view.database = "crm"
    lines = texts(render(snap, view, 120, None))
    assert lines[1].startswith("load 2.00 ") and "2 active, 0 waiting on locks" in lines[1]
    assert not any("BLOCKING" in t for t in lines)  # the chain is in shop
    start = next(i for i, t in enumerate(lines) if t.startswith("PID")) + 1
    assert [t.split()[0] for t in lines[start:start + 2]] == ["202", "201"]
    assert not any(t.split()[:1] == ["101"] for t in lines)
    assert any("SELECT count(*) FROM big" in t for t in lines) and not any("-42" in t for t in lines)
    assert "d database: crm" in lines[-1]


def test_paused_errors_and_notes_are_said():
    snap = snapshot(error="cannot connect to host=db port=5432", note="role x lacks pg_read_all_stats")
    lines = texts(render(snap, View(paused=True), 120, None))
    assert lines[0].endswith("PAUSED (p resumes)") and "p resume |" in lines[-1]
    assert lines[2:4] == ["error: cannot connect to host=db port=5432", "note: role x lacks pg_read_all_stats"]


def test_before_two_samples_the_load_is_being_measured():
    lines = texts(render(Snapshot(target="t"), View(), 80, 24))
    assert lines[0].startswith("dbperf top - t - PostgreSQL ? - ")
    assert lines[1].startswith("load: measuring")
    assert lines[2].startswith("PID")  # an empty table, then the keys
    assert lines[-1].startswith("s sort")


@pytest.mark.parametrize("width,height", [(30, 6), (40, 10), (60, 12), (80, 24), (200, 60), (119, 7)])
def test_every_size_fits_and_keeps_the_title_and_the_keys(width, height):
    lines = render(snapshot(), View(), width, height)
    assert 2 <= len(lines) <= height
    assert all(len(text) <= width for _, text in lines)
    assert lines[0][0] == "title" and lines[0][1].startswith("dbperf top")
    assert lines[-1][0] == "title" and lines[-1][1].startswith("s sort")


def test_a_narrow_terminal_drops_columns_the_client_first_and_keeps_the_query():
    header = next(t for t in texts(render(snapshot(), View(), 70, None)) if t.startswith("PID"))
    assert "CLIENT" not in header and "APP" not in header
    assert header.split()[:2] == ["PID", "DATABASE"] and "DURATION" in header and header.endswith("QUERY")


def test_a_short_terminal_says_how_much_did_not_fit():
    many = [sess(1000 + i, duration=i) for i in range(50)]
    lines = texts(render(snapshot(sessions=many), View(), 100, 20))
    assert len(lines) == 20
    assert any(t == "  ... 43 more sessions (down scrolls)" for t in lines), lines
    view = View(offset=1000)  # scrolled past the end: the last page
    lines = texts(render(snapshot(sessions=many), view, 100, 20))
    assert view.offset == 42 and any(t.startswith("1000 ") for t in lines)  # the 8 rows that fit, the last
    assert not any("more sessions" in t for t in lines) and len(lines) == 20


def test_too_small_a_terminal_gets_one_line():
    for width, height in ((MIN_WIDTH - 1, 40), (100, MIN_HEIGHT - 1)):
        (line,) = render(snapshot(), View(), width, height)
        assert line[0] == "error" and line[1].startswith("terminal too small") and len(line[1]) <= width


def test_control_characters_never_reach_the_terminal():
    snap = snapshot(sessions=[sess(1, query="SELECT \x1b[2J\x07 FROM t")])
    out = plain(render(snap, View(), 200, None))
    assert "\x1b" not in out and "\x07" not in out and "SELECT ?[2J? FROM t" in out


def test_statements_without_a_queryid_say_why():
    snap = snapshot(statements=[Statement("shop", "other", 1.0, "CPU")], query_ids_off="compute_query_id is off")
    line = next(t for t in texts(render(snap, View(), 160, None)) if t.split()[:1] == ["1.00"])
    assert line.endswith("(statements without a queryid: compute_query_id is off)")


def test_durations():
    assert [duration_text(x) for x in (0.25, 9.96, 42, 61, 3599, 3600 * 5 + 61, 86400 * 3 + 7200)] == \
        ["0.2s", "10.0s", "42s", "1m01s", "59m59s", "5h01m", "3d02h"]
