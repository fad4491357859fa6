"""Application-side instrumentation for PostgreSQL apps: HTTP middleware (ASGI and WSGI), SQL
timing (SQLAlchemy, psycopg 3), N+1 detection, pool gauges, Server-Timing and a slow log.

Depends on prometheus_client only; frameworks are imported lazily. Never imports the dbperf daemon.

    inst = Instrumentation(server_timing=True)
    app.add_middleware(PrometheusMiddleware, instrumentation=inst)   # FastAPI / Starlette
    inst.instrument_sqlalchemy(engine, pool="main")
    app.mount("/metrics", inst.metrics_asgi_app())
    inst.install_log_handler()                       # app_log_messages_total + last errors in the slow log
"""

from .applog import LogHandler
from .asgi import PrometheusMiddleware, route_template
from .core import UNMATCHED, Instrumentation, RequestState, SlowLog, current_request
from .fingerprint import Fingerprints, normalise
from .wsgi import WSGIMiddleware, instrument_flask

__all__ = [
    "Instrumentation", "PrometheusMiddleware", "WSGIMiddleware", "instrument_flask", "current_request",
    "RequestState", "SlowLog", "Fingerprints", "normalise", "route_template", "UNMATCHED",
    "LogHandler",
]
