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


def _scrape(target: Target, budget: float) -> tuple[object, dict, dict]:
    """``(server, successes, reasons)`` of one scrape; ``server`` is None when it was not reached."""
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
        return scraper.server, _successes(text), handler.reasons
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        scraper.close()


def _collector_lines(target: Target, server, successes: dict, reasons: dict) -> list[str]:
    lines = []
    for c in all_collectors():
        settings = target.collector(c.name, c.enabled_by_default)
        if not settings.enabled:
            lines.append(f"  {c.name}: disabled")
            continue
        why_not = c.applies(server)
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


def check_target(target: Target, budget: float) -> tuple[list[str], str]:
    """``(lines for stdout, failure)``: failure is "" when the target was reached."""
    if target.dsn_missing:
        return [f"\ntarget {target.name}: not connected: its DSN is missing"], f"--connect: {target.dsn_missing}"
    server, successes, reasons = _scrape(target, budget)
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
    return [head, *_collector_lines(target, server, successes, reasons)], ""


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
