"""A small Flask app instrumented with exporter.instrument (WSGI), used by the multi-process test and
as a Flask example::

    PROMETHEUS_MULTIPROC_DIR=$(mktemp -d) gunicorn -w 3 -c python:examples.gunicorn_conf \
        'examples.flask_app:create_app()'

``FLASK_APP_DSN`` (optional) enables ``/orders/<int:customer_id>`` which reads PostgreSQL.
"""

from __future__ import annotations

import os

from flask import Flask, abort, jsonify
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from exporter.instrument import Instrumentation, instrument_flask


def create_app(dsn: str | None = None, instrumentation: Instrumentation | None = None,
               slowlog_token: str | None = None) -> Flask:
    inst = instrumentation or Instrumentation(server_timing=True)
    app = Flask(__name__)
    dsn = dsn or os.environ.get("FLASK_APP_DSN")
    pool = None
    if dsn:
        import psycopg_pool

        pool = psycopg_pool.ConnectionPool(dsn, min_size=1, max_size=4, timeout=5, open=True, name="flask",
                                           kwargs={"autocommit": True})
        inst.instrument_psycopg_pool(pool)
    metrics = inst.metrics_wsgi_app()
    slowlog = inst.slowlog_wsgi_app(slowlog_token) if slowlog_token else None

    @app.get("/items/<int:item_id>")
    def item(item_id):
        return jsonify(id=item_id, pid=os.getpid())

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    @app.get("/customers/<int:customer_id>/lookups")
    def lookups(customer_id):
        if pool is None:
            abort(404)
        with pool.connection() as conn:
            names = [conn.execute("SELECT %s::text || '-' || %s::text", (customer_id, i)).fetchone()[0]
                     for i in range(6)]  # deliberate N+1
        return jsonify(names)

    @app.get("/sleep")
    def sleep():
        if pool is None:
            abort(404)
        with pool.connection() as conn:
            conn.execute("SELECT pg_sleep(0.55)")
        return jsonify(slept=0.55)

    instrument_flask(app, inst)
    # /metrics and the slow log are served beside the measured app, not through it.
    mounts = {"/metrics": metrics}
    if slowlog is not None:
        mounts["/debug/slowlog"] = slowlog
    app.wsgi_app = DispatcherMiddleware(app.wsgi_app, mounts)
    app.extensions["dbperf_instrumentation"] = inst
    return app


