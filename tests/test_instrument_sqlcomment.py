"""SQL comments naming the route (exporter/instrument/sqlcomment.py): the sqlcommenter format and
where the comment goes (fast), and on a real PostgreSQL: a tagged statement reaches the server
with its comment (read from pg_stat_activity while it runs), none when the option is off or
outside a request, never a raw path, one queryid for tagged and untagged executions, and psycopg's
prepared statements, server-side cursors and COPY still working."""

from __future__ import annotations

import asyncio
import threading
from urllib.parse import unquote

import psycopg
import pytest
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from sqlalchemy import create_engine, text

from conftest import wait_until
from examples.shop_app.app import sqlalchemy_url
from exporter.instrument import Instrumentation, PrometheusMiddleware, instrument_flask
from exporter.instrument.sqlcomment import SqlComments, format_comment, split
from test_instrument_support import ASGIServer, WSGIThreadServer, samples

pytestmark = pytest.mark.fast

ROUTE = "/orders/{id}"
TAG = "/*framework='fastapi',route='%2Forders%2F%7Bid%7D'*/"
OWN_ACTIVITY = "SELECT current_query()"  # the text the server received (pg_stat_activity's, not its snapshot)
CURSORS = "SELECT statement FROM pg_cursors"


def tags_of(sql: str) -> dict:
    """The sqlcommenter tags of the last /*...*/ in ``sql``, decoded."""
    body = sql[sql.rindex("/*") + 2:sql.rindex("*/")]
    out = {}
    for item in body.split(","):
        key, _, value = item.partition("=")
        assert value.startswith("'") and value.endswith("'"), item
        out[unquote(key)] = unquote(value[1:-1])
    return out


# -- the format (fast) ---------------------------------------------------------------------------

def test_comment_is_sorted_url_encoded_and_single_quoted():
    assert format_comment({"route": ROUTE, "framework": "fastapi"}) == TAG
    assert format_comment({"route": "/a", "framework": None, "application": ""}) == "/*route='%2Fa'*/"
    assert format_comment({}) == ""


@pytest.mark.parametrize("route", ["/it's/{x}", "/a*/DROP TABLE t;/*", "/back\\slash", "/100%/{p}",
                                   "/new\nline", "/ünï/{ç}", "/q'/*'*/'", "/a,b=c'd'", "/\x00"])
def test_hostile_route_names_cannot_leave_the_comment(route):
    comment = format_comment({"route": route, "application": "shop's"})
    body = comment[2:-2]
    for bad in ("*/", "/*", "\\", "\n", "\x00", ";", " "):
        assert bad not in body
    assert body.count("'") == 4  # the quotes around the two values and nothing else
    assert tags_of(comment) == {"application": "shop's", "route": route}


@pytest.mark.parametrize("sql, tagged", [
    ("SELECT 1", "SELECT 1 <c>"),
    ("SELECT 1;", "SELECT 1 <c>;"),
    ("SELECT 1 ;  \n", "SELECT 1 <c> ;  \n"),
    ("SELECT 1 -- note", "SELECT 1 -- note\n<c>"),
    ("SELECT 1 -- note  \n ", "SELECT 1 -- note\n<c>  \n "),
    ("SELECT 1 -- note\n;", "SELECT 1 -- note\n<c>\n;"),
    ("SELECT 1; -- done", "SELECT 1; -- done\n<c>"),
    ("SELECT 'a;b', $$;--$$", "SELECT 'a;b', $$;--$$ <c>"),
    ("SELECT %s::int", "SELECT %s::int <c>"),
    ("BEGIN; SELECT 1; COMMIT;", "BEGIN; SELECT 1; COMMIT <c>;"),
])
def test_where_the_comment_goes(sql, tagged):
    head, tail, size = split(sql)
    assert head + "<c>" + tail == tagged and size == len(sql)


