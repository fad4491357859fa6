"""gunicorn settings for multi-process metrics (``-c python:examples.gunicorn_conf``)."""

from exporter.instrument.multiprocess import child_exit  # noqa: F401
