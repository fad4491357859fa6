"""``dbperf report`` on what a new user's first hours look like, against the real Prometheus 2.42
serving a backfilled history (tests/fixtures/report_history.py ``write_edge_history``): a disk
projection only from enough, stable history; hosts named by the dbperf target scraped at their
address; transaction control and dbperf's own statements left out of the top lists but counted."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from exporter.report.render_common import num
from fixtures.report_history import EDGE_KIND, EDGE_STATEMENTS, served_history, write_edge_history

pytestmark = pytest.mark.prom

END = 1795132800  # 2026-11-20T00:00:00Z
DAY = 86400
MAIN_HOST = "host of target main (scraped at 127.0.0.1:9847)"
FRESH_HOST = "host of target fresh (scraped at 127.0.0.1:9848)"
MARKER = "/*application='dbperf'*/"


@pytest.fixture(scope="module")
def edge():
    with served_history(write_edge_history, END, prefix="dbperf-report-edge-") as (url, truth):
        yield {"url": url, "truth": truth}


def run(edge, *args, fmt="json", end=END, period="12h"):
    proc = subprocess.run([sys.executable, "-m", "exporter", "report", "--prometheus", edge["url"], "--period", period,
                           "--end", str(end), "--format", fmt, *args], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if fmt == "json" else proc.stdout


def filesystems(report: dict) -> dict:
    return {(f["instance"], f["mountpoint"]): f for f in report["sections"]["resources"]["filesystems"]}


def disk_recommendations(report: dict) -> list[dict]:
    return [r for r in report["sections"]["recommendations"] if r["area"] == "disk"]


@pytest.mark.parametrize("period", ["10m", "12h"])
def test_ten_minutes_of_history_project_nothing(edge, period):
    """The demo case: 10 minutes of a disk falling fast are no reason for a "full in 5 days"."""
    for end in (END, END - 60):  # and a minute earlier: the same answer, not another date
        report = run(edge, end=end, period=period)
        recs = [r["text"] for r in disk_recommendations(report)]
        assert not [r for r in recs if "fresh" in r or "9848" in r], recs
        fs = filesystems(report)[("127.0.0.1:9848", "/")]
        assert fs["projected_full"] is None and fs["days_until_full"] is None and fs["avail_change_bytes_per_day"] is None
        assert fs["host"] == FRESH_HOST
        assert fs["projection"]["status"] == "not_enough_history"
        minutes = 10 if end == END else 9
        assert fs["projection"]["reason"] == f"not enough history ({minutes} min of 360 needed)"
    md = run(edge, fmt="markdown", period=period)
    assert f"| {FRESH_HOST} | / |" in md and "not enough history (10 min of 360 needed) |" in md


def test_steady_growth_gives_a_stable_critical_projection(edge):
    truth = edge["truth"]
    dates = []
    for end, period in ((END, "12h"), (END - 60, "12h"), (END, "1h")):  # a short report reads the last day too
        report = run(edge, end=end, period=period)
        (rec,) = [r for r in disk_recommendations(report) if "/var/lib/postgresql" in r["text"]]
        assert rec["severity"] == "critical"
        assert rec["text"].startswith(f"Grow /var/lib/postgresql on the {MAIN_HOST} or free space before 2026-11-2")
        assert "steadily over the last 13.0 h" in rec["evidence"] and "full in 5.0 days" in rec["evidence"]
        fs = filesystems(report)[("127.0.0.1:9847", "/var/lib/postgresql")]
        assert fs["projection"]["status"] == "projected", fs["projection"]
        assert fs["projection"]["r2"] > 0.99
        assert fs["avail_change_bytes_per_day"] == pytest.approx(-12 * 1024 ** 3, rel=0.01)
        dates.append(fs["projected_full_timestamp"])
    assert dates[0] == pytest.approx(truth["steady_full"], abs=0.05 * DAY)
    assert max(dates) - min(dates) < 3600, dates  # a minute later, or a shorter period: the same date
    md = run(edge, fmt="markdown")
    assert f"**critical** (disk): Grow /var/lib/postgresql on the {MAIN_HOST}" in md


def test_short_bursts_of_temporary_files_are_no_trend(edge):
    """Free space dips by 20 GiB for a few minutes every hour or two, one dip under way at the end."""
    for period in ("12h", "10m"):
        report = run(edge, period=period)
        assert [r["text"] for r in disk_recommendations(report) if r["text"].startswith("Grow / on ")] == []
        fs = filesystems(report)[("127.0.0.1:9847", "/")]
        assert fs["last_avail_bytes"] < 21 * 1024 ** 3  # the report ends inside a burst
        assert fs["projected_full"] is None
        assert fs["projection"]["status"] == "unstable", fs["projection"]
        assert fs["projection"]["reason"].startswith("no stable trend (")
    html = run(edge, fmt="html")
    assert "no stable trend (" in html and MAIN_HOST in html


def test_transaction_control_and_dbperf_rows_left_out_but_counted(edge):
    report = run(edge)
    st = report["sections"]["statements"]
    period = 12 * 3600
    kept = {q: v for q, v in EDGE_STATEMENTS.items() if q not in EDGE_KIND}
    assert [r["queryid"] for r in st["by_calls"]] == ["2001", "2002", "2003"]
    assert [r["queryid"] for r in st["by_mean_time"]] == ["2002", "2001", "2003"]
    assert [r["queryid"] for r in st["by_total_time"]] == ["2002", "2001", "2003"]
    assert st["statements"] == len(kept)
    total_calls = sum(rate for rate, _, _ in EDGE_STATEMENTS.values()) * period
    total_seconds = sum(rate * mean for rate, mean, _ in EDGE_STATEMENTS.values()) * period
    summary = report["sections"]["summary"]
    assert summary["queries"] == pytest.approx(total_calls, rel=1e-9)  # the totals keep every row
    assert summary["statement_seconds"] == pytest.approx(total_seconds, rel=1e-9)
    assert st["by_total_time"][0]["share_of_time"] == pytest.approx(2 * 0.030 * period / total_seconds, rel=1e-9)
    left = {r["kind"]: r for r in st["left_out"]}
    assert set(left) == {"transaction_control", "dbperf", "other"}
    for kind, row in left.items():
        rates = [EDGE_STATEMENTS[q] for q, k in EDGE_KIND.items() if k == kind]
        assert row["calls"] == pytest.approx(sum(rate for rate, _, _ in rates) * period, rel=1e-9)
        assert row["total_seconds"] == pytest.approx(sum(rate * mean for rate, mean, _ in rates) * period, rel=1e-9)
        assert row["rows"] == len(rates)
    listed = sum(r["calls"] for r in st["by_calls"]) + sum(r["calls"] for r in left.values())
    assert listed == pytest.approx(total_calls, rel=1e-9)
    md = run(edge, fmt="markdown")
    html = run(edge, fmt="html")
    tc, own = left["transaction_control"], left["dbperf"]
    for text in (md, html.replace("&#x27;", "'")):
        assert MARKER not in text and "pg_stat_statements s" not in text
        assert "`BEGIN`" not in text and "<code>BEGIN</code>" not in text
        assert f"transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT ...): {num(tc['calls'])} calls" in text
        assert f"dbperf's own statements: {num(own['calls'])} calls" in text
    assert "Left out of the lists, counted in the totals and shares: " in md


def test_rollbacks_of_a_pool_are_no_failed_work(edge):
    """A healthy app behind a pool: 44% of fresh's transactions are the pool's ROLLBACK; and main: 30%
    of shop's roll back by the pool's ROLLBACK, billing's fail without one."""
    healthy = run(edge, "--target", "fresh", period="10m")  # a pool's ROLLBACK on every return, nothing failed
    assert [r for r in healthy["sections"]["recommendations"] if r["area"] == "transactions"] == []
    assert healthy["sections"]["summary"]["rollback_ratio"] == pytest.approx(40 / 90, rel=1e-6)
    assert healthy["sections"]["summary"]["failed_rollbacks"] == 0
    report = run(edge, "--target", "main")
    s = report["sections"]["summary"]
    period = 12 * 3600
    xact = edge["truth"]["xact"]
    commits = sum(c for c, _, _ in xact.values()) * period
    rollbacks = sum(r for _, r, _ in xact.values()) * period
    failed = sum(r - client for _, r, client in xact.values()) * period
    assert s["transactions"] == pytest.approx(commits + rollbacks, rel=1e-9)
    assert s["rollback_ratio"] == pytest.approx(40 / 120, rel=1e-9)
    assert s["failed_rollbacks"] == pytest.approx(failed, rel=1e-9)
    assert s["failed_rollback_ratio"] == pytest.approx(11 / 120, rel=1e-9)
    (rec,) = [r for r in report["sections"]["recommendations"] if r["area"] == "transactions"]
    assert rec["text"].startswith("Look at why transactions fail")
    assert rec["evidence"] == (f"9.2% of {commits + rollbacks:.0f} transactions rolled back without a ROLLBACK from the "
                               f"client ({rollbacks:.0f} rollbacks in all)")
    md = run(edge, "--target", "main", fmt="markdown")
    assert f"({num(rollbacks)} rollbacks, 33.33%; {num(failed)} without a client ROLLBACK, 9.17%)" in md
