"""From the route to the statement, end to end: a real FastAPI application instrumented with
exporter.instrument (sql_comments=True) serves a routed request whose statement waits on an
advisory lock; dbperf's exporter (a real server, the sampler at 0.2 s) shows the route template in
pg_route_active_seconds_total and the (route, queryid) pair in
pg_route_statement_active_seconds_total, never the raw path."""

from __future__ import annotations

import threading

import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from conftest import Served, Samples, make_config, promtool_check_metrics, wait_until
from exporter.instrument import Instrumentation, PrometheusMiddleware
from exporter.server import Exporter
from test_instrument_support import ASGIServer

pytestmark = pytest.mark.pg

DB = "dbperf_routes"
LOCK = 515151
RAW_ID = "98765"
ROUTE = "/orders/{id}"
SQL = "SELECT pg_advisory_xact_lock(%s)"
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


def test_a_route_tagged_by_the_application_reaches_the_route_and_statement_counters(db):
    inst = Instrumentation(CollectorRegistry(), sql_comments=True, application="shop")
    app = ASGIServer(shop(inst, db.dsn(DB)), inst)
    exporter = Served(Exporter(make_config(db, {"wait_events": {"interval": "0.2s"}})))
    holder = psycopg.connect(db.dsn(DB), autocommit=True)
    try:
        assert app.get(f"/orders/{RAW_ID}").status_code == 200  # once unblocked: pg_stat_statements has it
        (queryid,), = db.execute("SELECT queryid::text FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
                                 "WHERE d.datname = %s AND s.query LIKE 'SELECT pg_advisory_xact_lock%%'", params=(DB,))
        wait_until(lambda: exporter.metrics("/probe?target=main").has("pg_stat_statements_calls_total",
                                                                     datname=DB, queryid=queryid),
                   message="the statements collector showing the app's statement")
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
        answers = []
        request = threading.Thread(target=lambda: answers.append(app.get(f"/orders/{RAW_ID}")))
        request.start()

        def loaded(samples: list) -> bool:
            samples[:] = [exporter.metrics("/probe?target=main")]
            return (total(samples[0], ROUTE_STATEMENTS, datname=DB, route=ROUTE, queryid=queryid) >= 0.6
                    and total(samples[0], "pg_route_active_seconds_total", datname=DB, route=ROUTE,
                              wait_event_type="Lock") >= 0.6)
        seen: list = []
        wait_until(lambda: loaded(seen), message="the route and its statement counted while the app waits")
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
        request.join(30)
        assert answers and answers[0].status_code == 200
        status, text = exporter.get("/probe?target=main")
        assert status == 200 and promtool_check_metrics(text) == ""
        assert RAW_ID not in text and "/orders/" + RAW_ID not in text  # the template only, never the raw path
        samples = Samples(text)
        assert samples.value("dbperf_collector_success", collector="route_statement_wait_events", datname="") == 1
        assert {s.labels["route"] for s in samples.series(ROUTE_STATEMENTS, datname=DB)} == {ROUTE}  # tagged only
        integrator = sampler_of(exporter).integrator
        with integrator.lock:  # the request is over: the route's time and its statements' time are one sum
            route_time = sum(v for (d, r, _), v in integrator.routes.items() if (d, r) == (DB, ROUTE))
            statement_time = sum(v for (d, r, _), v in integrator.route_statements.items() if (d, r) == (DB, ROUTE))
        assert route_time >= 0.6 and statement_time == pytest.approx(route_time)
    finally:
        holder.close()
        exporter.close()
        app.close()


def total(samples: Samples, name: str, **labels) -> float:
    return sum(s.value for s in samples.series(name, **labels))


def sampler_of(server):
    from exporter.postgres.samples import sampler_of as find

    return find(server.exporter.scrapers["main"])
