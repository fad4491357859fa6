"""Application-side instrumentation for PostgreSQL apps: HTTP middleware (ASGI and WSGI), SQL
timing (SQLAlchemy, psycopg 3), N+1 detection, pool gauges, Server-Timing and a slow log.

Depends on prometheus_client only; frameworks are imported lazily. Never imports the dbperf daemon.

    inst = Instrumentation(server_timing=True)
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)   # FastAPI / Starlette
    inst.instrument_sqlalchemy(engine, pool="main")
    app.mount("/metrics", inst.metrics_asgi_app())
    inst.install_log_handler()                       # app_log_messages_total + last errors in the slow log
"""

import importlib

# imported on first use (PEP 562): ``exporter.instrument.auth`` (which dbperf serve's private
# endpoints use) loads without prometheus_client and the frameworks' glue
_EXPORTS = {
    "PrometheusMiddleware": ".asgi", "route_template": ".asgi",
    "UNMATCHED": ".core", "Instrumentation": ".core", "RequestState": ".core", "SlowLog": ".core",
    "current_request": ".core",
    "Fingerprints": ".fingerprint", "normalise": ".fingerprint",
    "WSGIMiddleware": ".wsgi", "instrument_flask": ".wsgi",
    "LogHandler": ".applog",
}

__all__ = [
    "Instrumentation", "PrometheusMiddleware", "WSGIMiddleware", "instrument_flask", "current_request",
    "RequestState", "SlowLog", "Fingerprints", "normalise", "route_template", "UNMATCHED",
    "LogHandler",
]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
