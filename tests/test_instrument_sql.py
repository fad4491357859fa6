"""Statement timing against the real PostgreSQL: psycopg 3 connections (sync and async), SQLAlchemy
async engines inside a real uvicorn-served app, fingerprints, the fingerprint cap, errors, rows."""

from __future__ import annotations

import asyncio
import re

import psycopg
import pytest
from prometheus_client import generate_latest
from psycopg import sql

from conftest import promtool_check_metrics
from exporter.instrument import Instrumentation, PrometheusMiddleware
from exporter.instrument.fingerprint import OTHER, Fingerprints, normalise, operation
from test_instrument_support import ASGIServer, samples

pytestmark = pytest.mark.pg


def test_normalise_removes_literals_and_collapses_lists():
    assert normalise("SELECT * FROM t WHERE a = 'x''y' AND b = 42 AND c IN (1, 2, 3) -- note") == \
        "SELECT * FROM t WHERE a = ? AND b = ? AND c IN (?)"
    assert normalise("INSERT INTO t (a, b) VALUES (%s, %s), (%s, %s)") == "INSERT INTO t (a, b) VALUES (?)"
    assert normalise("select x::int, $1, :name, %(p)s from t1 where d > 1.5e3") == \
        "select x::int, ?, ?, ? from t1 where d > ?"
    assert normalise("SELECT $$it's$$, $tag$a$tag$ /* c */ FROM t;") == "SELECT ?, ? FROM t"
    assert operation(normalise("WITH x AS (SELECT 1) UPDATE t SET a = 1")) == "UPDATE"
    assert operation("vacuum t") == "VACUUM" and operation("frobnicate") == "OTHER"


def test_fingerprint_cap_maps_the_rest_to_other():
    table = Fingerprints(max_fingerprints=3)
    fps = [table.lookup(f"SELECT * FROM table_{i}")[1] for i in range(6)]
    assert len(set(fps[:3])) == 3 and OTHER not in fps[:3]
    assert fps[3:] == [OTHER] * 3
    assert table.lookup("SELECT * FROM table_0")[1] == fps[0]  # known ones keep theirs
    assert len(table) == 3
    with pytest.raises(ValueError, match="max_fingerprints must be at least 1"):
        Fingerprints(0)


def test_psycopg_connection_timing_errors_and_rows(pg):
    inst = Instrumentation(returned_rows=True)
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        inst.instrument_psycopg(conn, pool="direct")
        for i in range(3):
            conn.execute("SELECT %s::int", (i,)).fetchall()
        conn.execute("SELECT generate_series(1, 7)").fetchall()
        conn.execute(sql.SQL("SELECT {} FROM pg_database WHERE datname = 'x'").format(sql.Identifier("datname")))
        with conn.cursor() as cur:
            cur.execute("CREATE TEMP TABLE tt (a int)")
            cur.executemany("INSERT INTO tt VALUES (%s)", [(1,), (2,), (3,)])
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
    s = samples(inst)
    fp = inst.statement("SELECT %s::int")[1]
    base = dict(db_system="postgresql", db_namespace="postgres", pool="direct")
    assert s.value("db_client_operation_duration_seconds_count", db_operation="SELECT", fingerprint=fp, **base) == 3
    insert = inst.statement("INSERT INTO tt VALUES (%s)")[1]
    assert s.value("db_client_operation_duration_seconds_count", db_operation="INSERT", fingerprint=insert,
                   **base) == 1  # executemany is one operation
    div = inst.statement("SELECT 1 / 0")[1]
    assert s.value("db_client_operation_errors_total", fingerprint=div, error_type="DivisionByZero",
                   db_operation="SELECT", **base) == 1
    # generate_series(1, 7): 7 rows, in the le=10 bucket and not in le=5.
    rows = dict(db_system="postgresql", db_namespace="postgres", pool="direct", db_operation="SELECT")
    assert s.value("db_client_response_returned_rows_bucket", le="0.0", **rows) == 1  # the pg_database one
    assert s.value("db_client_response_returned_rows_bucket", le="5.0", **rows) == 4  # + three 1-row selects
    assert s.value("db_client_response_returned_rows_bucket", le="10.0", **rows) == 5
    assert inst.fingerprints.text(inst.statement('SELECT "datname" FROM pg_database WHERE datname = \'x\'')[1])
    assert promtool_check_metrics(generate_latest(inst.registry).decode()) == ""


