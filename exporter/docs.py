"""The metrics reference in README.md, generated from the code so it cannot drift.

``python -m exporter.docs`` prints it; ``python -m exporter.docs --write`` replaces the part of
README.md between the ``metrics:begin`` and ``metrics:end`` markers, and the per-version family
table between ``versions:begin`` and ``versions:end``. A test fails when they differ.

Which PostgreSQL majors serve each family is not guessed from the SQL: it is what real servers of
every major served in the version matrix (``tests/test_versions.py``), kept in
``docs/postgres-versions.json``. When the matrix finds a change it writes what it saw to a file and
fails; ``python -m exporter.docs --versions FILE`` takes that file in and rewrites README.md.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from exporter.config import Target
from exporter.host import collect_host
from exporter.postgres.catalog import CatalogCollector
from exporter.registry import all_collectors
from exporter.scrape import TargetScraper

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VERSIONS_FILE = ROOT / "docs" / "postgres-versions.json"
BEGIN, END = "<!-- metrics:begin -->", "<!-- metrics:end -->"
VERSIONS_BEGIN, VERSIONS_END = "<!-- versions:begin -->", "<!-- versions:end -->"
SETTINGS = "pg_settings_*"  # the settings collector's families, one per setting


def documented(collector) -> list[tuple[str, str, tuple, str]]:
    """``(name, type, labels, help)`` of every family ``collector`` documents, in order."""
    return collector.documented()


def load_versions(path: Path = VERSIONS_FILE) -> dict:
    """The version matrix's last result: ``{"servers": {major: version}, "families": {name:
    [majors]}, "settings": {major: count}, "not_in_matrix": {name: why}}`` (empty when missing)."""
    return json.loads(path.read_text()) if path.exists() else {}


def dump_versions(data: dict) -> str:
    """The matrix result as JSON, one family per line (reviewable diffs)."""
    parts = []
    for key, value in data.items():
        if isinstance(value, dict) and value:
            body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            parts.append(f" {json.dumps(key)}: {{\n{body}\n }}")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def majors_text(majors, all_majors) -> str:
    """``[14, 15, 16, 17, 18]`` of 13..18 -> ``14+``; ``[13, 14, 15, 16]`` -> ``13-16``."""
    majors, all_majors = sorted(majors), sorted(all_majors)
    if not majors:
        return ""
    if majors == all_majors:
        return "all"
    lo, hi = all_majors.index(majors[0]), all_majors.index(majors[-1])
    if majors == all_majors[lo:hi + 1]:
        return f"{majors[0]}+" if majors[-1] == all_majors[-1] else f"{majors[0]}-{majors[-1]}"
    return ", ".join(map(str, majors))


def family_versions(name: str, collector, versions: dict) -> str:
    """The majors that serve ``name``, for the reference's PostgreSQL column."""
    all_majors = [int(m) for m in versions.get("servers", {})]
    if not all_majors:
        return ""
    served = versions.get("families", {}).get(name)
    if name == SETTINGS:
        served = [int(m) for m, count in versions.get("settings", {}).items() if count]
    why = versions.get("not_in_matrix", {}).get(name)
    if served:
        return majors_text(served, all_majors)
    if why and isinstance(collector, CatalogCollector):  # from its SQL: the matrix cannot show it
        planned = [m for m in all_majors if name in collector.families_for(m * 10000)]
        return f"{majors_text(planned, all_majors)} ({why})"
    return f"({why})" if why else "none"


def _row(name, mtype, labels, help_, pg=None) -> str:
    labels = ", ".join(f"`{label}`" for label in labels) if labels else ""
    pg = "" if pg is None else f" {pg} |"
    return f"| `{name}` | {mtype} | {labels} |{pg} {help_.replace('|', '/')} |"


def collector_rows(collector, versions: dict | None = None) -> list[str]:
    versions = load_versions() if versions is None else versions
    with_pg = bool(versions.get("servers"))
    return [_row(name, mtype, labels, help_, family_versions(name, collector, versions) if with_pg else None)
            for name, mtype, labels, help_ in documented(collector)]


