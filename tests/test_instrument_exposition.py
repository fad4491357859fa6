"""The application library's /metrics and slow log on real servers (uvicorn for ASGI, threaded
wsgiref for WSGI): gzip when asked (Content-Encoding, Content-Length, Vary; promtool on the
decompressed body), optional bearer/basic auth, the slow-log token in headers only, and a real
Prometheus scraping a protected /metrics."""

from __future__ import annotations

import base64
import gzip
import http.client
import logging

import secrets

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from conftest import Prometheus, Samples, promtool_check_metrics, wait_until
from exporter.instrument import Instrumentation, PrometheusMiddleware, WSGIMiddleware
from test_instrument_support import ASGIServer, WSGIThreadServer

pytestmark = pytest.mark.prom

BEARER = "metrics-bearer-token-0123456789"
SLOW_TOKEN = "slowlog-token-for-exposition-tests"
USERS = {"prometheus": "correct horse battery", "ops": "another-pass"}


def _asgi_server(inst):
    async def item(request):
        return PlainTextResponse(request.path_params["item_id"])

    app = Starlette(routes=[Route("/items/{item_id}", item)])
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)
    app.add_route("/metrics", inst.metrics_asgi_app())
    app.add_route("/metrics-bearer", inst.metrics_asgi_app(bearer_token=BEARER))
    app.add_route("/metrics-basic", inst.metrics_asgi_app(basic_auth=USERS))
    app.add_route("/metrics-plain", inst.metrics_asgi_app(gzip_level=0))
    app.add_route("/debug/slowlog", inst.slowlog_asgi_app(SLOW_TOKEN))
    return ASGIServer(app, inst)


def _wsgi_server(inst):
    def items(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].rsplit("/", 1)[-1].encode()]

    mounts = {"/metrics": inst.metrics_wsgi_app(), "/metrics-bearer": inst.metrics_wsgi_app(bearer_token=BEARER),
              "/metrics-basic": inst.metrics_wsgi_app(basic_auth=USERS),
              "/metrics-plain": inst.metrics_wsgi_app(gzip_level=0),
              "/debug/slowlog": inst.slowlog_wsgi_app(SLOW_TOKEN)}
    measured = WSGIMiddleware(items, inst, resolve=lambda environ: "/items/{item_id}")

    def app(environ, start_response):
        target = mounts.get(environ["PATH_INFO"], measured)
        return target(environ, start_response)
    return WSGIThreadServer(app, inst)


@pytest.fixture(params=["asgi", "wsgi"])
def server(request):
    inst = Instrumentation()
    srv = (_asgi_server if request.param == "asgi" else _wsgi_server)(inst)
    for i in range(7):
        assert srv.get(f"/items/{i}").status_code == 200
    yield srv
    srv.close()


