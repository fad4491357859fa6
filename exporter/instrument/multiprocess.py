"""Multi-process servers (gunicorn workers, ``uvicorn --workers``): prometheus_client's
multiprocess mode. Set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory in the environment of the
server *before* it starts (prometheus_client picks its storage when first imported), wipe it between
runs, and in gunicorn's config call ``child_exit`` so a dead worker's live gauges go away::

    # gunicorn.conf.py
    from exporter.instrument.multiprocess import child_exit  # noqa: F401

Then ``inst.metrics_asgi_app()`` / ``inst.metrics_wsgi_app()`` aggregate every worker's files.
Limits: counters and histograms sum correctly across workers; the in-progress gauge uses
``livesum``; the pool gauges are a custom collector and describe only the worker that answered the
scrape; exemplars, ``Info`` and ``remove()`` do not work in this mode."""

from __future__ import annotations

import os


def child_exit(server, worker) -> None:
    """gunicorn hook: mark the exited worker's live gauge files dead."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