def reference(versions: dict | None = None) -> str:
    versions = load_versions() if versions is None else versions
    out = ["Every series from a target also carries a `target` label (the target's name)."]
    if versions.get("servers"):
        out += ["", "The PostgreSQL column says which majors serve the family: what real servers of each "
                "major served in the version matrix (`tests/test_versions.py`); a note in brackets for "
                "families the matrix's single primary cannot show."]
    out.append("")
    header = ["| metric | type | labels | meaning |", "|---|---|---|---|"]
    pg_header = (["| metric | type | labels | PostgreSQL | meaning |", "|---|---|---|---|---|"]
                 if versions.get("servers") else header)
    for collector in all_collectors():
        on = "on" if collector.enabled_by_default else "off"
        ttl = f", cached {collector.default_ttl:g}s" if collector.default_ttl else ""
        out += [f"#### `{collector.name}` ({collector.scope}, {on} by default{ttl})", "", collector.help, ""]
        out += pg_header + collector_rows(collector, versions) + [""]
    scraper = TargetScraper(Target(name="docs", dsn="host=localhost"), ())
    self_families = scraper._self_metrics(None, [], 0.0)
    scraper.close()
    out += ["#### Self-metrics (every target, always)", ""] + header
    out += [_row(f.name, f.type, f.labelnames, f.help) for f in self_families]
    from exporter.postgres.catalog import TRUNCATED, TRUNCATED_HELP

    out += [_row(TRUNCATED, "gauge", ("collector", "datname"), "User collectors (collector_files) only: " + TRUNCATED_HELP)]
    from exporter.postgres.relations import FOLDED, FOLDED_HELP

    out += [_row(FOLDED, "gauge", ("collector", "datname"), "The per-relation collectors (tables, table_sizes, "
                 "indexes) only, one series per database: " + FOLDED_HELP)]
    out += [_row("dbperf_build_info", "gauge", ("version", "python_version"), "dbperf version and Python version; always 1."),
            _row("process_*, python_*", "", (), "The exporter's own process (CPU, memory, file descriptors), from prometheus-client."),
            ""]
    from exporter.pgbouncer import PgBouncerCollector

    out += ["#### `pgbouncer` (targets with `kind: pgbouncer`; see docs/pgbouncer.md)", ""] + header
    out += [_row(f.name, f.type, f.labelnames, f.help) for f in PgBouncerCollector().describe()] + [""]
    from exporter.mysql.kind import MYSQL

    out += ["#### `mysql` (targets with `kind: mysql`: MySQL 8 and MariaDB 10.6+; see docs/mysql.md)", "",
            "Served beside the self-metrics, always:", ""] + header
    out += [_row(MYSQL.up_metric, "gauge", (), MYSQL.up_help)]
    for collector in MYSQL.collectors():
        ttl = f", cached {collector.default_ttl:g}s" if collector.default_ttl else ""
        out += ["", f"`{collector.name}` ({'on' if collector.enabled_by_default else 'off'} by default{ttl}): "
                f"{collector.help}", ""] + header
        out += [_row(name, mtype, labels, help_) for name, mtype, labels, help_ in documented(collector)]
    out.append("")
    out += ["#### `host` (on `/metrics` only; `host_metrics: false` turns it off)", ""] + header
    out += [_row(f.name, f.type, f.labelnames, f.help) for f in collect_host()]
    out += [_row("dbperf_host_collector_success", "gauge", (), "1 when the host collector succeeded."),
            _row("dbperf_host_collector_duration_seconds", "gauge", (), "Time the host collector took.")]
    return "\n".join(out).rstrip() + "\n"


def versions_table(versions: dict | None = None) -> str:
    """The families that not every major serves, family x major, from the matrix's result."""
    versions = load_versions() if versions is None else versions
    servers = versions.get("servers", {})
    if not servers:
        return "No version matrix result yet: run `pytest tests/test_versions.py`.\n"
    majors = [int(m) for m in servers]
    families = versions.get("families", {})
    owner = {name: c for c in all_collectors() for name, *_ in documented(c)}
    partial = sorted(n for n, served in families.items() if sorted(served) != sorted(majors))
    absent = sorted(n for n in versions.get("not_in_matrix", {}) if n not in families)
    out = [f"Served by real PostgreSQL {', '.join(servers.values())} in the version matrix "
           f"(`tests/test_versions.py`, one primary per major with pg_stat_statements). "
           f"{sum(1 for s in families.values() if sorted(s) == sorted(majors))} families are served by "
           f"every major; these are not (x: served):", "",
           "| family | collector | " + " | ".join(map(str, majors)) + " |",
           "|---|---|" + "---|" * len(majors)]
    for name in partial:
        served = set(families[name])
        collector = owner[name].name if name in owner else ""
        out.append(f"| `{name}` | {collector} | " + " | ".join("x" if m in served else "" for m in majors) + " |")
    counts = versions.get("settings", {})
    out.append(f"| `{SETTINGS}` (number of settings) | settings | " + " | ".join(str(counts.get(str(m), "")) for m in majors) + " |")
    if absent:
        out += ["", "Not in the table, as the matrix's single primary cannot show them (the reference "
                "gives the majors their SQL covers):", ""]
        reasons: dict[str, list[str]] = {}
        for name in absent:
            reasons.setdefault(versions["not_in_matrix"][name], []).append(f"`{name}`")
        out += [f"- {why}: {', '.join(names)}" for why, names in reasons.items()]
    return "\n".join(out) + "\n"


def _section(text: str, begin: str, end: str) -> str:
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[start:stop].strip("\n") + "\n"


def readme_section(text: str) -> str:
    return _section(text, BEGIN, END)


def readme_versions_section(text: str) -> str:
    return _section(text, VERSIONS_BEGIN, VERSIONS_END)


def _replace(text: str, begin: str, end: str, body: str) -> str:
    start, stop = text.index(begin) + len(begin), text.index(end)
    return text[:start] + "\n" + body + text[stop:]


def write() -> None:
    text = _replace(README.read_text(), BEGIN, END, reference())
    if VERSIONS_BEGIN in text:
        text = _replace(text, VERSIONS_BEGIN, VERSIONS_END, versions_table())
    README.write_text(text)


def take_versions(path: str) -> None:
    """``--versions FILE``: the matrix's result becomes the committed one; README follows."""
    data = load_versions(Path(path))
    if not data.get("servers") or not data.get("families"):
        raise SystemExit(f"{path}: not a version matrix result (no servers or families)")
    if Path(path).resolve() != VERSIONS_FILE.resolve():
        shutil.copyfile(path, VERSIONS_FILE)
    write()


if __name__ == "__main__":
    if "--versions" in sys.argv:
        index = sys.argv.index("--versions")
        if index + 1 >= len(sys.argv):
            raise SystemExit("--versions needs the matrix's result file: python -m exporter.docs --versions FILE")
        take_versions(sys.argv[index + 1])
    elif "--write" in sys.argv:
        write()
    else:
        sys.stdout.write(reference())
