"""HTTP: ``/metrics`` (every target), ``/probe?target=NAME`` (one), ``/healthz``, ``/readyz``.

The server knows no SQL: it asks each target's :class:`~exporter.scrape.TargetScraper` for rendered
text within the deadline Prometheus announces (``X-Prometheus-Scrape-Timeout-Seconds``).
"""

from __future__ import annotations

import json
import logging
import platform
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest

from exporter import __version__
from exporter.config import Config
from exporter.host import collect_host
from exporter.metrics import CONTENT_TYPE, Family, Rendered
from exporter.pgbouncer import PgBouncerScraper
from exporter.registry import all_collectors
from exporter.scrape import TargetScraper

LOG = logging.getLogger("dbperf.server")


class Exporter:
    """Everything the HTTP layer serves, independent of HTTP (tests and the benchmark use it)."""

    def __init__(self, config: Config, collectors=None):
        self.config = config
        collectors = collectors if collectors is not None else all_collectors()
        self.scrapers = {t.name: (PgBouncerScraper(t) if t.kind == "pgbouncer" else TargetScraper(t, collectors))
                         for t in config.targets}
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.scrapers)), thread_name_prefix="dbperf-target")
        self._process = CollectorRegistry()
        ProcessCollector(registry=self._process)
        PlatformCollector(registry=self._process)
        GCCollector(registry=self._process)

    def budget(self, header: str | None) -> float:
        """Seconds a scrape may take: Prometheus's timeout minus the offset, else the config's."""
        offset = self.config.scrape_timeout_offset
        if header:
            try:
                return max(0.1, float(header) - offset)
            except ValueError:
                pass
        return self.config.scrape_timeout

    def probe(self, target: str, budget: float) -> bytes:
        return self.render_probe(target, budget).encode()

    def metrics(self, budget: float) -> bytes:
        return self.render_metrics(budget).encode()

    def render_probe(self, target: str, budget: float) -> Rendered:
        return self.scrapers[target].scrape(budget)

    def render_metrics(self, budget: float) -> Rendered:
        futures = [self._pool.submit(s.scrape, budget) for s in self.scrapers.values()]
        rendered = Rendered()
        for name, future in zip(self.scrapers, futures):
            try:
                rendered.merge(future.result(timeout=budget + 1.0))
            except Exception as exc:  # a scraper bug must not take /metrics down
                LOG.error("target=%s scrape failed: %s", name, exc)
        rendered.add_families(self._own_metrics())
        rendered.tail.append(generate_latest(self._process))
        return rendered

    def _own_metrics(self) -> list[Family]:
        build = Family("dbperf_build_info", "gauge", "dbperf version and Python version; always 1.",
                       ("version", "python_version"))
        build.add((__version__, platform.python_version()), 1)
        families = [build]
        if self.config.host_metrics:
            start = time.monotonic()
            ok = 1
            try:
                families += collect_host()
            except Exception as exc:
                ok = 0
                LOG.warning("collector=host failed: %s", exc)
            success = Family("dbperf_host_collector_success", "gauge", "1 when the host collector succeeded.")
            success.add((), ok)
            duration = Family("dbperf_host_collector_duration_seconds", "gauge", "Time the host collector took.")
            duration.add((), time.monotonic() - start)
            families += [success, duration]
        return families

    def ready(self) -> dict:
        return {name: {"up": s.server is not None, "scrapes": s.scrapes} for name, s in self.scrapers.items()}

    def close(self) -> None:
        for scraper in self.scrapers.values():
            scraper.close()
        self._pool.shutdown(wait=False, cancel_futures=True)


class Handler(BaseHTTPRequestHandler):
    exporter: Exporter  # set on the subclass made by make_server
    protocol_version = "HTTP/1.1"
    server_version = f"dbperf/{__version__}"

    def log_message(self, fmt, *args):  # access logs only at debug level
        LOG.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_rendered(self, rendered: Rendered) -> None:
        """Stream the exposition text chunk by chunk: no second copy of a large scrape in memory."""
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(rendered.size()))
        self.end_headers()
        if self.command == "HEAD":
            return
        buffer, size = [], 0
        for chunk in rendered.chunks():
            buffer.append(chunk)
            size += len(chunk)
            if size >= 256 * 1024:  # fewer, larger writes
                self.wfile.write(b"".join(buffer))
                buffer, size = [], 0
        if buffer:
            self.wfile.write(b"".join(buffer))

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        budget = self.exporter.budget(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
        try:
            if url.path == "/metrics":
                self._send_rendered(self.exporter.render_metrics(budget))
            elif url.path == "/probe":
                names = parse_qs(url.query).get("target", [])
                if len(names) != 1:
                    self._send(400, b"/probe needs exactly one target parameter, e.g. /probe?target=main\n")
                elif names[0] not in self.exporter.scrapers:
                    known = ", ".join(sorted(self.exporter.scrapers))
                    self._send(404, f"unknown target {names[0]!r} (configured: {known})\n".encode())
                else:
                    self._send_rendered(self.exporter.render_probe(names[0], budget))
            elif url.path == "/healthz":
                self._send(200, b"ok\n")
            elif url.path == "/readyz":
                self._send(200, json.dumps(self.exporter.ready()).encode() + b"\n", "application/json")
            elif url.path == "/":
                links = "".join(f'<li><a href="/probe?target={n}">/probe?target={n}</a></li>' for n in self.exporter.scrapers)
                page = (f"<html><head><title>dbperf</title></head><body><h1>dbperf {__version__}</h1>"
                        f'<ul><li><a href="/metrics">/metrics</a></li>{links}'
                        '<li><a href="/healthz">/healthz</a></li><li><a href="/readyz">/readyz</a></li></ul></body></html>')
                self._send(200, page.encode(), "text/html; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics, /probe?target=NAME, /healthz or /readyz\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as exc:  # pragma: no cover - last resort, keep serving
            LOG.exception("error serving %s: %s", url.path, exc)
            try:
                self._send(500, b"internal error, see dbperf's log\n")
            except Exception:
                pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(exporter: Exporter, host: str, port: int) -> Server:
    handler = type("BoundHandler", (Handler,), {"exporter": exporter})
    return Server((host, port), handler)


def serve_in_thread(exporter: Exporter, host: str = "127.0.0.1", port: int = 0) -> tuple[Server, threading.Thread]:
    server = make_server(exporter, host, port)
    thread = threading.Thread(target=server.serve_forever, name="dbperf-http", daemon=True)
    thread.start()
    return server, thread
