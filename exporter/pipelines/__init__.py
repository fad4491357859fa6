"""Data-pipeline runs: read from a runs table or Airflow's metadata DB, and recorded by jobs.

``from exporter.pipelines import record_run`` is all a job needs; it imports psycopg and nothing
of the daemon (the collector lives in ``exporter.pipelines.collector``)."""

from __future__ import annotations


def __getattr__(name):  # lazy: importing the package stays cheap
    if name in ("record_run", "Run"):
        from exporter.pipelines import recorder

        return getattr(recorder, name)
    raise AttributeError(name)


__all__ = ["record_run", "Run"]
