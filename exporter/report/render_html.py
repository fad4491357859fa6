"""The report as one self-contained HTML file: inline CSS, inline SVG charts, no script, no font,
no external resource (a Content-Security-Policy forbids them), readable in a browser and in email."""

from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from exporter.report.render_common import (bytes_h, change, dur, left_out_text, no_data, num, pct, projection_cell,
                                           short_query, when)

CSS = """
body{font:14px/1.45 -apple-system,'Segoe UI',Helvetica,Arial,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1080px;margin:0 auto;padding:24px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}.meta{color:#57606a;margin:0 0 16px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f6f8fa;padding:0 3px}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:8px 0}
.card{border:1px solid #d0d7de;border-radius:6px;padding:8px 12px;min-width:150px;flex:1}
.card b{display:block;font-size:20px}.card span{color:#57606a;font-size:12px}
.nodata{color:#57606a;font-style:italic}.up{color:#cf222e}.down{color:#1a7f37}
.sev-critical{color:#fff;background:#cf222e}.sev-warning{background:#fff8c5}.sev-info{background:#ddf4ff}
.sev{border-radius:4px;padding:0 6px;font-size:12px;font-weight:600}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{flex:0 1 calc(50% - 6px);min-width:360px}
.chart svg{width:100%;height:auto;border:1px solid #d0d7de;border-radius:6px;background:#fff}
.foot{color:#57606a;font-size:12px;margin-top:24px}
"""

CHARTS = [  # key, title, unit
    ("statements_per_second", "Statements per second", "count"),
    ("workload_p95_latency", "Workload p95 statement latency", "seconds"),
    ("connections_used", "Connections used", "count"),
    ("http_error_ratio", "HTTP error ratio (5xx)", "ratio"),
    ("cpu_use", "CPU use", "ratio"),
]


def _fmt(unit: str, value: float) -> str:
    if unit == "seconds":
        return dur(value)
    if unit == "ratio":
        return pct(value, 1)
    return num(value, 0 if abs(value) >= 10 else 1)


def svg_chart(points: list, unit: str, title: str, start: float, end: float, marks: list[tuple[float, float]]) -> str:
    width, height, left, right, top, bottom = 520, 170, 62, 20, 24, 28
    pts = [(t, v) for t, v in points if v is not None]
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">',
             f'<text x="{left}" y="15" font-size="13" font-weight="600" fill="#1f2328">{escape(title)}</text>']
    if not pts:
        parts.append(f'<text x="{left}" y="{top + plot_h / 2}" font-size="12" fill="#57606a">no data</text></svg>')
        return "".join(parts)
    vmax = max(v for _, v in pts)
    vmax = vmax * 1.1 if vmax > 0 else 1.0
    x = lambda t: left + (t - start) / (end - start) * plot_w  # noqa: E731
    y = lambda v: top + plot_h - v / vmax * plot_h  # noqa: E731
    for a, b in marks:
        xa, xb = max(left, x(a)), min(left + plot_w, x(b))
        parts.append(f'<rect x="{xa:.1f}" y="{top}" width="{max(xb - xa, 2):.1f}" height="{plot_h}" fill="#ffebe9"/>')
    for i in range(5):
        v = vmax * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eaeef2"/>'
                     f'<text x="{left - 4}" y="{y(v) + 4:.1f}" font-size="10" fill="#57606a" text-anchor="end">{escape(_fmt(unit, v))}</text>')
    span = end - start
    ticks = 6 if span <= 2 * 86400 else 7
    for i in range(ticks + 1):
        t = start + span * i / ticks
        label = datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M" if span <= 2 * 86400 else "%m-%d")
        parts.append(f'<text x="{x(t):.1f}" y="{height - 8}" font-size="10" fill="#57606a" text-anchor="middle">{label}</text>')
    path = " ".join(f"{'M' if i == 0 else 'L'}{x(t):.1f},{y(v):.1f}" for i, (t, v) in enumerate(pts))
    parts.append(f'<path d="{path}" fill="none" stroke="#0969da" stroke-width="1.5"/>')
    parts.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#d0d7de"/></svg>')
    return "".join(parts)


def _table(headers: list[str], rows: list[list], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f'<td{" class=n" if i in numeric else ""}>{c}</td>' for i, c in enumerate(row)) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _e(value) -> str:
    return escape(str(value))


def _chg(value) -> str:
    text = change(value)
    if value is None or abs(value) < 0.05:
        return escape(text)
    return f'<span class="{"up" if value > 0 else "down"}">{escape(text)}</span>'


def _label(p: dict) -> str:
    return "" if ".." in p["label"] else f" ({_e(p['label'])})"


def _nodata(missing: list[str]) -> str:
    return f'<p class="nodata">{escape(no_data(missing))}</p>'