def test_a_long_statement_takes_the_comment_at_its_start():
    comments = SqlComments()
    comment = comments.comment(ROUTE, "fastapi")[0]
    fits = "SELECT '" + "é" * ((1023 - len(comment) - 11) // 2) + "';"  # 2 bytes a character
    assert len(fits.encode()) + len(comment) + 1 <= 1023
    assert comments.tag(fits, ROUTE, "fastapi", False) == fits[:-1] + " " + comment + ";"
    longer = fits.replace("'", "'éé", 1)
    assert comments.tag(longer, ROUTE, "fastapi", False) == comment + " " + longer


@pytest.mark.parametrize("sql", [
    "", "   ", ";", "-- only a comment", "/* only a comment */",
    "COPY t FROM STDIN", "copy (SELECT 1) TO STDOUT;", "-- load\n  COPY(SELECT 1) TO STDOUT",
    "SELECT /*+ IndexScan(t) */ * FROM t",      # a hint, or another commenter's tag
    "SELECT 1 /*traceparent='00-x'*/",
    "SELECT 'a\\'; --'",                         # where it ends depends on standard_conforming_strings
])
def test_statements_left_alone(sql):
    assert split(sql) is None
    comments = SqlComments()
    assert comments.tag(sql, ROUTE, "fastapi", False) is sql


def test_percent_doubled_for_formatting_drivers_and_cached():
    comments = SqlComments(application="shop")
    plain = comments.tag("SELECT 1", ROUTE, "fastapi", False)
    assert plain == "SELECT 1 /*application='shop',framework='fastapi',route='%2Forders%2F%7Bid%7D'*/"
    assert comments.tag("SELECT 1", ROUTE, "fastapi", True) == plain.replace("%", "%%")
    assert comments.tag("SELECT 1", ROUTE, "fastapi", False) == plain


def test_options_are_checked():
    with pytest.raises(TypeError, match="sql_comments must be True or False"):
        Instrumentation(sql_comments="yes")
    with pytest.raises(ValueError, match="application= names the SQL comments: it needs sql_comments=True"):
        Instrumentation(application="shop")
    for bad in ("", "  ", "x" * 201, "a\nb"):
        with pytest.raises(ValueError, match="application must"):
            Instrumentation(sql_comments=True, application=bad)


def test_no_tag_outside_a_request_or_when_off():
    on = Instrumentation(CollectorRegistry(), sql_comments=True)
    off = Instrumentation(CollectorRegistry())
    assert on.tagged("SELECT 1") == "SELECT 1"
    for inst in (on, off):
        state, token = inst.start_request("GET", ROUTE, framework="fastapi")
        try:
            sent = inst.tagged("SELECT 1")
        finally:
            inst.end_context(token)
        assert sent == ("SELECT 1 " + TAG if inst is on else "SELECT 1")


# -- on a real server ----------------------------------------------------------------------------

def orders_app(inst, dsn, sql, params):
    app = FastAPI()
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)

    @app.get("/orders/{id}")
    def order(id: str):
        with psycopg.connect(dsn, autocommit=True) as conn:
            inst.instrument_psycopg(conn, pool="shop")
            return {"rows": conn.execute(sql, params).fetchall()}

    @app.get("/files/{path:path}")
    def files(path: str):
        with psycopg.connect(dsn, autocommit=True) as conn:
            inst.instrument_psycopg(conn, pool="shop")
            return {"query": conn.execute(OWN_ACTIVITY).fetchone()[0]}
    return app


def seen_while_running(pg, sql_comments: bool, path: str, padding: str = "x") -> str:
    """The text pg_stat_activity shows, from another session, for the statement the app runs for
    ``path`` while it waits on an advisory lock the test holds."""
    inst = Instrumentation(CollectorRegistry(), sql_comments=sql_comments)
    sql = f"SELECT pg_advisory_xact_lock(%s), '{padding}'"
    server = ASGIServer(orders_app(inst, pg.dsn("postgres"), sql, (424242,)), inst)
    holder = psycopg.connect(pg.dsn("postgres"), autocommit=True)
    answers = []
    try:
        holder.execute("SELECT pg_advisory_lock(424242)")
        request = threading.Thread(target=lambda: answers.append(server.get(path)))
        request.start()
        seen = []

        def waiting():
            seen[:] = [r[0] for r in holder.execute(
                "SELECT query FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE '%SELECT pg_advisory_xact_lock%'").fetchall()]
            return seen
        wait_until(waiting, message="the app's statement waiting on the advisory lock")
        holder.execute("SELECT pg_advisory_unlock(424242)")
        request.join(30)
        assert answers and answers[0].status_code == 200
        return seen[0]
    finally:
        holder.close()
        server.close()


