"""``dbperf check-config --connect``: one scrape of every target, by the same engine as ``dbperf
serve``, and what it found: the server, and for each collector whether it runs there, is not
available (and why) or failed (and why: the engine's outcome of that collector). A target whose
DSN is missing or whose server cannot be reached is a failure: one line naming the target."""

from __future__ import annotations

import logging

from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import DATABASE
from exporter.config import Config, Target
from exporter.secrets import describe_dsn


def server_version(num: int) -> str:
    """``160004`` -> ``16.4``, ``90624`` -> ``9.6.24``."""
    if num >= 100000:
        return f"{num // 10000}.{num % 10000}"
    return f"{num // 10000}.{num // 100 % 100}.{num % 100}"


def _successes(text: str) -> dict[tuple[str, str], bool]:
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == "dbperf_collector_success":
            for sample in family.samples:
                out[(sample.labels.get("collector", ""), sample.labels.get("datname", ""))] = sample.value == 1
    return out


def _served(text: str) -> set[str]:
    """The families a scrape served samples of (``x_total`` for counters, as documented)."""
    return {f.name + "_total" if f.type == "counter" else f.name
            for f in text_string_to_metric_families(text) if f.samples}


def _scrape(target: Target, budget: float, config=None) -> tuple:
    """``(scraper, successes, reasons, unsupported, served)`` of one scrape by the engine of
    ``dbperf serve``: ``scraper.server`` is None when it was not reached (``scraper.failure``
    says why); ``reasons``: why each failed collector failed, by ``(collector, datname)``, from
    the engine's outcomes; ``unsupported`` says why a collector cannot run on the server;
    ``served`` has the names of the families served."""
    from exporter.registry import collectors_for
    from exporter.scrape import TargetScraper

    if getattr(target, "server_log", None) is not None:  # a check reads the log, it never moves serve's position
        from dataclasses import replace

        target = replace(target, server_log=replace(target.server_log, keep_position=False))
    scraper = TargetScraper(target, collectors_for(target, config))
    logger, quiet = logging.getLogger("dbperf"), logging.NullHandler()
    propagate = logger.propagate
    logger.addHandler(quiet)
    logger.propagate = False  # the reasons are printed below, not logged as well
    try:
        text = scraper.scrape(budget).encode().decode()
        reasons = {(o.collector, o.datname): o.error for o in scraper.outcomes if not o.success and o.error}
        return scraper, _successes(text), reasons, dict(scraper.unsupported), _served(text)
    finally:
        logger.removeHandler(quiet)
        logger.propagate = propagate
        scraper.close()


def _collector_lines(target: Target, collectors, server, successes: dict, reasons: dict,
                     unsupported: dict) -> list[str]:
    lines = []
    for c in collectors:
        settings = target.collector(c.name, c.enabled_by_default)
        if not settings.enabled:
            lines.append(f"  {c.name}: disabled")
            continue
        why_not = c.applies(server) or next((why for (name, _), why in unsupported.items() if name == c.name), None)
        if why_not:
            lines.append(f"  {c.name}: not available: {why_not}")
            continue
        runs = {datname: ok for (name, datname), ok in successes.items() if name == c.name}
        failed = sorted(datname for datname, ok in runs.items() if not ok)
        if not runs:
            lines.append(f"  {c.name}: did not run")
        elif not failed:
            where = f" (on {len(runs)} databases)" if c.scope == DATABASE and len(runs) > 1 else ""
            lines.append(f"  {c.name}: runs{where}")
        for datname in failed:
            reason = reasons.get((c.name, datname), "failed")
            where = f" on database {datname}" if datname else ""
            if c.name == "statements" and "pg_stat_statements" in reason:
                lines.append(f"  {c.name}: not available{where}: {reason}")
            else:
                lines.append(f"  {c.name}: failed{where}: {reason}")
    return lines


