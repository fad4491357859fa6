"""HTTP: ``/metrics`` (every target), ``/probe?target=NAME`` (one), ``/healthz``, ``/readyz``.

The server knows no SQL: it asks each target's :class:`~exporter.scrape.TargetScraper` (the one
scrape engine, for every kind of target, with collectors made for that target) for rendered
text within the deadline Prometheus announces (``X-Prometheus-Scrape-Timeout-Seconds``, clamped to
the config's ``max_scrape_timeout``). Every target's answer comes by that deadline, so
``/metrics`` always has each target's ``pg_up`` (0 for a target that did not answer in time).

Connections are held by :mod:`exporter.httpconn` (idle sockets cost no thread; slow and idle
clients are timed out; connections and workers are bounded). The web configuration
(:mod:`exporter.webconfig`: TLS, client certificates, basic auth, extra headers) applies to every
path but those in the config's ``web_unauthenticated_paths`` (only ``/healthz`` may be there), and
is reloaded by :meth:`Server.reload_web_config` (SIGHUP). ``/metrics`` and ``/probe`` answer in
gzip when asked (:mod:`exporter.compress`).
"""

from __future__ import annotations

import io
import json
import logging
import math
import platform
import re
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from exporter import __version__, memory, webconfig
from exporter.compress import accepts_gzip, gzip_chunks
from exporter.config import Config, ConfigError
from exporter.httpconn import DeadlineWriter, Limits, SelectorServer
from exporter.metrics import CONTENT_TYPE, Family, Rendered
from exporter.process import own_families
from exporter.private import ENDPOINTS as PRIVATE_ENDPOINTS
from exporter.private import answer as private_answer
from exporter.private import credentials as private_credentials
from exporter.registry import collectors_for
from exporter.scrape import TargetScraper

LOG = logging.getLogger("dbperf.server")

_QUERY = re.compile(r"\?\S*")
MIN_BUDGET = 0.1    # seconds: the least a scrape is given
MAX_BUDGET = 120.0  # seconds: the default of the config's max_scrape_timeout


def parse_budget(header: str | None, offset: float, default: float, maximum: float = MAX_BUDGET) -> float:
    """Seconds a scrape may take: the ``X-Prometheus-Scrape-Timeout-Seconds`` header minus
    ``offset``, between :data:`MIN_BUDGET` and ``maximum``; ``default`` (also at most
    ``maximum``) without a header or with one that is not a positive finite number."""
    try:
        value = float(header) if header and len(header) <= 64 else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        return min(maximum, default)
    return min(maximum, max(MIN_BUDGET, value - offset))


ROUTES = ("/metrics", "/probe", "/healthz", "/readyz", "/")


def route(path: str, query: str, targets) -> tuple[str, str | None, int, str]:
    """``(endpoint, target, status, error)`` of a request: status 200 with the endpoint (and
    the target of a probe), else the status and a one-line error to answer with."""
    if path in PRIVATE_ENDPOINTS:
        return path, None, 200, ""
    if path not in ROUTES:
        return "", None, 404, "not found: try /metrics, /probe?target=NAME, /healthz or /readyz\n"
    if path != "/probe":
        return path, None, 200, ""
    names = parse_qs(query).get("target", [])
    if len(names) != 1:
        return path, None, 400, "/probe needs exactly one target parameter, e.g. /probe?target=main\n"
    if names[0] not in targets:
        known = ", ".join(sorted(targets))
        return path, None, 404, f"unknown target {names[0]!r} (configured: {known})\n"
    return path, names[0], 200, ""