@pytest.mark.pg
def test_tagged_statement_reaches_the_server_and_raw_paths_do_not(pg):
    query = seen_while_running(pg, True, "/orders/98765")
    assert query == "SELECT pg_advisory_xact_lock($1), 'x' /*framework='fastapi',route='%2Forders%2F%7Bid%7D'*/"
    assert "98765" not in query


@pytest.mark.pg
def test_a_long_statement_keeps_its_tag_in_pg_stat_activity(pg):
    kept = int(pg.execute("SELECT setting FROM pg_settings WHERE name = 'track_activity_query_size'")[0][0]) - 1
    query = seen_while_running(pg, True, "/orders/98765", "x" * 1100)
    sent = f"{TAG} SELECT pg_advisory_xact_lock($1), '{'x' * 1100}'"
    assert query == sent[:kept]  # cut at 1023 bytes by default, the tag at its start still there
    assert "98765" not in query


@pytest.mark.pg
def test_untagged_when_off(pg):
    assert seen_while_running(pg, False, "/orders/98765") == "SELECT pg_advisory_xact_lock($1), 'x'"


@pytest.mark.pg
def test_hostile_raw_path_is_never_sent(pg):
    inst = Instrumentation(CollectorRegistry(), sql_comments=True, application="shop")
    server = ASGIServer(orders_app(inst, pg.dsn("postgres"), "SELECT 1", None), inst)
    try:
        response = server.get("/files/x'*/;DROP TABLE t;--/secret-user-token-123")
    finally:
        server.close()
    assert response.status_code == 200
    query = response.json()["query"]
    assert "secret-user-token" not in query and "DROP" not in query
    assert tags_of(query) == {"application": "shop", "framework": "fastapi", "route": "/files/{path:path}"}


@pytest.mark.pg
def test_async_psycopg_and_compositions_are_tagged(pg):
    from psycopg import sql

    inst = Instrumentation(CollectorRegistry(), sql_comments=True)

    async def run():
        async with await psycopg.AsyncConnection.connect(pg.dsn("postgres"), autocommit=True) as conn:
            inst.instrument_psycopg(conn, pool="async")
            state, token = inst.start_request("GET", ROUTE, framework="fastapi")
            try:
                plain = await (await conn.execute(OWN_ACTIVITY)).fetchone()
                query = sql.SQL("SELECT {}, current_query()").format(sql.Literal(7))
                composed = await (await conn.execute(query)).fetchone()
                raw = await (await conn.execute(b"SELECT current_query()")).fetchone()
            finally:
                inst.end_context(token)
            return plain[0], composed[1], raw[0]
    plain, composed, raw = asyncio.run(run())
    assert plain == OWN_ACTIVITY + " " + TAG
    assert composed == "SELECT 7, current_query() " + TAG
    assert raw == "SELECT current_query()"  # bytes are sent as they are


@pytest.mark.pg
def test_flask_routes_are_tagged_with_their_rule(pg):
    import flask

    inst = Instrumentation(CollectorRegistry(), sql_comments=True)
    app = flask.Flask("tagged")
    instrument_flask(app, inst)

    @app.get("/items/<int:item_id>")
    def item(item_id):
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            inst.instrument_psycopg(conn, pool="flask")
            return {"query": conn.execute("SELECT %s::int, current_query()", (item_id,)).fetchone()[1]}

    server = WSGIThreadServer(app, inst)
    try:
        query = server.get("/items/31337").json()["query"]
    finally:
        server.close()
    assert query == "SELECT $1::int, current_query() /*framework='flask',route='%2Fitems%2F%3Cint%3Aitem_id%3E'*/"