def test_psycopg_async_connection(pg):
    inst = Instrumentation()

    async def run():
        async with await psycopg.AsyncConnection.connect(pg.dsn("postgres"), autocommit=True) as conn:
            inst.instrument_psycopg(conn, pool="async")
            for _ in range(4):
                await (await conn.execute("SELECT 1")).fetchall()
    asyncio.run(run())
    s = samples(inst)
    assert s.value("db_client_operation_duration_seconds_count", pool="async",
                   fingerprint=inst.statement("SELECT 1")[1]) == 4


def test_instrumenting_something_else_is_a_clear_error():
    with pytest.raises(TypeError, match="needs a psycopg connection"):
        Instrumentation().instrument_psycopg(object())


def test_sqlalchemy_async_engine_in_a_request_context(pg):
    """Async engine in a Starlette app under uvicorn: statements are timed and, through SQLAlchemy's
    greenlets, attributed to the request (N+1 flagged for the loop, not for the single query)."""
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from examples.shop_app.app import sqlalchemy_url

    inst = Instrumentation(n_plus_one_threshold=5)
    engine = create_async_engine(sqlalchemy_url(pg.dsn("postgres")), pool_size=2, max_overflow=0)
    inst.instrument_sqlalchemy(engine, pool="async-engine")

    async def loop(request):
        async with engine.connect() as conn:
            for i in range(int(request.query_params.get("n", "6"))):
                await conn.execute(text("SELECT :i + 1"), {"i": i})
        return JSONResponse({"ok": True})

    async def once(request):
        async with engine.connect() as conn:
            await conn.execute(text("SELECT count(*) FROM pg_class WHERE relname = :n"), {"n": request.path_params["n"]})
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/loop", loop), Route("/once/{n}", once)])
    server = ASGIServer(PrometheusMiddleware(app, instrumentation=inst), inst)
    try:
        assert server.get("/loop").status_code == 200
        assert server.get("/loop?n=4").status_code == 200  # below the threshold: clean
        assert server.get("/loop?n=5").status_code == 200  # exactly the threshold: flagged
        assert server.get("/once/pg_class").status_code == 200
        assert server.get("/once/pg_proc").status_code == 200
    finally:
        server.close()
        asyncio.run(engine.dispose())
    s = samples(inst)
    loop_fp = inst.statement("SELECT %(i)s + 1")[1]
    assert s.value("db_client_operation_duration_seconds_count", pool="async-engine", fingerprint=loop_fp,
                   db_namespace="postgres", db_operation="SELECT") == 6 + 4 + 5
    assert s.value("db_client_n_plus_one_total", handler="/loop", fingerprint=loop_fp) == 2
    assert not s.has("db_client_n_plus_one_total", handler="/once/{n}")
    assert s.value("db_client_queries_per_request_sum", handler="/loop") == 15
    assert s.value("db_client_queries_per_request_bucket", handler="/loop", le="3.0") == 0
    assert s.value("db_client_queries_per_request_bucket", handler="/loop", le="5.0") == 2
    assert s.value("db_client_queries_per_request_sum", handler="/once/{n}") == 2
    assert s.value("http_requests_total", handler="/once/{n}", method="GET", status="200") == 2