class Exporter:
    """Everything the HTTP layer serves, independent of HTTP (tests and the benchmark use it)."""

    def __init__(self, config: Config, collectors=None):
        """``collectors``: None, each target gets new collectors of its kind
        (:func:`exporter.registry.collectors_for`); a function of the target, what it returns; a
        tuple (tests), the collectors of the one PostgreSQL target."""
        self.config = config
        if collectors is None:
            factory = lambda target: collectors_for(target, config)  # noqa: E731
        elif callable(collectors):
            factory = collectors
        else:
            fixed = tuple(collectors)
            if sum(1 for t in config.targets if t.kind == "postgres") > 1:
                raise ValueError("a tuple of collectors serves one PostgreSQL target (collectors keep per-target "
                                 "state): pass a function of the target")
            factory = lambda target: fixed if target.kind == "postgres" else collectors_for(target, config)  # noqa: E731
        self.scrapers = {t.name: TargetScraper(t, factory(t)) for t in config.targets}
        self.private_credentials = private_credentials(getattr(config, "private_token", ""))

    def budget(self, header: str | None) -> float:
        """Seconds a scrape may take: Prometheus's timeout minus the offset, else the config's."""
        return parse_budget(header, self.config.scrape_timeout_offset, self.config.scrape_timeout,
                            getattr(self.config, "max_scrape_timeout", MAX_BUDGET))

    def probe(self, target: str, budget: float) -> bytes:
        return self.render_probe(target, budget).encode()

    def metrics(self, budget: float) -> bytes:
        return self.render_metrics(budget).encode()

    def render_probe(self, target: str, budget: float) -> Rendered:
        return self.scrapers[target].scrape(budget)

    def render_metrics(self, budget: float) -> Rendered:
        # every target's collection starts (or is joined) now and answers by the same deadline:
        # nothing waits in a queue behind another target or another scrape
        pending = [(name, s.begin(budget)) for name, s in self.scrapers.items()]
        rendered = Rendered()
        for name, waiting in pending:
            try:
                rendered.merge(waiting.result())
            except Exception as exc:  # a scraper bug must not take /metrics down
                LOG.error("target=%s scrape failed: %s", name, exc)
        rendered.add_families(self._own_metrics())
        rendered.add_families(own_families())  # process_* and python_*, as the client libraries name them
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
                from exporter.host import collect_host  # psutil: only with host_metrics

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
        """Per target: ``up`` when its last scrape reached it in time."""
        return {name: {"up": s.server is not None, "scrapes": s.scrapes} for name, s in self.scrapers.items()}

    def close(self) -> None:
        for scraper in self.scrapers.values():
            scraper.close()


class Handler(BaseHTTPRequestHandler):
    """One request whose head :mod:`exporter.httpconn` has read; the response goes to the socket
    within the server's write timeout."""

    protocol_version = "HTTP/1.1"
    server_version = f"dbperf/{__version__}"

    def __init__(self, conn, head: bytes, server: "Server"):
        self.head = head
        self.exporter = server.exporter
        super().__init__(conn.sock, conn.addr, server)

    def setup(self):
        self.connection = self.request
        self.web = self.server.web  # one web config for the whole request, even if reloaded meanwhile
        self.rfile = io.BytesIO(self.head)
        self.wfile = DeadlineWriter(self.request, self.server.limits.write_timeout)

    def handle(self):
        self.close_connection = True
        self.handle_one_request()
        headers = getattr(self, "headers", None)
        if headers is not None and (headers.get("Content-Length", "0").strip() not in ("", "0")
                                    or "Transfer-Encoding" in headers):
            self.close_connection = True  # a body dbperf does not read: no second request on it

    def finish(self):
        pass

    def log_message(self, fmt, *args):  # access logs only at debug level
        LOG.debug("%s %s", self.address_string(), _QUERY.sub("?...", fmt % args))  # a query may hold a credential

    def end_headers(self):
        for name, value in self.web.headers:
            self.send_header(name, value)
        super().end_headers()

    def _send(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8",
              headers: tuple = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_rendered(self, rendered: Rendered) -> None:
        """Stream the exposition text chunk by chunk (no second copy of a large scrape in
        memory), or its gzip members when the client asks for gzip."""
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Vary", "Accept-Encoding")
        if accepts_gzip(self.headers.get("Accept-Encoding")):
            chunks = gzip_chunks(rendered.chunks())
            self.server.gzip_responses += 1
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(sum(len(c) for c in chunks)))
        else:
            chunks = rendered.chunks()
            self.send_header("Content-Length", str(rendered.size()))
        self.end_headers()
        if self.command == "HEAD":
            return
        buffer, size = [], 0
        for chunk in chunks:
            buffer.append(chunk)
            size += len(chunk)
            if size >= 256 * 1024:  # fewer, larger writes
                self.wfile.write(b"".join(buffer))
                buffer, size = [], 0
        if buffer:
            self.wfile.write(b"".join(buffer))

    def _authorized(self, path: str) -> bool:
        """False when the answer (401 or 503) has been sent."""
        auth = self.web.auth
        if auth is None or path in self.server.open_paths:
            return True
        ok = auth.check(self.headers.get("Authorization"))
        if ok:
            return True
        if ok is None:
            self._send(503, b"too many authentications in progress, retry later\n", headers=(("Retry-After", "1"),))
        else:
            LOG.debug("%s: authentication failed for %s", self.address_string(), path)
            self._send(401, b"unauthorized\n", headers=(("WWW-Authenticate", 'Basic realm="dbperf", charset="UTF-8"'),))
        return False

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urlsplit(self.path)
        try:
            if not self._authorized(url.path):
                return
            budget = self.exporter.budget(self.headers.get("X-Prometheus-Scrape-Timeout-Seconds"))
            endpoint, target, status, error = route(url.path, url.query, self.exporter.scrapers)
            if status != 200:
                self._send(status, error.encode())
            elif endpoint == "/metrics":
                self._send_rendered(self.exporter.render_metrics(budget))
                memory.trim()  # the scrape's rows and text are freed: hand their pages back
            elif endpoint == "/probe":
                self._send_rendered(self.exporter.render_probe(target, budget))
                memory.trim()
            elif endpoint in PRIVATE_ENDPOINTS:
                status, body, headers = private_answer(self.exporter, endpoint, url.query,
                                                       self.headers.get("Authorization"),
                                                       self.headers.get("X-Dbperf-Token"))
                self._send(status, body, "application/json", headers)
            elif endpoint == "/healthz":
                self._send(200, b"ok\n")
            elif endpoint == "/readyz":
                self._send(200, json.dumps(self.exporter.ready()).encode() + b"\n", "application/json")
            else:
                links = "".join(f'<li><a href="/probe?target={n}">/probe?target={n}</a></li>' for n in self.exporter.scrapers)
                page = (f"<html><head><title>dbperf</title></head><body><h1>dbperf {__version__}</h1>"
                        f'<ul><li><a href="/metrics">/metrics</a></li>{links}'
                        '<li><a href="/healthz">/healthz</a></li><li><a href="/readyz">/readyz</a></li></ul></body></html>')
                self._send(200, page.encode(), "text/html; charset=utf-8")
        except OSError:  # the client went away or did not read in time (TLS errors too)
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - last resort, keep serving
            LOG.exception("error serving %s: %s", url.path, exc)
            self.close_connection = True
            try:
                self._send(500, b"internal error, see dbperf's log\n")
            except Exception:
                pass


