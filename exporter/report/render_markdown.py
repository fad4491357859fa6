"""The report as Markdown (chat, tickets); ``summary_markdown`` is the short form for webhooks."""

from __future__ import annotations

from exporter.report.render_common import (bytes_h, change, dur, left_out_text, no_data, num, pct, projection_cell,
                                           short_query, when)


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines + [""]


def _section_missing(section: dict, key_fields: list[str]) -> bool:
    """True when every figure of the section is absent (all its metrics missing)."""
    return all(not section.get(k) for k in key_fields)


def summary_lines(r: dict) -> list[str]:
    s = r["sections"]["summary"]
    lines = [f"- Queries: **{num(s['queries'])}**, statement time {dur(s['statement_seconds'])}, "
             f"mean {dur(s['mean_latency_seconds'])}, p95 {dur(s['p95_latency_seconds'])}, p99 {dur(s['p99_latency_seconds'])}",
             f"- Transactions: {num(s['transactions'])} ({num(s['rollbacks'])} rollbacks, {pct(s['rollback_ratio'], 2)}"
             + (f"; {num(s['failed_rollbacks'])} without a client ROLLBACK, {pct(s['failed_rollback_ratio'], 2)}"
                if s.get("failed_rollbacks") is not None else "") + "); "
             f"deadlocks {num(s['deadlocks'])}; cache hit ratio {pct(s['cache_hit_ratio'], 2)}"]
    if s["availability"]:
        lines.append("- Availability: " + ", ".join(f"{a['target']} {pct(a['ratio'], 2)}" for a in s["availability"]))
    if s["connections"]:
        lines.append("- Connections peak: " + ", ".join(
            f"{c['target']} {num(c['peak'])}/{num(c['limit'])} ({pct(c['peak_ratio'])})" for c in s["connections"]))
    if s["database_size"]:
        lines.append("- Database size: " + ", ".join(
            f"{d['datname']} {bytes_h(d['last_bytes'])} ({'+' if (d['growth_bytes'] or 0) >= 0 else ''}{bytes_h(d['growth_bytes'])})"
            for d in s["database_size"]))
    app = r["sections"]["application"]
    if app["requests"] is not None:
        lines.append(f"- HTTP: {num(app['requests'])} requests, error ratio {pct(app['error_ratio'], 2)}")
    if s["missing"]:
        lines.append(f"- Not available: {', '.join(s['missing'])}")
    return lines


def summary_markdown(r: dict) -> str:
    """The short form posted to a webhook: headline figures, anomalies, recommendations."""
    target = f" — target {r['target']}" if r["target"] else ""
    lines = [f"*dbperf report* {r['period']['label']}{target}"] + summary_lines(r)
    found = r["sections"]["anomalies"]["found"]
    lines.append(f"- Anomalies: {len(found)}" + (": " + "; ".join(
        f"{a['title']} at {when(a['peak_time'])} ({a['size'].split(' (')[0]})" for a in found[:5]) if found else ""))
    alerts = r["sections"]["alerts"]["fired"]
    lines.append(f"- Alerts fired: {len(alerts)}")
    for rec in r["sections"]["recommendations"][:5]:
        lines.append(f"- [{rec['severity']}] {rec['text']} ({rec['evidence']})")
    return "\n".join(lines)


def _label(r: dict) -> str:
    return "" if ".." in r["period"]["label"] else f" ({r['period']['label']})"


