"""A fake Prometheus HTTP API on loopback for ``dbperf report``'s hostile-reply tests: a real socket
server that answers every request with what the test chose (bytes that are not JSON, JSON of the
wrong shape, an HTML error page, 100 MB, a reply that never ends, no reply at all), or, in
``hostile_values`` mode, a well-formed reply to every query whose samples all carry one value
(NaN, Inf, huge, negative ...) so that the whole report runs on it. It fakes the remote API, never
the database; the happy path runs against the real Prometheus (tests/test_report.py)."""

from __future__ import annotations

import json
import random
import re
import socket
import threading
import zlib
from urllib.parse import parse_qs, urlsplit

BUILDINFO = json.dumps({"status": "success", "data": {"version": "2.99.0-fake"}}).encode()
LABELS = {"target": "main", "instance": "db:9847", "datname": "app", "queryid": "42", "query": "SELECT 1",
          "handler": "/orders", "pipeline": "nightly", "status": "failed", "mountpoint": "/", "le": "+Inf",
          "alertname": "PostgreSQLDown", "severity": "critical", "kind": "index", "check": "unused_index"}


def response(body: bytes, status: int = 200, content_type: str = "application/json",
             extra: tuple[str, ...] = ()) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
            "Connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def success(data) -> bytes:
    return response(json.dumps({"status": "success", "data": data}).encode())


def hostile_values(value, timestamp=None, seed: int | None = None):
    """A reply function: every query answered in the right shape, every sample ``value`` (a string
    as Prometheus sends them, or any JSON), at ``timestamp`` or the query's own times. With a
    ``seed``, ``value`` is a list: each sample takes one of them at random, each query has 0 to 3
    series (label sets that differ), and a tenth of the range points are missing."""
    rng = random.Random(seed)

    def pick():
        return rng.choice(value) if seed is not None else value

    def labels(k: int) -> dict:
        return dict(LABELS, mountpoint=f"/d{k}", handler=f"/h{k}", queryid=str(k)) if k else LABELS

    def reply(path: str, params: dict) -> bytes:
        count = rng.randint(0, 3) if seed is not None else 1
        if path.endswith("/query_range"):
            start, end, step = (float(params[k]) for k in ("start", "end", "step"))
            times = [start + i * step for i in range(min(int((end - start) / step) + 1, 400))]
            series = [{"metric": labels(k), "values": [[timestamp if timestamp is not None else t, pick()] for t in times
                                                       if seed is None or rng.random() > 0.1]} for k in range(count)]
            return success({"resultType": "matrix", "result": series})
        at = float(params.get("time", 0))
        names = re.findall(r'"metric", "([^"]+)"', params.get("query", ""))  # the report's presence queries
        metrics = [{"metric": name} for name in names] if names else [labels(k) for k in range(count)]
        return success({"resultType": "vector", "result": [
            {"metric": m, "value": [timestamp if timestamp is not None else at, pick()]} for m in metrics]})
    return reply


class FakePrometheus:
    """``reply(path, params)`` gives the raw HTTP response bytes for each request (the build info is
    answered correctly unless ``buildinfo`` is False), or one of the behaviours: ``"silent"`` (read
    the request, never answer), ``"trickle"`` (a 200 and the start of a JSON body, then one byte every
    0.2 s for ever), ``"trickle_headers"`` (one header byte every 0.2 s for ever), ``"huge"`` (100 MB
    of JSON, no Content-Length), ``"huge_gzip"`` (the same, gzip-compressed to about 100 KB),
    ``"close"`` (read the request, close the connection without a word)."""

    def __init__(self, reply, buildinfo: bool = True):
        self.reply, self.buildinfo = reply, buildinfo
        self.requests: list[str] = []
        self.stopping = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.clients: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the other thread
        except OSError:
            pass
        self.listener.close()
        for client in self.clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()
        self.thread.join(5)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(65536)
                if not chunk:
                    return
                request += chunk
            target = request.split(b" ", 2)[1].decode()
            self.requests.append(target)
            parts = urlsplit(target)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if self.buildinfo and parts.path.endswith("/status/buildinfo"):
                client.sendall(response(BUILDINFO))
                return
            answer = self.reply(parts.path, params) if callable(self.reply) else self.reply
            if isinstance(answer, bytes):
                client.sendall(answer)
            elif answer == "silent":
                self.stopping.wait()
            elif answer in ("trickle", "trickle_headers"):
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + (
                    b"X-Slow: " if answer == "trickle_headers" else
                    b'\r\n{"status":"success","data":{"resultType":"vector","result":['))
                while not self.stopping.wait(0.2):
                    client.sendall(b" " if answer == "trickle" else b"a")
            elif answer in ("huge", "huge_gzip"):
                self._huge(client, compressed=answer == "huge_gzip")
        except OSError:
            pass
        finally:
            client.close()

    def _huge(self, client: socket.socket, compressed: bool) -> None:
        """100 MB of valid JSON (one vector sample with a label of 100 MB), made as it is sent."""
        packer = zlib.compressobj(9, zlib.DEFLATED, 31) if compressed else None  # 31: gzip framing
        pack = packer.compress if packer else bytes
        client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       + (b"Content-Encoding: gzip\r\n" if packer else b"") + b"\r\n")
        client.sendall(pack(b'{"status":"success","data":{"resultType":"vector","result":[{"metric":{"q":"'))
        megabyte = b"x" * (1 << 20)
        for _ in range(100):
            if self.stopping.is_set():
                return
            client.sendall(pack(megabyte))
        client.sendall(pack(b'"},"value":[1,"1"]}]}}') + (packer.flush() if packer else b""))
