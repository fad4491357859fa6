"""From the route to the statement, end to end: a real FastAPI application instrumented with
exporter.instrument (sql_comments=True) serves a routed request whose statement waits on an
advisory lock; dbperf's exporter (a real server, the sampler at 0.2 s) shows the route template in
pg_route_active_seconds_total and the (route, queryid) pair in
pg_route_statement_active_seconds_total, never the raw path; a real Prometheus answers the Queries
dashboard's "Statements of the selected routes by DB load" with that statement and its text."""

from __future__ import annotations

import contextlib
import re
import sys
import threading

import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from conftest import ROOT, Prometheus, Served, Samples, make_config, promtool_check_metrics, wait_until
from exporter.instrument import Instrumentation, PrometheusMiddleware
from exporter.server import Exporter
from test_instrument_support import ASGIServer

pytestmark = pytest.mark.pg

DB = "dbperf_routes"
LOCK = 515151
RAW_ID = "98765"
ROUTE = "/orders/{id}"
SQL = "SELECT pg_advisory_xact_lock(%s)"
ROUTES = "pg_route_active_seconds_total"
ROUTE_STATEMENTS = "pg_route_statement_active_seconds_total"


@pytest.fixture(scope="module")
def db(pg):
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(DB,)):
        pg.execute(f"CREATE DATABASE {DB}")  # a database of its own: the statement is in its top N
    return pg


def shop(inst: Instrumentation, dsn: str) -> FastAPI:
    app = FastAPI()
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)

    @app.get("/orders/{id}")
    def order(id: str):
        with psycopg.connect(dsn, autocommit=True, application_name="shop") as conn:
            inst.instrument_psycopg(conn, pool="shop")
            conn.execute(SQL, (LOCK,))
            return {"id": id}
    return app


def total(samples: Samples, name: str, **labels) -> float:
    return sum(s.value for s in samples.series(name, **labels))


def probe(exporter: Served) -> Samples:
    return exporter.metrics("/probe?target=main")


@contextlib.contextmanager
def waiting_request(db, exporter: Served):
    """The app's statement for ``/orders/98765`` waiting on an advisory lock the test holds, once the
    statements collector shows it: yields its queryid; the lock is released and the request's 200
    checked when the block ends."""
    inst = Instrumentation(CollectorRegistry(), sql_comments=True, application="shop")
    app = ASGIServer(shop(inst, db.dsn(DB)), inst)
    holder = psycopg.connect(db.dsn(DB), autocommit=True)
    try:
        assert app.get(f"/orders/{RAW_ID}").status_code == 200  # unblocked once: pg_stat_statements has it
        (queryid,), = db.execute("SELECT queryid::text FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                                 "WHERE d.datname = %s AND s.query LIKE 'SELECT pg_advisory_xact_lock%%'", params=(DB,))
        wait_until(lambda: probe(exporter).has("pg_stat_statements_calls_total", datname=DB, queryid=queryid),
                   message="the statements collector showing the app's statement")
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
        answers = []
        request = threading.Thread(target=lambda: answers.append(app.get(f"/orders/{RAW_ID}")))
        request.start()
        yield queryid
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
        request.join(30)
        assert answers and answers[0].status_code == 200
    finally:
        holder.close()
        app.close()


def test_a_route_tagged_by_the_application_reaches_the_route_and_statement_counters(db):
    exporter = Served(Exporter(make_config(db, {"wait_events": {"interval": "0.2s"}})))
    try:
        with waiting_request(db, exporter) as queryid:
            wait_until(lambda: total(probe(exporter), ROUTE_STATEMENTS, datname=DB, route=ROUTE, queryid=queryid) >= 0.6
                       and total(probe(exporter), ROUTES, datname=DB, route=ROUTE, wait_event_type="Lock") >= 0.6,
                       message="the route and its statement counted while the app waits")
        status, text = exporter.get("/probe?target=main")
        assert status == 200 and promtool_check_metrics(text) == ""
        # the template only, never the raw path: the id as a number of its own (a queryid or a byte count
        # may hold its digits by chance: 526564181998765)
        assert not re.search(rf"(?<![0-9]){RAW_ID}(?![0-9])", text)
        samples = Samples(text)
        assert samples.value("dbperf_collector_success", collector="route_statement_wait_events", datname="") == 1
        assert {s.labels["route"] for s in samples.series(ROUTE_STATEMENTS, datname=DB)} == {ROUTE}  # tagged only
        integrator = sampler_of(exporter).integrator
        with integrator.lock:  # the request is over: the route's time and its statements' time are one sum
            route_time = sum(v for (d, r, _), v in integrator.routes.items() if (d, r) == (DB, ROUTE))
            statement_time = sum(v for (d, r, _), v in integrator.route_statements.items() if (d, r) == (DB, ROUTE))
        assert route_time >= 0.6 and statement_time == pytest.approx(route_time)
    finally:
        exporter.close()


@pytest.mark.prom
def test_the_route_statements_table_answers_in_a_real_prometheus(db):
    sys.path.insert(0, str(ROOT / "dashboards"))
    from queries import load_all, panels, substitute

    (panel,) = [p for p in panels(load_all()["queries.json"])
                if p["title"] == "Statements of the selected routes by DB load"]
    (expr,) = [substitute(t["expr"], {"topn": "10"}) for t in panel["targets"]]
    exporter = Served(Exporter(make_config(db, {"wait_events": {"interval": "0.2s"},
                                                "statements": {"query_text": True}})))
    prom = Prometheus([{"job_name": "dbperf", "static_configs": [{"targets": [exporter.url.removeprefix("http://")]}]}])
    try:
        with waiting_request(db, exporter) as queryid:
            def row():
                found = [r for r in prom.query(expr) if r["metric"].get("datname") == DB
                         and r["metric"].get("queryid") == queryid and float(r["value"][1]) > 0]
                return found and found[0]["metric"]
            labels = wait_until(row, timeout=60, message="the route's statement in the table")
        assert labels["route"] == ROUTE and "pg_advisory_xact_lock" in labels["query"]
    finally:
        prom.stop()
        exporter.close()


def sampler_of(server):
    from exporter.postgres.samples import sampler_of as find

    return find(server.exporter.scrapers["main"])
