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


def collector_names() -> frozenset[str]:
    return frozenset(c.name for c in all_collectors())


def get(name: str) -> Collector:
    return next(c for c in all_collectors() if c.name == name)
