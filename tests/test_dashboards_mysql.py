"""The MySQL dashboard (and the Overview's MySQL panels) live: every panel's query against a real
Prometheus scraping a real dbperf whose kind: mysql target is a MariaDB replica of another throwaway
MariaDB, with a workload on both (reads on the replica, writes replicated from the source), and
alerts/rules/mysql.yml loaded for the recording rules the panels read. The demo's live test covers
the other dashboards."""

from __future__ import annotations

import sys
import threading

import pytest
import requests

from conftest import ROOT, Prometheus, Served, wait_until
from exporter.config import parse
from exporter.server import Exporter
from mysqlpair import beat, heartbeat_table, replicated_pair
from test_alerts_support import RULES

sys.path.insert(0, str(ROOT / "dashboards"))
from queries import substitute, targets  # noqa: E402

pytestmark = pytest.mark.prom

VALUES = {"topn": "10"}
MYSQL_UIDS = {"dbperf-mysql"}


def mysql_targets():
    """(uid, title, refId, target) of the MySQL dashboard's queries and the Overview's MySQL panels."""
    for _, uid, title, ref, t in targets():
        if uid in MYSQL_UIDS or (uid == "dbperf-overview" and "MySQL" in title):
            yield uid, title, ref, t


def test_the_overview_and_the_mysql_dashboard_have_mysql_panels():
    found = {(uid, title) for uid, title, _, _ in mysql_targets()}
    assert len({t for u, t in found if u == "dbperf-overview"}) == 3
    assert len({t for u, t in found if u == "dbperf-mysql"}) > 25


@pytest.fixture(scope="module")
def stack():
    with replicated_pair() as (source, replica):
        stop = threading.Event()
        source.execute(heartbeat_table("shop"))

        def workload():
            writer, reader = source.connect(database="shop"), replica.connect(database="shop")
            try:
                while not stop.is_set():
                    with writer.cursor() as cur:
                        cur.execute("INSERT INTO orders (note) VALUES ('x')")
                    with reader.cursor() as cur:
                        cur.execute("SELECT COUNT(*) FROM orders WHERE note = 'x'")
                        cur.execute("SELECT id FROM orders ORDER BY id DESC LIMIT 3")
                    beat(source, "shop")  # pt-heartbeat on the source, more often than its 1 s
                    stop.wait(0.05)
            finally:
                writer.close()
                reader.close()

        worker = threading.Thread(target=workload, daemon=True)
        worker.start()
        config = parse({"listen": "127.0.0.1:0", "targets": [
            {"name": "replica", "kind": "mysql", "dsn": replica.dsn(),
             "replication": {"heartbeat_table": "shop.heartbeat", "heartbeat_utc": True}},
            {"name": "source", "kind": "mysql", "dsn": source.dsn()}]}, source="test-config")
        served = Served(Exporter(config))
        prom = Prometheus([{"job_name": "dbperf", "static_configs": [{"targets": [served.url.removeprefix("http://")]}]}],
                          [str(RULES / "mysql.yml")])
        try:
            yield prom
        finally:
            stop.set()
            worker.join(10)
            prom.stop()
            served.close()


def _empty_and_errors(prom: Prometheus) -> tuple[list, list]:
    empty, errors = [], []
    for uid, title, ref, t in mysql_targets():
        expr = substitute(t["expr"], VALUES)
        body = requests.get(prom.url + "/api/v1/query", params={"query": expr}, timeout=10).json()  # now
        if body["status"] != "success":
            errors.append((uid, title, ref, body.get("error")))
        elif not body["data"]["result"]:
            empty.append((uid, title, ref))
    return empty, errors


def test_every_mysql_panel_returns_data(stack):
    prom = stack
    wait_until(lambda: prom.query('count_over_time(mysql_up{target="replica"}[1m]) >= 20'), timeout=60,
               message="20 s of scrapes")
    last = {}

    def all_answer():
        last["empty"], last["errors"] = _empty_and_errors(prom)
        return not last["empty"] and not last["errors"]

    try:
        wait_until(all_answer, timeout=60, interval=2, message="every MySQL panel answering")
    except AssertionError:
        pass
    assert not last["errors"], last["errors"]
    assert not last["empty"], f"panels without data: {last['empty']}"
    # the recording rules evaluate on the real data
    groups = requests.get(prom.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    broken = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] == "err"]
    assert groups and not broken, broken
