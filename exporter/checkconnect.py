"""``dbperf check-config --connect``: one scrape of every target, by the same engine as ``dbperf
serve``, and what it found: the server, and for each collector whether it runs there, is not
available (and why) or failed (and why). A target whose DSN is missing or whose server cannot be
reached is a failure: one line naming the target."""

from __future__ import annotations

import logging
import re

from prometheus_client.parser import text_string_to_metric_families

from exporter.collector import DATABASE
from exporter.config import Config, Target
from exporter.registry import all_collectors
from exporter.secrets import describe_dsn

# the scrape engine logs a failure as "target=... collector=... failed: REASON (repeats are ...)"
_FAILED = re.compile(r"\bfailed: (.*?)(?: \(repeats are logged[^)]*\))?$")


class _Reasons(logging.Handler):
    """The failure messages the engine logs during one scrape, by (collector, datname)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.reasons: dict[tuple[str, str], str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        collector = getattr(record, "collector", None)
        if not collector:
            return
        message = record.getMessage()
        match = _FAILED.search(message)
        key = (collector, getattr(record, "datname", "") or "")
        self.reasons.setdefault(key, match.group(1) if match else message)


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


def _scrape(target: Target, budget: float) -> tuple[object, dict, dict, dict, set]:
    """``(server, successes, reasons, unsupported, served)`` of one scrape: ``server`` is None when
    it was not reached; ``unsupported`` says why a collector cannot run on the server, by
    ``(collector, datname)``; ``served`` has the names of the families served."""
    from exporter.pgbouncer import PgBouncerScraper
    from exporter.scrape import TargetScraper

    scraper = PgBouncerScraper(target) if target.kind == "pgbouncer" else TargetScraper(target, all_collectors())
    handler = _Reasons()
    logger = logging.getLogger("dbperf")
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False  # the reasons are printed below, not logged as well
    try:
        text = scraper.scrape(budget).encode().decode()
        return (scraper.server, _successes(text), handler.reasons, dict(getattr(scraper, "unsupported", {})),
                _served(text))
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        scraper.close()


def _collector_lines(target: Target, server, successes: dict, reasons: dict, unsupported: dict) -> list[str]:
    lines = []
    for c in all_collectors():
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
            # a database that refuses connections is logged once for all its collectors
            reason = reasons.get((c.name, datname)) or next(
                (why for (_, d), why in reasons.items() if datname and d == datname and why.startswith("cannot connect")),
                "failed")
            where = f" on database {datname}" if datname else ""
            if c.name == "statements" and "pg_stat_statements" in reason:
                lines.append(f"  {c.name}: not available{where}: {reason}")
            else:
                lines.append(f"  {c.name}: failed{where}: {reason}")
    return lines


def _not_served(target: Target, server, unsupported: dict, served: set) -> list[str]:
    """What the collectors that run document but this server did not serve in the scrape (its
    version or role lacks the data, or there is none yet): what its dashboards will miss."""
    from exporter.docs import documented

    missing, total, absent_count = [], 0, 0
    for c in all_collectors():
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


def check_target(target: Target, budget: float) -> tuple[list[str], str]:
    """``(lines for stdout, failure)``: failure is "" when the target was reached."""
    if target.dsn_missing:
        return [f"\ntarget {target.name}: not connected: its DSN is missing"], f"--connect: {target.dsn_missing}"
    server, successes, reasons, unsupported, served = _scrape(target, budget)
    where = describe_dsn(target.dsn)
    if server is None:
        reason = reasons.get(("up", ""), reasons.get(("pgbouncer", ""), "no answer"))
        if not reason.startswith("cannot connect"):
            reason = f"cannot connect to {where}: {reason}"
        return [f"\ntarget {target.name}: cannot connect to {where}"], f"--connect: target {target.name!r}: {reason}"
    if target.kind == "pgbouncer":
        ok = successes.get(("pgbouncer", ""), False)
        state = "runs" if ok else f"failed: {reasons.get(('pgbouncer', ''), 'failed')}"
        return [f"\ntarget {target.name}: connected to PgBouncer {server} ({where})", f"  pgbouncer: {state}"], ""
    databases = [d for d in server.databases if d == server.dbname
                 or (target.databases.discover and target.databases.wanted(d))]
    head = (f"\ntarget {target.name}: connected to PostgreSQL {server_version(server.version)} "
            f"({'replica' if server.in_recovery else 'primary'}) at {where}; "
            f"databases covered: {', '.join(databases)}")
    return [head, *_collector_lines(target, server, successes, reasons, unsupported),
            *_not_served(target, server, unsupported, served)], ""


def check_targets(config: Config, out=None) -> list[str]:
    """Prints what each target runs (to ``out``, default stdout); returns one line per failed target."""
    import sys

    out = out or sys.stdout
    failures = []
    for target in config.targets:
        lines, failure = check_target(target, config.scrape_timeout)
        out.write("\n".join(lines) + "\n")
        out.flush()
        if failure:
            failures.append(failure)
    return failures
