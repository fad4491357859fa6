"""Helpers shared by the tests/test_instrument_*.py modules: real servers on loopback (uvicorn in a
thread for ASGI, wsgiref in a thread for WSGI) and a metrics reader. No tests here."""

from __future__ import annotations

import socket
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

import httpx
from prometheus_client import generate_latest

from conftest import Samples


def settle(inst, timeout: float = 10.0) -> None:
    """Wait until no request is in progress. A client can read the last byte a moment before the
    server records the request; the in-progress gauge goes up before any response and down when the
    request is recorded, so zero means every answered request has been counted."""
    deadline = time.monotonic() + timeout
    while True:
        busy = sum(x.value for f in inst.http_in_progress.collect() for x in f.samples)
        if busy == 0:
            return
        assert time.monotonic() < deadline, f"{busy} requests still in progress"
        time.sleep(0.005)


class ASGIServer:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a thread. With ``inst``, ``get`` returns
    once the request has been recorded."""

    def __init__(self, app, inst=None):
        self.inst = inst
        import uvicorn

        # A free port, then uvicorn binds it itself (with a pre-bound socket handed over, responses
        # were delayed ~40 ms each by Nagle/delayed-ACK on this machine).
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def get(self, path, **kw) -> httpx.Response:
        response = self.client.get(path, **kw)
        if self.inst is not None:
            settle(self.inst)
        return response

    def close(self):
        self.client.close()
        self.server.should_exit = True
        self.thread.join(10)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class WSGIThreadServer:
    """wsgiref (threaded) serving ``app`` on 127.0.0.1:<free port> in a thread (``inst``: as for
    ASGIServer)."""

    def __init__(self, app, inst=None):
        self.inst = inst
        self.httpd = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def get(self, path, **kw) -> httpx.Response:
        response = self.client.get(path, **kw)
        if self.inst is not None:
            settle(self.inst)
        return response

    def close(self):
        self.client.close()
        self.httpd.shutdown()
        self.httpd.server_close()


def samples(inst) -> Samples:
    return Samples(generate_latest(inst.registry).decode())


def value(s: Samples, name: str, **labels) -> float:
    """The value of one series, 0 when it does not exist."""
    found = s.series(name, **labels)
    assert len(found) <= 1, f"{name}{labels}: {len(found)} series"
    return found[0].value if found else 0.0