def raw(server, path: str, method: str = "GET", **headers):
    """One request with the standard library's client, which never decompresses: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", int(server.url.rsplit(":", 1)[1]), timeout=30)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def test_gzip_when_asked_plain_otherwise(server):
    status, headers, plain = raw(server, "/metrics")
    assert status == 200 and "content-encoding" not in headers
    assert int(headers["content-length"]) == len(plain) and "transfer-encoding" not in headers
    assert "Accept-Encoding" in headers["vary"]
    assert Samples(plain.decode()).value("http_requests_total", handler="/items/{item_id}", method="GET",
                                         status="200") == 7

    status, headers, packed = raw(server, "/metrics", **{"Accept-Encoding": "gzip"})
    assert status == 200 and headers["content-encoding"] == "gzip"
    assert int(headers["content-length"]) == len(packed) and "transfer-encoding" not in headers
    assert "Accept-Encoding" in headers["vary"]
    text = gzip.decompress(packed).decode()
    assert len(packed) * 3 < len(text)
    assert promtool_check_metrics(text) == ""
    assert Samples(text).value("http_requests_total", handler="/items/{item_id}", method="GET", status="200") == 7

    # The Accept-Encoding of Prometheus itself, and a refusal of gzip.
    assert raw(server, "/metrics", **{"Accept-Encoding": "gzip, deflate, br"})[1]["content-encoding"] == "gzip"
    for refused in ("gzip;q=0", "identity", "br"):
        status, headers, body = raw(server, "/metrics", **{"Accept-Encoding": refused})
        assert "content-encoding" not in headers and body.startswith(b"# HELP"), refused
    status, headers, body = raw(server, "/metrics-plain", **{"Accept-Encoding": "gzip"})  # gzip_level=0
    assert "content-encoding" not in headers and int(headers["content-length"]) == len(body)

    # HEAD: the headers of a GET, no body.
    status, headers, body = raw(server, "/metrics", "HEAD", **{"Accept-Encoding": "gzip"})
    assert status == 200 and body == b"" and headers["content-encoding"] == "gzip" and int(headers["content-length"]) > 0
    assert raw(server, "/metrics", "POST")[0] == 405

    # A real client that decompresses by itself reads the same exposition.
    with httpx.Client() as client:
        response = client.get(server.url + "/metrics", headers={"Accept-Encoding": "gzip"})
    assert response.headers["content-encoding"] == "gzip" and promtool_check_metrics(response.text) == ""
    # OpenMetrics is still negotiated, and name[] filters.
    status, headers, body = raw(server, "/metrics?name[]=http_requests_total",
                                Accept="application/openmetrics-text; version=1.0.0")
    assert headers["content-type"].startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")
    assert {f.split()[2] for f in body.decode().splitlines() if f.startswith("# TYPE")} == {"http_requests"}


def test_metrics_auth_bearer_and_basic(server):
    def auth(user, password):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    for path in ("/metrics-bearer", "/metrics-basic"):
        status, headers, body = raw(server, path)
        assert status == 401 and "realm=\"metrics\"" in headers["www-authenticate"] and b"http_requests" not in body
    for path, header in (("/metrics-bearer", f"Bearer {BEARER}x"), ("/metrics-bearer", auth("prometheus", BEARER)),
                         ("/metrics-bearer", "Bearer " + " " * 24), ("/metrics-basic", auth("prometheus", "wrong")),
                         ("/metrics-basic", auth("ops", USERS["prometheus"])), ("/metrics-basic", f"Bearer {BEARER}")):
        assert raw(server, path, Authorization=header)[0] == 401, (path, header)
    for path, header in (("/metrics-bearer", f"Bearer {BEARER}"), ("/metrics-basic", auth("prometheus", USERS["prometheus"])),
                         ("/metrics-basic", auth("ops", USERS["ops"]))):
        status, headers, body = raw(server, path, Authorization=header, **{"Accept-Encoding": "gzip"})
        assert status == 200 and b"http_requests_total" in gzip.decompress(body), (path, header)


def test_slowlog_token_only_in_a_header_and_never_logged(server, caplog):
    caplog.set_level(logging.DEBUG)
    good = {"Authorization": f"Bearer {SLOW_TOKEN}"}
    assert raw(server, "/debug/slowlog", **good)[0] == 200
    assert raw(server, "/debug/slowlog")[0] == 401
    assert raw(server, "/debug/slowlog", Authorization="Bearer " + " " * 40)[0] == 401
    assert raw(server, "/debug/slowlog", Authorization=f"Bearer {SLOW_TOKEN[:-1]}")[0] == 401
    for query in (f"token={SLOW_TOKEN}", f"access_token={SLOW_TOKEN}", "token="):
        status, headers, body = raw(server, f"/debug/slowlog?{query}", **good)  # refused even with the header
        assert status == 400 and b"Authorization header" in body and SLOW_TOKEN.encode() not in body
        assert int(headers["content-length"]) == len(body)
    assert "credential in its URL query string" in caplog.text
    assert SLOW_TOKEN not in caplog.text


def test_prometheus_scrapes_protected_metrics():
    """A real Prometheus (which asks for gzip) scrapes the app's /metrics with basic auth and with a
    bearer token; a wrong password makes the target down."""
    inst = Instrumentation()
    server = _asgi_server(inst)
    prom = None
    try:
        for i in range(3):
            server.get(f"/items/{i}")
        target = {"static_configs": [{"targets": [server.url.removeprefix("http://")]}]}
        prom = Prometheus([
            {"job_name": "basic", "metrics_path": "/metrics-basic",
             "basic_auth": {"username": "prometheus", "password": USERS["prometheus"]}, **target},
            {"job_name": "bearer", "metrics_path": "/metrics-bearer", "authorization": {"credentials": BEARER}, **target},
            {"job_name": "wrong", "metrics_path": "/metrics-basic",
             "basic_auth": {"username": "prometheus", "password": "not it"}, **target},
        ])

        def ups():
            return {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
        wait_until(lambda: len(ups()) == 3, timeout=30, message="three scrapes")
        assert ups() == {"basic": "1", "bearer": "1", "wrong": "0"}
        for job in ("basic", "bearer"):
            found = prom.query(f'http_requests_total{{job="{job}",handler="/items/{{item_id}}"}}')
            assert [r["value"][1] for r in found] == ["3"], job
    finally:
        if prom is not None:
            prom.stop()
        server.close()


def _fastapi_behind_own_auth(inst):
    app = FastAPI()
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)
    basic_auth = HTTPBasic()

    def require_ops(credentials: HTTPBasicCredentials = Depends(basic_auth)):
        if not (secrets.compare_digest(credentials.username, "ops")
                and secrets.compare_digest(credentials.password, USERS["ops"])):
            raise HTTPException(401, headers={"WWW-Authenticate": "Basic"})

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"id": item_id}

    @app.get("/metrics", dependencies=[Depends(require_ops)], include_in_schema=False)
    def metrics(request: Request):
        status, headers, body = inst.metrics_response(request.headers, request.url.query)
        return Response(body, status_code=status, headers=dict(headers))
    return ASGIServer(app, inst)


def _flask_behind_own_auth(inst):
    from flask import Flask, abort, request

    from exporter.instrument import instrument_flask

    app = Flask("own_auth")

    @app.get("/items/<int:item_id>")
    def item(item_id):
        return {"id": item_id}

    @app.get("/metrics")
    def metrics():
        status, headers, body = inst.metrics_response(request.headers, request.query_string.decode())
        return body, status, headers

    @app.before_request
    def only_ops():
        auth = request.authorization
        if request.path == "/metrics" and not (auth and auth.username == "ops" and auth.password == USERS["ops"]):
            abort(401)
    instrument_flask(app, inst)
    return WSGIThreadServer(app, inst)


@pytest.mark.parametrize("make", [_fastapi_behind_own_auth, _flask_behind_own_auth], ids=["fastapi", "flask"])
def test_metrics_behind_the_applications_own_auth(make):
    inst = Instrumentation()
    server = make(inst)
    try:
        for i in range(4):
            assert server.get(f"/items/{i}").status_code == 200
        good = "Basic " + base64.b64encode(f"ops:{USERS['ops']}".encode()).decode()
        assert raw(server, "/metrics")[0] == 401
        wrong = "Basic " + base64.b64encode(f"ops:x{USERS['ops']}".encode()).decode()
        assert raw(server, "/metrics", Authorization=wrong)[0] == 401
        status, headers, body = raw(server, "/metrics", Authorization=good, **{"Accept-Encoding": "gzip"})
        assert status == 200 and headers["content-encoding"] == "gzip" and int(headers["content-length"]) == len(body)
        text = gzip.decompress(body).decode()
        assert promtool_check_metrics(text) == ""
        handler = "/items/{item_id}" if make is _fastapi_behind_own_auth else "/items/<int:item_id>"
        assert Samples(text).value("http_requests_total", handler=handler, method="GET", status="200") == 4
        status, headers, body = raw(server, "/metrics", Authorization=good)
        assert "content-encoding" not in headers and body.startswith(b"# HELP")
    finally:
        server.close()