@pytest.mark.pg
@pytest.mark.parametrize("hooks", ["driver", "events"])
def test_sqlalchemy_hooks_tag_and_keep_the_metrics_untagged(pg, hooks):
    inst = Instrumentation(CollectorRegistry(), sql_comments=True)
    engine = create_engine(sqlalchemy_url(pg.dsn("postgres")), pool_size=1)
    inst.instrument_sqlalchemy(engine, pool="sa", hooks=hooks)
    route = "/report/{kind}/100%"
    try:
        with engine.connect() as conn:
            state, token = inst.start_request("GET", route, framework="flask")
            try:
                with_params = conn.execute(text("SELECT :p || '%', current_query()"), {"p": "x"}).one()
                without = conn.execute(text(OWN_ACTIVITY)).scalar()
                driver_sql = conn.exec_driver_sql(OWN_ACTIVITY).scalar()
                streaming = conn.execute(text("SELECT 1"), execution_options={"stream_results": True})
                streamed = conn.exec_driver_sql(CURSORS).scalar()  # the server-side cursor's DECLARE
                streaming.close()
                with pytest.raises(Exception, match="division by zero"):
                    conn.execute(text("SELECT 1 / 0"))
                conn.rollback()
            finally:
                inst.end_context(token)
            outside = conn.execute(text(OWN_ACTIVITY)).scalar()
    finally:
        engine.dispose()
    assert with_params[0] == "x%"
    for query in (with_params[1], without, driver_sql):
        assert tags_of(query) == {"framework": "flask", "route": route}, query
    assert "/*" not in streamed and "/*" not in outside  # server-side cursor; no request
    texts = {key[0] for key in inst._statements}
    assert OWN_ACTIVITY in texts and not any("/*" in t for t in texts)
    failed = samples(inst).series("db_client_operation_errors_total", error_type="DivisionByZero")
    assert [x.labels["fingerprint"] for x in failed] == [inst.statement("SELECT 1 / 0")[1]]


@pytest.mark.pg
def test_queryid_prepared_statements_server_cursors_and_copy(pg):
    inst = Instrumentation(CollectorRegistry(), sql_comments=True)
    probe = "SELECT count(*) AS dbperf_sqlcomment_probe FROM pg_class WHERE relpages > %s"
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        inst.instrument_psycopg(conn, pool="p")
        conn.execute("SELECT pg_stat_statements_reset()")
        conn.execute(probe, (-1,))  # untagged: no request
        for route in ("/a", "/b"):
            state, token = inst.start_request("GET", route, framework="fastapi")
            try:
                for i in range(7):  # beyond psycopg's prepare_threshold (5): prepared per text
                    conn.execute(probe, (i,)).fetchone()
                prepared = [r[0] for r in conn.execute("SELECT statement FROM pg_prepared_statements")]
                with conn.transaction(), conn.cursor(name="server_side") as cur:
                    cur.execute("SELECT 1")
                    server_side = conn.execute(CURSORS).fetchone()[0]
                with conn.cursor() as cur:
                    with cur.copy("COPY (SELECT 1) TO STDOUT") as copy:
                        copied = b"".join(bytes(b) for b in copy)
            finally:
                inst.end_context(token)
            assert any(s.endswith(f"/*framework='fastapi',route='%2F{route[1:]}'*/") for s in prepared), prepared
            assert "/*" not in server_side and copied == b"1\n"
        rows = conn.execute("SELECT queryid, calls, query FROM pg_stat_statements "
                            "WHERE query LIKE '%dbperf_sqlcomment_probe%'").fetchall()
    # one statement in pg_stat_statements: the comment is not part of the queryid
    assert len(rows) == 1 and rows[0][1] == 15, rows
    assert rows[0][2] == probe.replace("%s", "$1")  # the text of its first execution (untagged here)
