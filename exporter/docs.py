"""The metrics reference in README.md, generated from the code so it cannot drift.

``python -m exporter.docs`` prints it; ``python -m exporter.docs --write`` replaces the part of
README.md between the ``metrics:begin`` and ``metrics:end`` markers. A test fails when they differ.
"""

from __future__ import annotations

import sys
from pathlib import Path

from exporter.config import Target
from exporter.host import collect_host
from exporter.postgres.catalog import CatalogCollector
from exporter.registry import all_collectors
from exporter.scrape import TargetScraper

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"


def _row(name, mtype, labels, help_) -> str:
    labels = ", ".join(f"`{label}`" for label in labels) if labels else ""
    return f"| `{name}` | {mtype} | {labels} | {help_.replace('|', '/')} |"


def collector_rows(collector) -> list[str]:
    if isinstance(collector, CatalogCollector):
        seen, rows = set(), []
        for query in collector.queries:
            for metric in query.metrics:
                if metric.name not in seen:
                    seen.add(metric.name)
                    rows.append(_row(metric.name, metric.type, metric.labels, metric.help))
        return rows
    describe = getattr(collector, "describe", None)
    if describe is not None:
        return [_row(f.name, f.type, f.labelnames, f.help) for f in describe()]
    return [_row(name, "gauge", (), collector.help) for name in collector.families]


def reference() -> str:
    out = ["Every series from a target also carries a `target` label (the target's name).", ""]
    header = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    for collector in all_collectors():
        on = "on" if collector.enabled_by_default else "off"
        ttl = f", cached {collector.default_ttl:g}s" if collector.default_ttl else ""
        out += [f"#### `{collector.name}` ({collector.scope}, {on} by default{ttl})", "", collector.help, ""]
        out += header + collector_rows(collector) + [""]
    scraper = TargetScraper(Target(name="docs", dsn="host=localhost"), ())
    self_families = scraper._self_metrics(None, [], 0.0)
    scraper.close()
    out += ["#### Self-metrics (every target, always)", ""] + header
    out += [_row(f.name, f.type, f.labelnames, f.help) for f in self_families]
    out += [_row("dbperf_build_info", "gauge", ("version", "python_version"), "dbperf version and Python version; always 1."),
            _row("process_*, python_*", "", (), "The exporter's own process (CPU, memory, file descriptors), from prometheus-client."),
            ""]
    from exporter.pgbouncer import PgBouncerCollector

    out += ["#### `pgbouncer` (targets with `kind: pgbouncer`; see docs/pgbouncer.md)", ""] + header
    out += [_row(f.name, f.type, f.labelnames, f.help) for f in PgBouncerCollector().describe()] + [""]
    out += ["#### `host` (on `/metrics` only; `host_metrics: false` turns it off)", ""] + header
    out += [_row(f.name, f.type, f.labelnames, f.help) for f in collect_host()]
    out += [_row("dbperf_host_collector_success", "gauge", (), "1 when the host collector succeeded."),
            _row("dbperf_host_collector_duration_seconds", "gauge", (), "Time the host collector took.")]
    return "\n".join(out).rstrip() + "\n"


def readme_section(text: str) -> str:
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    return text[start:end].strip("\n") + "\n"


def write() -> None:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + reference() + text[end:])


if __name__ == "__main__":
    if "--write" in sys.argv:
        write()
    else:
        sys.stdout.write(reference())
