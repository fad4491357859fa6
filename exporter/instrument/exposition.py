"""The application's /metrics endpoint (ASGI and WSGI). In multi-process mode
(``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported) it aggregates every worker's
files through ``MultiProcessCollector``; the pool gauges, a custom collector, then come from the
worker that answered the scrape only."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, make_asgi_app, make_wsgi_app

from .core import Instrumentation


def exposition_registry(inst: Instrumentation) -> CollectorRegistry:
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return inst.registry
    from prometheus_client import multiprocess

    registry = CollectorRegistry(support_collectors_without_names=True)
    multiprocess.MultiProcessCollector(registry)
    if inst._pool_collector is not None:
        registry.register(inst._pool_collector)
    return registry


class ASGIApp:
    """An ASGI callable that is not a plain function, so Starlette's ``add_route`` and ``Route``
    treat it as an ASGI app (``app.add_route("/metrics", inst.metrics_asgi_app())``)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        await self.app(scope, receive, send)


def metrics_asgi_app(inst: Instrumentation):
    return ASGIApp(make_asgi_app(exposition_registry(inst)))


def metrics_wsgi_app(inst: Instrumentation):
    return make_wsgi_app(exposition_registry(inst))
