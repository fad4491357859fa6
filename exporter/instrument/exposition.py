"""The application's /metrics endpoint (ASGI and WSGI). In multi-process mode
(``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported) it aggregates every worker's
files through ``MultiProcessCollector``; the pool gauges, a custom collector, then come from the
worker that answered the scrape only.

Both apps negotiate the format as prometheus_client does (text 0.0.4, OpenMetrics on request,
``name[]`` filters), answer ``Accept-Encoding: gzip`` with a gzip body (``Content-Encoding: gzip``,
``Content-Length`` of the compressed body, ``Vary: Accept-Encoding``), and optionally require a
bearer token or basic-auth users (:class:`.auth.Credentials`)."""

from __future__ import annotations

import gzip
import os
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from .auth import Credentials

if TYPE_CHECKING:  # core imports this module (its metrics_*_app methods): no import back at run time
    from .core import Instrumentation

GZIP_LEVEL = 1  # a 290 kB exposition: 1/21 of its size in 0.4 ms; level 5: 1/23 in 1.1 ms, level 9: 1/25 in 4.6 ms
_ALLOW = "GET, HEAD, OPTIONS"


def exposition_registry(inst: Instrumentation) -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return inst.registry
    from prometheus_client import multiprocess

    registry = CollectorRegistry(support_collectors_without_names=True)
    multiprocess.MultiProcessCollector(registry)
    if inst._pool_collector is not None:
        registry.register(inst._pool_collector)
    return registry


def gzip_accepted(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (``gzip``, ``x-gzip`` or ``*``, with q > 0)."""
    if not accept_encoding:
        return False
    explicit = star = None
    for part in accept_encoding.split(",")[:32]:
        coding, _, params = part.partition(";")
        coding = coding.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        if coding in ("gzip", "x-gzip"):
            explicit = q if explicit is None else max(explicit, q)
        elif coding == "*":
            star = q
    chosen = explicit if explicit is not None else star
    return chosen is not None and chosen > 0  # NaN compares false: not accepted


class Exposition:
    """What both apps do, independent of ASGI/WSGI: (status, headers, body) for a request."""

    def __init__(self, registry, credentials: Credentials, gzip_level: int):
        if not isinstance(gzip_level, int) or isinstance(gzip_level, bool) or not 0 <= gzip_level <= 9:
            raise ValueError(f"metrics app: gzip_level must be an integer from 0 (off) to 9, got {gzip_level!r}")
        self.registry = registry
        self.credentials = credentials
        self.gzip_level = gzip_level

    def respond(self, method: str, query: str, authorization, accept, accept_encoding):
        if not self.credentials.allows(authorization):
            body = b"# 401: credentials required\n"
            return 401, [("Content-Type", "text/plain; charset=utf-8"),
                         ("WWW-Authenticate", self.credentials.challenge), ("Content-Length", str(len(body)))], body
        if method == "OPTIONS":
            return 200, [("Allow", _ALLOW), ("Content-Length", "0")], b""
        if method not in ("GET", "HEAD"):
            body = f"# 405: {method[:16]} not allowed; use GET\n".encode()
            return 405, [("Allow", _ALLOW), ("Content-Type", "text/plain; charset=utf-8"),
                         ("Content-Length", str(len(body)))], body
        encoder, content_type = choose_encoder(accept)
        registry = self.registry
        names = parse_qs(query).get("name[]") if query else None
        if names:
            registry = registry.restricted_registry(names)
        body = encoder(registry)
        headers = [("Content-Type", content_type), ("Vary", "Accept, Accept-Encoding")]
        if self.gzip_level and gzip_accepted(accept_encoding):
            body = gzip.compress(body, compresslevel=self.gzip_level, mtime=0)
            headers.append(("Content-Encoding", "gzip"))
        headers.append(("Content-Length", str(len(body))))
        return 200, headers, (b"" if method == "HEAD" else body)


class ASGIApp:
    """An ASGI callable that is not a plain function, so Starlette's ``add_route`` and ``Route``
    treat it as an ASGI app (``app.add_route("/metrics", inst.metrics_asgi_app())``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


_WANTED = {b"authorization": 0, b"accept": 1, b"accept-encoding": 2}
_REASONS = {200: "OK", 401: "Unauthorized", 405: "Method Not Allowed"}


def _exposition(inst: Instrumentation, bearer_token, basic_auth, gzip_level) -> Exposition:
    if not isinstance(getattr(inst, "registry", None), CollectorRegistry):  # what it reads of an Instrumentation
        raise TypeError("metrics app: needs an Instrumentation")
    creds = Credentials(bearer_token=bearer_token, basic_auth=basic_auth, what="metrics app", realm="metrics")
    return Exposition(exposition_registry(inst), creds, gzip_level)


def metrics_asgi_app(inst: Instrumentation, *, bearer_token: str | None = None, basic_auth=None,
                     gzip_level: int = GZIP_LEVEL):
    expo = _exposition(inst, bearer_token, basic_auth, gzip_level)

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        values: list = [None, [], []]
        for name, value in scope.get("headers") or ():
            slot = _WANTED.get(name.lower())
            if slot == 0:
                values[0] = values[0] or value.decode("latin-1")
            elif slot is not None:
                values[slot].append(value.decode("latin-1"))
        status, headers, body = expo.respond(scope["method"], scope.get("query_string", b"").decode("latin-1"),
                                             values[0], ",".join(values[1]), ",".join(values[2]))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.lower().encode(), v.encode()) for k, v in headers]})
        await send({"type": "http.response.body", "body": body})

    return ASGIApp(app)


def metrics_response(inst: Instrumentation, headers, query: str = "", method: str = "GET"):
    """(status, [(header, value)], body) of /metrics for a request the application has already
    authorised itself (a FastAPI dependency, a Flask ``before_request``): ``headers`` is any
    mapping with a case-insensitive ``get`` (Starlette's ``request.headers``, Flask's); gzip and
    the format are negotiated as by the apps."""
    expo = getattr(inst, "_open_exposition", None)
    if expo is None:
        expo = inst._open_exposition = _exposition(inst, None, None, GZIP_LEVEL)
    return expo.respond(method, query or "", None, headers.get("accept"), headers.get("accept-encoding"))


def metrics_wsgi_app(inst: Instrumentation, *, bearer_token: str | None = None, basic_auth=None,
                     gzip_level: int = GZIP_LEVEL):
    expo = _exposition(inst, bearer_token, basic_auth, gzip_level)

    def app(environ, start_response):
        status, headers, body = expo.respond(
            environ.get("REQUEST_METHOD", "GET"), environ.get("QUERY_STRING", ""),
            environ.get("HTTP_AUTHORIZATION"), environ.get("HTTP_ACCEPT"), environ.get("HTTP_ACCEPT_ENCODING"))
        start_response(f"{status} {_REASONS[status]}", headers)
        return [body]

    return app
