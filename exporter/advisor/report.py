"""Render findings as an aligned table (for people) or JSON with stable keys (for diffs and tools)."""

from __future__ import annotations

import json

from exporter.advisor import KINDS, SEVERITIES, sort_findings


def summary(findings) -> dict:
    out = {}
    for f in findings:
        out.setdefault(f.kind, {}).setdefault(f.severity, 0)
        out[f.kind][f.severity] += 1
    return {k: dict(sorted(v.items(), key=lambda kv: SEVERITIES.index(kv[0])))
            for k, v in sorted(out.items(), key=lambda kv: KINDS.index(kv[0]))}


def render_json(meta: dict, findings) -> str:
    findings = sort_findings(findings)
    doc = dict(meta)
    doc["summary"] = summary(findings)
    doc["findings"] = [f.as_dict() for f in findings]
    return json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n"


def human_size(size: int) -> str:
    if not size:
        return "-"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def human_time(ms: float) -> str:
    if not ms:
        return "-"
    if ms < 1000:
        return f"{ms:.1f} ms"
    return f"{ms / 1000:.1f} s"


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _meta_line(key: str, value) -> str:
    if key == "statements" and isinstance(value, dict):
        if not value.get("checked", True):
            return value["reason"]  # one line: why the statement checks did not run, how to enable them
        too_long = f"{value['too_long']} not checked (statement too long), " if value.get("too_long") else ""
        return (f"statements: {value.get('examined', 0)} examined, {value.get('unparsable', 0)} unparsable, "
                f"{too_long}{value.get('dbperf_own_skipped', 0)} of dbperf's own left out")
    if key == "samples" and isinstance(value, dict):
        return (f"samples: pg_stat_activity sampled for {value['seconds']:g} s ({value['taken']} samples, "
                f"{value['failed']} failed): {value['statements_seen']} running statement"
                f"{'' if value['statements_seen'] == 1 else 's'} seen, "
                f"{value.get('checked', 0)} checked with their literals ({value.get('unparsable', 0)} unparsable, "
                "e.g. cut at track_activity_query_size)"
                + ("" if value.get("redacted", True) else " (samples.redact is false: literals shown)"))
    if isinstance(value, dict):
        value = ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
    elif isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    return f"{key}: {value}"


def render_table(meta: dict, findings) -> str:
    findings = sort_findings(findings)
    lines = [f"dbperf advise: target {meta.get('target')} ({meta.get('server', '')})"]
    for key in ("databases", "statements", "samples", "skipped"):
        if meta.get(key):
            lines.append(_meta_line(key, meta[key]))
    if not findings:
        lines.append("no findings")
        return "\n".join(lines) + "\n"
    rows = [["#", "SEVERITY", "KIND", "CHECK", "DATABASE", "SUBJECT", "TIME", "SIZE"]]
    for i, f in enumerate(findings, 1):
        rows.append([str(i), f.severity, f.kind, f.check, f.database or "-", f.subject,
                     human_time(f.time_ms), human_size(f.size_bytes)])
    lines += [""] + _align(rows) + [""]
    for i, f in enumerate(findings, 1):
        lines.append(f"#{i} [{f.severity}] {f.message}")
        if f.details.get("query"):
            lines.append(f"    query: {f.details['query']}")
        lines.append(f"    fix: {f.recommendation}")
    counts = summary(findings)
    lines += ["", "summary: " + "; ".join(f"{k} " + ", ".join(f"{n} {s}" for s, n in v.items())
                                         for k, v in counts.items())]
    return "\n".join(lines) + "\n"
