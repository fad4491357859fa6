"""The WSGI middleware: a Flask app (psycopg_pool against the real PostgreSQL) and a plain WSGI app,
each behind a real threaded wsgiref server on loopback."""

from __future__ import annotations

import re

import pytest

from conftest import Samples, promtool_check_metrics
from exporter.instrument import Instrumentation, WSGIMiddleware
from test_instrument_support import WSGIThreadServer, samples

pytestmark = pytest.mark.pg

TOKEN = "wsgi-token-123456"


@pytest.fixture
def flask_server(pg):
    from examples.flask_app import create_app

    inst = Instrumentation(server_timing=True)
    app = create_app(pg.dsn("postgres"), inst, slowlog_token=TOKEN)
    server = WSGIThreadServer(app, inst)
    yield server, inst
    server.close()


def test_flask_routes_statuses_exceptions(flask_server):
    server, inst = flask_server
    for i in range(4):
        assert server.get(f"/items/{i}").status_code == 200
    assert server.get("/items/abc").status_code == 404  # no rule matches a non-int id
    assert server.get("/boom").status_code == 500
    assert server.get("/metrics").status_code == 200
    s = samples(inst)
    assert s.value("http_requests_total", handler="/items/<int:item_id>", method="GET", status="200") == 4
    assert s.value("http_requests_total", handler="<unmatched>", method="GET", status="404") == 1
    assert s.value("http_requests_total", handler="/boom", method="GET", status="500") == 1
    assert s.value("http_request_exceptions_total", handler="/boom", exception="RuntimeError") == 1
    assert {x.labels["handler"] for x in s.series("http_requests_total")} == \
        {"/items/<int:item_id>", "<unmatched>", "/boom"}
    assert s.value("http_request_duration_seconds_count", handler="/items/<int:item_id>", method="GET") == 4
    assert all(x.value == 0 for x in s.series("http_requests_in_progress"))


def test_flask_n_plus_one_server_timing_and_slow_log(flask_server):
    server, inst = flask_server
    response = server.get("/customers/7/lookups")
    assert response.json() == [f"7-{i}" for i in range(6)]
    assert re.fullmatch(r'app;dur=\d+\.\d, db;dur=\d+\.\d;desc="6 queries"', response.headers["Server-Timing"])
    assert server.get("/sleep").status_code == 200
    s = samples(inst)
    fp = inst.statement("SELECT %s::text || '-' || %s::text")[1]
    assert s.value("db_client_n_plus_one_total", handler="/customers/<int:customer_id>/lookups", fingerprint=fp) == 1
    assert not s.has("db_client_n_plus_one_total", handler="/sleep")
    assert s.value("http_slow_requests_total", handler="/sleep") == 1
    assert s.value("http_request_duration_seconds_bucket", handler="/sleep", method="GET", le="0.5") == 0
    assert server.get("/debug/slowlog").status_code == 401
    assert server.get("/debug/slowlog", params={"token": TOKEN}).status_code == 400  # never in the URL
    data = server.get("/debug/slowlog", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert [r["handler"] for r in data["requests"]] == ["/sleep"]
    assert [r["statement"] for r in data["statements"]] == ["SELECT pg_sleep(?)"]
    text = server.get("/metrics").text
    assert Samples(text).value("db_client_connection_max", pool="flask") == 4
    assert promtool_check_metrics(text) == ""


def test_plain_wsgi_app_with_resolver():
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path.startswith("/user/"):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"user ", path[6:].encode()]
        if path == "/crash":
            raise ValueError("crash")
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"no"]

    def resolve(environ):
        return "/user/{name}" if environ["PATH_INFO"].startswith("/user/") else None

    inst = Instrumentation()
    server = WSGIThreadServer(WSGIMiddleware(app, inst, resolve=resolve), inst)
    try:
        for name in ("ann", "bob", "cy"):
            assert server.get(f"/user/{name}").text == f"user {name}"
        assert server.get("/elsewhere").status_code == 404
        assert server.get("/crash").status_code == 500  # wsgiref answers 500 for the exception
    finally:
        server.close()
    s = samples(inst)
    assert s.value("http_requests_total", handler="/user/{name}", method="GET", status="200") == 3
    assert s.value("http_requests_total", handler="<unmatched>", method="GET", status="404") == 1
    assert s.value("http_requests_total", handler="<unmatched>", method="GET", status="500") == 1
    assert s.value("http_request_exceptions_total", handler="<unmatched>", exception="ValueError") == 1


def test_wsgi_middleware_needs_instrumentation():
    with pytest.raises(TypeError, match="needs an Instrumentation"):
        WSGIMiddleware(lambda e, s: [], None)
