"""Run by tests/test_instrument_alone.py with the python of a venv that holds only the application
library (``pip install dbperf``): a WSGI app on a real socket (wsgiref) and an ASGI app driven by
hand (no framework, no server), both instrumented, their /metrics read back. Prints one JSON
object: what was imported from where, which daemon modules are importable, which distributions
are installed, the series both expositions hold."""

from __future__ import annotations

import asyncio
import gzip
import importlib.metadata
import importlib.resources
import importlib.util
import json
import sys
import threading
import urllib.request
from types import SimpleNamespace
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client.parser import text_string_to_metric_families

import exporter.instrument
from exporter.instrument import Instrumentation, PrometheusMiddleware, WSGIMiddleware

DAEMON_MODULES = ("psycopg", "pglast", "psutil", "requests", "yaml", "bcrypt")


def samples(text: str) -> list[list]:
    return [[s.name, s.labels, s.value] for f in text_string_to_metric_families(text) for s in f.samples
            if s.name == "http_requests_total"]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


def wsgi() -> list[list]:
    inst = Instrumentation()

    def hello(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    app = WSGIMiddleware(hello, inst, resolve=lambda env: "/hello/{name}" if env["PATH_INFO"][:7] == "/hello/" else None)
    metrics = inst.metrics_wsgi_app()

    def site(environ, start_response):
        return (metrics if environ["PATH_INFO"] == "/metrics" else app)(environ, start_response)

    server = make_server("127.0.0.1", 0, site, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        with urllib.request.urlopen(base + "/hello/world", timeout=10) as reply:
            assert reply.read() == b"hello"
        with urllib.request.urlopen(base + "/metrics", timeout=10) as reply:
            text = reply.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    return samples(text)


async def call(app, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict, bytes]:
    """One GET through an ASGI app, as a server would drive it."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "path": path,
             "raw_path": path.encode(), "query_string": b"", "root_path": "", "scheme": "http",
             "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def asgi() -> tuple[list[list], str]:
    inst = Instrumentation(server_timing=True)

    async def items(scope, receive, send):
        scope["route"] = SimpleNamespace(path="/items/{id}")  # what a router records (Starlette's does)
        await send({"type": "http.response.start", "status": 201, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"made"})

    app = PrometheusMiddleware(items, instrumentation=inst)
    status, headers, body = asyncio.run(call(app, "/items/7", []))
    assert (status, body) == (201, b"made"), (status, body)
    status, headers2, body = asyncio.run(call(inst.metrics_asgi_app(), "/metrics", [(b"accept-encoding", b"gzip")]))
    assert status == 200 and headers2.get("content-encoding") == "gzip", (status, headers2)
    return samples(gzip.decompress(body).decode()), headers.get("server-timing", "")


def main() -> None:
    wsgi_samples = wsgi()
    asgi_samples, server_timing = asgi()
    print(json.dumps({
        "library": exporter.instrument.__file__,
        "py_typed": importlib.resources.files("exporter").joinpath("py.typed").is_file(),
        "importable": [m for m in DAEMON_MODULES if importlib.util.find_spec(m) is not None],
        "distributions": sorted(d.metadata["Name"].lower().replace("_", "-")
                                for d in importlib.metadata.distributions()),
        "requires": importlib.metadata.requires("dbperf"),
        "loaded": sorted(m for m in DAEMON_MODULES if m in sys.modules),
        "wsgi": wsgi_samples, "asgi": asgi_samples, "server_timing": server_timing,
    }))


if __name__ == "__main__":
    main()