class Server(SelectorServer):
    """dbperf's HTTP(S) server: :class:`Handler` behind :class:`~exporter.httpconn.SelectorServer`."""

    def __init__(self, exporter: Exporter, host: str, port: int, web_config: str = "", limits: Limits = Limits()):
        self.exporter = exporter
        self.web_path = web_config
        self.web = webconfig.load(web_config) if web_config else webconfig.NONE
        self.open_paths = frozenset(getattr(exporter.config, "web_unauthenticated_paths", ()))
        self.gzip_responses = 0  # answers sent compressed (tests; not exact under concurrency)
        super().__init__((host, port), self._handle, limits, tls=self._context, allow=self._allow)

    def _context(self):
        tls = self.web.tls
        return tls.context if tls else None

    def _allow(self, sock) -> bool:
        tls = self.web.tls
        return tls is None or webconfig.peer_allowed(tls, sock.getpeercert())

    def _handle(self, conn, head: bytes) -> bool:
        return not Handler(conn, head, self).close_connection

    def reload_web_config(self) -> bool:
        """Read the web config file again; a bad one keeps the old (one line in the log)."""
        if not self.web_path:
            LOG.info("reload: no web config file to reload")
            return False
        try:
            self.web = webconfig.load(self.web_path)
        except ConfigError as exc:
            LOG.error("web config not reloaded, keeping the previous one: %s", exc)
            return False
        LOG.info("web config %s reloaded (%s%s)", self.web_path, self.web.scheme,
                 ", basic auth" if self.web.auth else "")
        return True

    @property
    def scheme(self) -> str:
        return self.web.scheme


def make_server(exporter: Exporter, host: str, port: int, web_config: str = "", limits: Limits = Limits()) -> Server:
    """``web_config``: a web configuration file (:class:`~exporter.config.ConfigError` when it is wrong)."""
    return Server(exporter, host, port, web_config, limits)


def serve_in_thread(exporter: Exporter, host: str = "127.0.0.1", port: int = 0, **kw) -> tuple[Server, threading.Thread]:
    server = make_server(exporter, host, port, **kw)
    thread = threading.Thread(target=server.serve_forever, name="dbperf-http", daemon=True)
    thread.start()
    return server, thread
