"""Which collectors a target runs, made per exporter and target (collectors keep per-target state:
the statements collector's previous read, the pipelines watermark), never shared.

:func:`collectors_for` makes them; :func:`known_collectors` and :func:`collector_names` list
them for config validation and docs. Host metrics are not per target and live outside this
list (``exporter.host``)."""

from __future__ import annotations

import functools

from exporter.collector import Collector
from exporter.kind import kind_of


def _checked(collectors: list[Collector]) -> tuple[Collector, ...]:
    names = [c.name for c in collectors]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuntimeError(f"duplicate collector names: {duplicates}")
    return tuple(collectors)


def _user_collectors(config) -> list[Collector]:
    """The collectors of the config's ``collector_files:`` (PostgreSQL targets only)."""
    specs = getattr(config, "collector_specs", ())
    if not specs:
        return []
    from exporter.postgres import catalog

    # collector_files (the "userfiles" branch): Config.collector_specs holds immutable definitions;
    # each target gets its own CatalogCollector built from each of them here
    return [catalog.from_spec(spec) for spec in specs]


def known_collectors(kind: str = "postgres", config=None) -> tuple[Collector, ...]:
    """New objects of every collector a target of ``kind`` may run under ``config`` (built-in
    ones, and the user's from ``collector_files`` for PostgreSQL), enabled or not."""
    collectors = list(kind_of(kind).collectors())
    if kind == "postgres":
        collectors += _user_collectors(config)
    return _checked(collectors)


def collectors_for(target, config=None) -> tuple[Collector, ...]:
    """New collector objects for ``target`` (an :class:`exporter.config.Target`) of its kind; the
    scrape engine picks the enabled ones from the target's ``collectors:`` settings."""
    return known_collectors(getattr(target, "kind", "postgres"), config)


@functools.cache
def _builtin_names(kind: str) -> frozenset[str]:
    return frozenset(c.name for c in kind_of(kind).collectors())


def collector_names(kind: str = "postgres", config=None) -> frozenset[str]:
    """The names a target of ``kind`` may configure under ``collectors:``."""
    if getattr(config, "collector_specs", ()):
        return frozenset(c.name for c in known_collectors(kind, config))
    return _builtin_names(kind)


def all_collectors() -> tuple[Collector, ...]:
    """New objects of PostgreSQL's built-in collectors (docs, plans, tests)."""
    return known_collectors("postgres")


def get(name: str, kind: str = "postgres") -> Collector:
    return next(c for c in known_collectors(kind) if c.name == name)


@functools.cache
def builtin_family_names() -> dict:
    """Family name -> built-in collector, for every family dbperf's own collectors document (a
    user's collector file may not reuse one)."""
    return {name: c.name for c in all_collectors() for name, *_ in c.documented() if not name.endswith("*")} | {
        "pg_up": "scrape"}