@pytest.mark.parametrize("hooks", ["driver", "events", "auto"])
def test_sqlalchemy_hooks_time_statements_and_errors(pg, hooks):
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError

    from examples.shop_app.app import sqlalchemy_url

    inst = Instrumentation()
    engine = inst.instrument_sqlalchemy(create_engine(sqlalchemy_url(pg.dsn("postgres"))), pool="drv", hooks=hooks)
    try:
        with engine.connect() as conn:
            for i in range(3):
                conn.execute(text("SELECT :i"), {"i": i}).all()
            with pytest.raises(ProgrammingError):
                conn.execute(text("SELECT * FROM no_such_relation"))
    finally:
        engine.dispose()
    s = samples(inst)
    assert s.value("db_client_operation_duration_seconds_count", pool="drv", db_namespace="postgres",
                   fingerprint=inst.statement("SELECT %(i)s")[1]) == 3
    assert s.value("db_client_operation_errors_total", pool="drv", error_type="UndefinedTable") == 1
    with pytest.raises(ValueError, match="hooks must be 'events' or 'driver'"):
        inst.instrument_sqlalchemy(create_engine(sqlalchemy_url(pg.dsn("postgres"))), pool="z", hooks="magic")


def test_secrets_never_reach_the_slow_log_metrics_or_log(pg, caplog):
    """Issue 13: a role's password and an escape string's content, run on a real connection, are
    in no slow-log entry, fingerprint text, N+1 log line or metric."""
    import json

    pg.execute("DROP ROLE IF EXISTS instr_secret_role")
    pg.execute("CREATE ROLE instr_secret_role")
    inst = Instrumentation(slow_statement_seconds=1e-9, n_plus_one_threshold=2)
    secrets = ("LeakMe123!", "s my password", "hunter2")
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        inst.instrument_psycopg(conn, pool="direct")
        conn.execute("ALTER ROLE instr_secret_role PASSWORD 'LeakMe123!'")
        state, token = inst.start_request("GET", "/secrets")
        for _ in range(2):
            assert conn.execute(r"SELECT E'it\'s my password hunter2'").fetchone() == ("it's my password hunter2",)
        with caplog.at_level("WARNING", logger="exporter.instrument"):
            inst.finish_request(state, 200)
        inst.end_context(token)
    pg.execute("DROP ROLE instr_secret_role")

    def call(environ):
        out = {}
        body = inst.slowlog_wsgi_app("a-token-of-some-length")(
            environ, lambda status, headers: out.setdefault("status", status))
        return out["status"], b"".join(body).decode()

    status, body = call({"HTTP_AUTHORIZATION": "Bearer a-token-of-some-length", "QUERY_STRING": ""})
    assert status == "200 OK"
    statements = [entry["statement"] for entry in json.loads(body)["statements"]]
    assert statements == ["ALTER ROLE <redacted: statement carries a secret>", "SELECT ?", "SELECT ?"]
    shown = body + caplog.text + generate_latest(inst.registry).decode()
    assert "N+1 queries" in caplog.text
    for secret in secrets:
        assert secret not in shown


@pytest.mark.parametrize("scs", ["on", "off"])
def test_the_normaliser_reads_literals_as_the_server_does(pg, scs):
    """Each literal form, run on the server, gives back the secret: it is one literal there, and
    the normaliser shows only ``?`` for it (standard_conforming_strings on and off)."""
    secrets = ["it's my password hunter2", "back\\slash' quote", "$dollar$ and $$", "--not a comment", "/* x */"]
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        conn.execute(f"SET standard_conforming_strings = {scs}")
        conn.execute("SET escape_string_warning = off")
        for secret in secrets:
            forms = ["E'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'",
                     "E'" + secret.replace("\\", "\\\\").replace("'", "''") + "'",
                     "$q$" + secret + "$q$"]
            if scs == "on":
                forms.append("'" + secret.replace("'", "''") + "'")
            else:  # backslashes escape in standard strings too
                forms.append("'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'")
            if "$$" not in secret:
                forms.append("$$" + secret + "$$")
            for literal in forms:
                sql = f"SELECT {literal} AS v, 1 -- {literal}\n"
                assert conn.execute(sql).fetchone() == (secret, 1), sql
                shown = normalise(sql)
                if literal.startswith("'") and "\\" in literal:  # read both ways: more may go, never the secret
                    assert shown.startswith("SELECT ?"), sql
                    assert not [w for w in re.findall(r"[a-z0-9]{3,}", secret) if w in shown], (sql, shown)
                else:
                    assert shown == "SELECT ? AS v, ?", sql
