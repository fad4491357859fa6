"""The one list of PostgreSQL collectors: catalog entries plus code collectors, by name.

Host metrics are not per target and live outside this list (``exporter.host``)."""

from __future__ import annotations

import functools

from exporter.collector import Collector


@functools.cache
def all_collectors() -> tuple[Collector, ...]:
    from exporter.postgres import catalog
    from exporter.postgres.live import LiveQueriesCollector
    from exporter.postgres.settings import SettingsCollector
    from exporter.postgres.statements import StatementsCollector

    collectors = list(catalog.load()) + [SettingsCollector(), StatementsCollector(), LiveQueriesCollector()]
    from exporter.postgres.privileges import PrivilegesCollector

    collectors.append(PrivilegesCollector())  # fails naming the grant when the role lacks what pg_monitor grants
    from exporter.advisor.collector import AdvisorCollector

    collectors.append(AdvisorCollector())  # opt-in: dbperf_advisor_findings
    from exporter.pipelines.collector import PipelinesCollector

    collectors.append(PipelinesCollector())  # on for targets with `pipelines:` sources
    names = [c.name for c in collectors]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(f"duplicate collector names: {sorted(duplicates)}")
    return tuple(collectors)


# -- user collectors (issue 15, h/userfiles): a minimal addition for the lead to fold into
# collectors_for(target, config) -------------------------------------------------------------
def user_collectors(config) -> tuple[Collector, ...]:
    """The collectors of ``config.collector_specs`` (the config's ``collector_files``), new
    objects for each call: a user collector keeps per-series state (its counters' last values)."""
    from exporter.postgres.catalog import from_spec

    return tuple(from_spec(spec) for spec in getattr(config, "collector_specs", ()))


def collectors_with_user(config) -> tuple[Collector, ...]:
    """dbperf's own collectors and the user's, in that order (what a target may run)."""
    return all_collectors() + user_collectors(config)


def collector_names() -> frozenset[str]:
    return frozenset(c.name for c in all_collectors())


def get(name: str) -> Collector:
    return next(c for c in all_collectors() if c.name == name)


def builtin_family_names() -> dict:
    """Family name -> built-in collector, for every family dbperf's own collectors document (a
    user's collector file may not reuse one)."""
    return {name: c.name for c in all_collectors() for name, *_ in c.documented() if not name.endswith("*")} | {
        "pg_up": "scrape"}