def render_html(r: dict) -> str:
    sec = r["sections"]
    p = r["period"]
    s = sec["summary"]
    app = sec["application"]
    target = f", target <code>{_e(r['target'])}</code>" if r["target"] else ""
    h = ["<h1>Database performance report</h1>",
         f'<p class="meta">{_e(p["start"])} to {_e(p["end"])}{_label(p)}{target} · Prometheus {_e(r["prometheus"]["url"])}</p>']

    cards = [("queries", num(s["queries"])), ("mean latency", dur(s["mean_latency_seconds"])),
             ("p95 / p99", f"{dur(s['p95_latency_seconds'])} / {dur(s['p99_latency_seconds'])}"),
             ("transactions", num(s["transactions"])), ("rollbacks" + (f", {num(s['failed_rollbacks'])} without a client ROLLBACK" if s.get("failed_rollbacks") is not None
                           else ""), f"{num(s['rollbacks'])} ({pct(s['rollback_ratio'], 2)})"),
             ("cache hit ratio", pct(s["cache_hit_ratio"], 2))]
    if app["requests"] is not None:
        cards += [("HTTP requests", num(app["requests"])), ("HTTP error ratio", pct(app["error_ratio"], 2))]
    cards += [("anomalies", str(len(sec["anomalies"]["found"]))), ("alerts fired", str(len(sec["alerts"]["fired"])))]
    h.append("<h2>Summary</h2><div class=cards>" + "".join(f"<div class=card><b>{escape(v)}</b><span>{escape(k)}</span></div>"
                                                          for k, v in cards) + "</div>")
    rows = [[_e(a["target"]), pct(a["ratio"], 2)] for a in s["availability"]]
    conn = {c["target"]: c for c in s["connections"]}
    rows = [row + ([f"{num(conn[row[0]]['peak'])} / {num(conn[row[0]]['limit'])} ({pct(conn[row[0]]['peak_ratio'])})"]
                   if row[0] in conn else ["n/a"]) for row in rows]
    h.append(_table(["target", "availability (pg_up)", "connections peak"], rows, {1, 2}))
    if s["database_size"]:
        h.append(_table(["target", "database", "size at start", "size at end", "growth", "growth/day"],
                        [[_e(d["target"]), _e(d["datname"]), bytes_h(d["first_bytes"]), bytes_h(d["last_bytes"]),
                          bytes_h(d["growth_bytes"]), bytes_h(d["growth_bytes_per_day"])] for d in s["database_size"]], {2, 3, 4, 5}))
    if s["missing"]:
        h.append(f'<p class="nodata">Not available: {escape(", ".join(s["missing"]))}</p>')

    marks = {}
    for a in sec["anomalies"]["found"]:
        marks.setdefault(a["series"], []).append((a["start"], a["end"]))
    charts = [f'<div class=chart>{svg_chart(r["series"].get(key, []), unit, title, p["start_timestamp"], p["end_timestamp"], marks.get(key, []))}</div>'
              for key, title, unit in CHARTS]
    h.append("<h2>Trends</h2><p class=meta>Shaded: anomalies.</p><div class=charts>" + "".join(charts) + "</div>")

    h.append("<h2>Recommendations</h2>")
    recs = sec["recommendations"]
    h.append(_table(["", "area", "recommendation", "because"],
                    [[f'<span class="sev sev-{_e(x["severity"])}">{_e(x["severity"])}</span>', _e(x["area"]), _e(x["text"]), _e(x["evidence"])]
                     for x in recs]) if recs else "<p>Nothing to recommend.</p>")

    h.append("<h2>Anomalies</h2>")
    an = sec["anomalies"]
    if an["found"]:
        h.append(_table(["when (UTC)", "series", "size", "likely cause"],
                        [[f"{when(a['start'])} – {when(a['end'])[11:]}", _e(a["title"]), _e(a["size"]),
                          "<br>".join(_e(c) for c in a["causes"])] for a in an["found"]]))
    else:
        h.append("<p>None found.</p>")
    if an["missing"]:
        h.append(f'<p class="nodata">Not checked (no data): {escape(", ".join(an["missing"]))}</p>')
    h.append(f'<p class=meta>Robust z-score (median and MAD) against the previous {an["method"]["trailing_points"]} points '
             f'and the same hour of previous days; threshold {an["method"]["z_threshold"]:g}.</p>')

    h.append("<h2>Top statements</h2>")
    st = sec["statements"]
    if st["missing"]:
        h.append(_nodata(st["missing"]))
    else:
        if left_out_text(st):
            h.append(f"<p class=meta>{_e(left_out_text(st))}</p>")
        for title, key in (("By total time", "by_total_time"), ("By mean time", "by_mean_time"), ("By calls", "by_calls")):
            h.append(f"<h3>{title}</h3>")
            h.append(_table(["queryid", "db", "calls", "total", "mean", "share", "total vs prev", "mean vs prev", "calls vs prev", "query"],
                            [[f"<code>{_e(q['queryid'])}</code>", _e(q["datname"]), num(q["calls"]), dur(q["total_seconds"]),
                              dur(q["mean_seconds"]), pct(q["share_of_time"]), _chg(q["total_seconds_change"]),
                              _chg(q["mean_seconds_change"]), _chg(q["calls_change"]),
                              f"<code>{_e(short_query(q['query'], 70))}</code>" if q["query"] else ""] for q in st[key]],
                            {2, 3, 4, 5, 6, 7, 8}))

    h.append("<h2>Application</h2>")
    if app["requests"] is None:
        h.append(_nodata(app["missing"]))
    else:
        h.append(f"<p>{num(app['requests'])} requests, {num(app['errors'])} server errors ({pct(app['error_ratio'], 2)}). "
                 f"Slowest endpoints (p95): {_e(', '.join(app['slowest']) or 'n/a')}.</p>")
        h.append(_table(["endpoint", "requests", "5xx", "error ratio", "p95"],
                        [[f"<code>{_e(e['handler'])}</code>", num(e["requests"]), num(e["errors"]), pct(e["error_ratio"], 2),
                          dur(e["p95_seconds"])] for e in app["endpoints"]], {1, 2, 3, 4}))
        if app["n_plus_one"]:
            h.append("<h3>N+1 findings</h3>" + _table(["endpoint", "statement fingerprint", "requests"],
                                                      [[f"<code>{_e(n['handler'])}</code>", f"<code>{_e(n['fingerprint'])}</code>",
                                                        num(n["requests"])] for n in app["n_plus_one"]], {2}))

    h.append("<h2>Pipelines</h2>")
    pipes = sec["pipelines"]
    if pipes["runs"] is None:
        h.append(_nodata(pipes["missing"]))
    else:
        h.append(f"<p>{num(pipes['runs'])} runs, {num(pipes['failures'])} failed (success rate {pct(pipes['success_rate'])}). "
                 f"Stale: {_e(', '.join(pipes['stale']) or 'none')}.</p>")
        h.append(_table(["pipeline", "runs", "failed", "success rate", "mean duration", "vs previous", "last success", "stale"],
                        [[_e(x["pipeline"]), x["runs"], x["failures"], pct(x["success_rate"]), dur(x["mean_duration_seconds"]),
                          _chg(x["duration_change"]), when(x["last_success"]),
                          '<span class="sev sev-critical">stale</span>' if x["stale"] else "no"] for x in pipes["pipelines"]],
                        {1, 2, 3, 4, 5}))

    h.append("<h2>Resources</h2>")
    res = sec["resources"]
    if not (res["cpu"] or res["memory"] or res["filesystems"]):
        h.append(_nodata(res["missing"]))
    else:
        rows = [[_e(c["host"]), "CPU use", f"mean {pct(c['mean'])}, peak {pct(c['peak'])}"] for c in res["cpu"]]
        rows += [[_e(m["host"]), "memory available", f"min {pct(m['min_available_ratio'])}, mean {pct(m['mean_available_ratio'])}"]
                 for m in res["memory"]]
        h.append(_table(["host", "resource", "period"], rows))
        if res["filesystems"]:
            h.append(_table(["host", "mount", "free now", "used growth", "free change/day", "projected full"],
                            [[_e(f["host"]), f"<code>{_e(f['mountpoint'])}</code>", bytes_h(f["last_avail_bytes"]),
                              bytes_h(f["used_growth_bytes"]), bytes_h(f["avail_change_bytes_per_day"]), _e(projection_cell(f))]
                             for f in res["filesystems"]], {2, 3, 4}))
        if res["missing"]:
            h.append(f'<p class="nodata">Not available: {escape(", ".join(res["missing"]))}</p>')

    h.append("<h2>Alerts fired</h2>")
    alerts = sec["alerts"]
    if alerts["fired"]:
        h.append(_table(["alert", "severity", "from (UTC)", "to", "duration", "labels"],
                        [[_e(a["alertname"]), _e(a["severity"] or ""), when(a["start"]), when(a["end"]), dur(a["duration_seconds"]),
                          _e(", ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k not in ("alertname", "severity")))]
                         for a in alerts["fired"]], {4}))
    else:
        h.append("<p>None." + (" (no ALERTS series in Prometheus for this period)" if alerts["missing"] else "") + "</p>")
    adv = sec["advisor"]
    if adv["findings"]:
        h.append("<h2>Advisor findings</h2>" + _table(["check", "kind", "severity", "database", "count"],
                                                      [[_e(f["check"]), _e(f["kind"]), _e(f["severity"]), _e(f["datname"]), num(f["count"])]
                                                       for f in adv["findings"]], {4}))
    h.append(f'<p class=foot>Generated by dbperf report from {r["queries"]} Prometheus queries; step {p["step_seconds"]}s. '
             "Method and thresholds: docs/reports.md.</p>")
    csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
            '<meta name=viewport content="width=device-width,initial-scale=1">'
            f"<title>dbperf report {escape(p['start'][:10])} – {escape(p['end'][:10])}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(h)}</main></body></html>\n")