def render_markdown(r: dict) -> str:
    sec = r["sections"]
    target = f", target `{r['target']}`" if r["target"] else ""
    out = ["# Database performance report", "",
           f"Period: **{r['period']['start']} to {r['period']['end']}**{_label(r)}{target}  ",
           f"Prometheus: {r['prometheus']['url']} (version {r['prometheus']['version']})", "",
           "## Summary", ""] + summary_lines(r) + [""]

    out += ["## Top statements", ""]
    st = sec["statements"]
    if st["missing"]:
        out += [no_data(st["missing"]), ""]
    else:
        if left_out_text(st):
            out += [left_out_text(st), ""]
        for title, key in (("By total time", "by_total_time"), ("By mean time", "by_mean_time"), ("By calls", "by_calls")):
            out += [f"### {title}", ""]
            out += _table(["queryid", "db", "calls", "total", "mean", "share", "vs previous (total / mean / calls)", "query"],
                          [[f"`{q['queryid']}`", q["datname"], num(q["calls"]), dur(q["total_seconds"]), dur(q["mean_seconds"]),
                            pct(q["share_of_time"]),
                            f"{change(q['total_seconds_change'])} / {change(q['mean_seconds_change'])} / {change(q['calls_change'])}",
                            f"`{short_query(q['query'], 60)}`" if q["query"] else ""] for q in st[key]])

    out += ["## Application", ""]
    app = sec["application"]
    if app["requests"] is None:
        out += [no_data(app["missing"]), ""]
    else:
        out += [f"{num(app['requests'])} requests, {num(app['errors'])} server errors ({pct(app['error_ratio'], 2)}). "
                f"Slowest endpoints (p95): {', '.join(app['slowest']) or 'n/a'}.", ""]
        out += _table(["endpoint", "requests", "5xx", "error ratio", "p95"],
                      [[f"`{e['handler']}`", num(e["requests"]), num(e["errors"]), pct(e["error_ratio"], 2), dur(e["p95_seconds"])]
                       for e in app["endpoints"]])
        if app["n_plus_one"]:
            out += ["N+1 findings:", ""] + _table(["endpoint", "statement fingerprint", "requests"],
                                                  [[f"`{n['handler']}`", f"`{n['fingerprint']}`", num(n["requests"])] for n in app["n_plus_one"]])

    out += ["## Pipelines", ""]
    pipes = sec["pipelines"]
    if pipes["runs"] is None:
        out += [no_data(pipes["missing"]), ""]
    else:
        out += [f"{num(pipes['runs'])} runs, {num(pipes['failures'])} failed (success rate {pct(pipes['success_rate'])}). "
                f"Stale: {', '.join(pipes['stale']) or 'none'}.", ""]
        out += _table(["pipeline", "runs", "failed", "success", "mean duration", "vs previous", "last success", "stale"],
                      [[p["pipeline"], p["runs"], p["failures"], pct(p["success_rate"]), dur(p["mean_duration_seconds"]),
                        change(p["duration_change"]), when(p["last_success"]), "**yes**" if p["stale"] else "no"]
                       for p in pipes["pipelines"]])

    out += ["## Resources", ""]
    res = sec["resources"]
    if not (res["cpu"] or res["memory"] or res["filesystems"]):
        out += [no_data(res["missing"]), ""]
    else:
        for c in res["cpu"]:
            out.append(f"- CPU, {c['host']}: mean {pct(c['mean'])}, peak {pct(c['peak'])}")
        for m in res["memory"]:
            out.append(f"- Memory, {m['host']}: available min {pct(m['min_available_ratio'])}, mean {pct(m['mean_available_ratio'])}")
        out.append("")
        if res["filesystems"]:
            out += _table(["host", "mount", "free now", "used growth", "free change/day", "projected full"],
                          [[f["host"], f["mountpoint"], bytes_h(f["last_avail_bytes"]), bytes_h(f["used_growth_bytes"]),
                            bytes_h(f["avail_change_bytes_per_day"]), projection_cell(f)]
                           for f in res["filesystems"]])
        if res["missing"]:
            out += [f"Not available: {', '.join(res['missing'])}", ""]

    out += ["## Alerts fired", ""]
    alerts = sec["alerts"]
    if alerts["fired"]:
        out += _table(["alert", "severity", "from", "to", "duration", "labels"],
                      [[a["alertname"], a["severity"] or "", when(a["start"]), when(a["end"]), dur(a["duration_seconds"]),
                        ", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "severity"))]
                       for a in alerts["fired"]])
    else:
        out += ["None." + (" (no ALERTS series in Prometheus for this period)" if alerts["missing"] else ""), ""]

    out += ["## Anomalies", ""]
    an = sec["anomalies"]
    if an["found"]:
        out += _table(["when", "series", "size", "likely cause"],
                      [[f"{when(a['start'])} – {when(a['end'])[11:]}", a["title"], a["size"], "; ".join(a["causes"])]
                       for a in an["found"]])
    else:
        out += ["None found.", ""]
    if an["missing"]:
        out += [f"Not checked (no data): {', '.join(an['missing'])}", ""]
    out += [f"Method: robust z-score (median, MAD) over the previous {an['method']['trailing_points']} points "
            f"and the same hour of previous days, threshold {an['method']['z_threshold']:g} (docs/reports.md).", ""]

    out += ["## Recommendations", ""]
    recs = sec["recommendations"]
    out += [f"- **{r_['severity']}** ({r_['area']}): {r_['text']} — {r_['evidence']}" for r_ in recs] or ["Nothing to recommend."]
    adv = sec["advisor"]
    if adv["findings"]:
        out += ["", "Advisor findings:", ""] + _table(["check", "kind", "severity", "database", "count"],
                                                      [[f["check"], f["kind"], f["severity"], f["datname"], num(f["count"])]
                                                       for f in adv["findings"]])
    return "\n".join(out).rstrip() + "\n"