def _not_served(target: Target, collectors, server, unsupported: dict, served: set) -> list[str]:
    """What the collectors that run document but this server did not serve in the scrape (its
    version or role lacks the data, or there is none yet): what its dashboards will miss."""
    from exporter.docs import documented

    missing, total, absent_count = [], 0, 0
    for c in collectors:
        if not target.collector(c.name, c.enabled_by_default).enabled or c.applies(server):
            continue
        if any(name == c.name for name, _ in unsupported):
            continue
        names = [name for name, *_ in documented(c) if not name.endswith("*")]
        total += len(names)
        absent = [name for name in names if name not in served]
        if absent:
            absent_count += len(absent)
            missing.append(f"- {c.name}: {', '.join(absent)}")
    if not missing:
        return [f"families served: all {total} the running collectors document"]
    return [f"families served: {total - absent_count} of the {total} the running collectors document; not served by "
            f"this server now (not in PostgreSQL {server.version // 10000}, not on a "
            f"{'replica' if server.in_recovery else 'primary'}, or no such data yet):", *missing]


def check_target(target: Target, budget: float, config=None) -> tuple[list[str], str]:
    """``(lines for stdout, failure)``: failure is "" when the target was reached."""
    if target.dsn_missing:
        return [f"\ntarget {target.name}: not connected: its DSN is missing"], f"--connect: {target.dsn_missing}"
    scraper, successes, reasons, unsupported, served = _scrape(target, budget, config)
    server, collectors = scraper.server, scraper.collectors
    where = describe_dsn(target.dsn, target.kind)
    if server is None:
        reason = scraper.failure or "no answer"
        if not reason.startswith("cannot connect"):
            reason = f"cannot connect to {where}: {reason}"
        return [f"\ntarget {target.name}: cannot connect to {where}"], f"--connect: target {target.name!r}: {reason}"
    if not scraper.kind.discovers_databases:  # PgBouncer: its admin console and its collectors
        head = f"\ntarget {target.name}: connected to {scraper.kind.describe(server)} ({where})"
        return [head, *_collector_lines(target, collectors, server, successes, reasons, unsupported)], ""
    databases = [d for d in server.databases if d == server.dbname
                 or (target.databases.discover and target.databases.wanted(d))]
    head = (f"\ntarget {target.name}: connected to PostgreSQL {server_version(server.version)} "
            f"({'replica' if server.in_recovery else 'primary'}) at {where}; "
            f"databases covered: {', '.join(databases)}")
    return [head, *_collector_lines(target, collectors, server, successes, reasons, unsupported),
            *_not_served(target, collectors, server, unsupported, served), _series(scraper),
            *_server_log(target)], ""


def _server_log(target: Target) -> list[str]:
    """For a target with ``server_log:``: the logging settings that are off (exporter.serverlog.settings)."""
    if getattr(target, "server_log", None) is None:
        return []
    from exporter.postgres.connection import Connection
    from exporter.serverlog import settings

    conn = Connection(target.dsn, None, target.connect_timeout, statement_timeout=5.0)
    try:
        found = settings.off(settings.read(conn), target.server_log.format)
    except Exception as exc:
        return [f"server log settings: cannot be read: {conn.scrub(' '.join(str(exc).split()))[:300]}"]
    finally:
        conn.close()
    if not found:
        return ["server log settings: every setting the server_log metrics need is on"]
    return ["server log settings off (their metrics stay empty):", *(f"  - {line}" for line in found)]


def _series(scraper) -> str:
    """The series the target costs and whether its max_series cuts (exporter.postgres.budget)."""
    from exporter.postgres.budget import SeriesBudget

    budget = next((c.budget for c in scraper.collectors if isinstance(getattr(c, "budget", None), SeriesBudget)), None)
    if budget is None:
        return f"series: {sum(scraper.served.values()):,} in this scrape"
    return budget.estimate(scraper.target, scraper.served)


def check_targets(config: Config, out=None) -> list[str]:
    """Prints what each target runs (to ``out``, default stdout); returns one line per failed target."""
    import sys

    out = out or sys.stdout
    failures = []
    for target in config.targets:
        lines, failure = check_target(target, config.scrape_timeout, config)
        out.write("\n".join(lines) + "\n")
        out.flush()
        if failure:
            failures.append(failure)
    return failures
