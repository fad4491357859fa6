#!/usr/bin/env python3
"""One dbperf process for a fleet: N targets on /probe, scraped by the real Prometheus every 15 s
through file_sd, remote-written into the real VictoriaMetrics.

    python bench/fleet.py                                   # 200 targets, about 15 minutes
    python bench/fleet.py --clusters 2 --databases 100      # 200 targets on 2 servers
    python bench/fleet.py --steps 10,20 --window 60 --clusters 2 --databases 10 --output ''   # a quick look
    python bench/fleet.py --json > run.json; python bench/fleet.py --from-json run.json     # render again

Throwaway clusters (exporter.pgcluster.Cluster), each with ``--databases`` databases made from a
template with ``--tables`` tables, pg_stat_statements and a few distinct statements per database;
one target per database (its own DSN, ``databases: {discover: false}``). ``dbperf serve`` runs as
its own process with every target configured; the file_sd list then grows through ``--steps``
(e.g. 50, 100, 200 targets), and in each step, once every target has had its first scrapes,
dbperf's CPU and memory are read over ``--window`` seconds, with Prometheus's own record of every
scrape (up, scrape_duration_seconds against the 10 s timeout, samples). At the end
VictoriaMetrics says how many series it holds and how many bytes a stored sample takes, from
which the cost of one target per day is extrapolated. Results go to bench/FLEET.md (``--output``)
and, with ``--json``, to stdout; bench/FLEET.md also says how the figures are read.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for extra in (ROOT, ROOT / "tests", ROOT / "bench"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from conftest import Prometheus, wait_until  # noqa: E402
from exporter.pgcluster import Cluster  # noqa: E402
from fleetkit import (Dbperf, VictoriaMetrics, cluster_processes, exposition_sums, measure, probe_job,  # noqa: E402
                      prom_query, remote_write_to, scalar, scrape_health, up_count, usage_of, write_sd)
from scrape import machine  # noqa: E402

DEFAULT_TIMEOUT = 10.0  # Prometheus's default scrape_timeout (at most the interval)
DAY = 86400


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the fleet ---------------------------------------------------------------------------------

def build_cluster(index: int, databases: int, tables: int, built: list) -> None:
    """A started cluster appended to ``built`` (so that it is removed whatever happens next), then filled."""
    cluster = Cluster(settings={"max_connections": str(databases + 20), "shared_buffers": "32MB"})
    cluster.__enter__()
    names = [f"s{index:02d}_db{d:03d}" for d in range(databases)]
    built.append((cluster, names))
    with psycopg.connect(cluster.dsn("template1"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for t in range(tables):
            conn.execute(f"CREATE TABLE t{t} (id int PRIMARY KEY, a int, b text); CREATE INDEX ON t{t} (a);"
                         f"INSERT INTO t{t} SELECT g, g % 10, 'x' FROM generate_series(1, 100) g")
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE DATABASE {name}")
    for name in names:  # a distinct statement per table in every database, so pg_stat_statements has rows
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            for t in range(tables):
                conn.execute(f"SELECT count(*) FROM t{t} WHERE a = %s", (t,))
            conn.execute("ANALYZE")


def fleet(clusters: int, databases: int, tables: int, built: list) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        for future in [pool.submit(build_cluster, i, databases, tables, built) for i in range(clusters)]:
            future.result()
    built.sort(key=lambda item: item[1][0])


def interleave(built) -> list[tuple[str, str]]:
    """(target name, DSN), one cluster after the other in turn: every step spreads over all servers."""
    rows = []
    for d in range(max(len(names) for _, names in built)):
        for cluster, names in built:
            if d < len(names):
                rows.append((names[d].replace("_", "-"), cluster.dsn(names[d])))
    return rows


# -- one run -----------------------------------------------------------------------------------

def run(args) -> dict:
    started = time.monotonic()
    timeout = min(DEFAULT_TIMEOUT, args.interval)
    log(f"building {args.clusters} clusters x {args.databases} databases x {args.tables} tables")
    built: list = []
    workdir = Path(tempfile.mkdtemp(prefix="dbperf-fleet-bench-"))
    sd = workdir / "targets.json"
    procs = []
    try:
        fleet(args.clusters, args.databases, args.tables, built)
        targets = interleave(built)
        steps = [n for n in args.steps if n <= len(targets)] or [len(targets)]
        write_sd(sd, [])
        result: dict = {"machine": machine(), "setup": {
            "clusters": args.clusters, "databases_per_cluster": args.databases, "tables_per_database": args.tables,
            "interval_seconds": args.interval, "timeout_seconds": timeout, "window_seconds": args.window,
            "postgres": built[0][0].psql("SHOW server_version").strip()}, "steps": []}
        dbperf = Dbperf({"targets": [{"name": name, "dsn": dsn, "databases": {"discover": False}}
                                     for name, dsn in targets]})
        procs.append(dbperf)
        time.sleep(2)
        rss_base = dbperf.usage().rss
        vm = None
        if args.vm:
            vm = VictoriaMetrics()
            procs.append(vm)
        prom = Prometheus([probe_job("postgres", sd, dbperf.address, scrape_timeout=f"{timeout:g}s")],
                          interval=f"{args.interval}s", remote_write=remote_write_to(vm) if vm else ())
        procs.append(prom)
        prom_started = time.monotonic()
        prom_proc = psutil.Process(prom.proc.pid)
        others = [prom_proc] + ([psutil.Process(vm.proc.pid)] if vm else [])

        def servers() -> list[psutil.Process]:
            return [p for cluster, _ in built for p in cluster_processes(cluster)]

        for n in steps:
            log(f"step: {n} targets")
            warm0 = dbperf.usage()
            write_sd(sd, [name for name, _ in targets[:n]], env="bench")
            wait_until(lambda: up_count(prom.url, "postgres") == n, timeout=args.interval * 4 + 60, interval=2,
                       message=f"{n} targets up")
            # every target past its first (cold) scrape
            wait_until(lambda: len(prom_query(prom.url, f'count_over_time(up{{job="postgres"}}[{args.interval * 3}s]) >= 2')) == n,
                       timeout=args.interval * 4 + 60, interval=2, message="two scrapes of every target")
            warm1 = dbperf.usage()
            warm = scrape_health(prom.url, "postgres", int(warm1.at - warm0.at) + 1, timeout)
            pg0 = usage_of(servers()).cpu
            side0 = usage_of(others).cpu
            figures = measure(prom.url, "postgres", dbperf, n, args.window, timeout, rss_base,
                              ours=lambda: servers() + others)
            pg1 = usage_of(servers()).cpu
            side1 = usage_of(others).cpu
            step = figures_dict(figures)
            # the new targets' first (cold) scrapes and everyone's next: from the file_sd change to the window
            step["warmup"] = {"seconds": warm1.at - warm0.at, "dbperf_cpu_seconds": warm1.cpu - warm0.cpu,
                              "down": warm.down, "over_timeout": warm.over_timeout,
                              "scrape_max_seconds": warm.max_duration, "dbperf_max_seconds": warm.dbperf_max}
            step["postgres_cpu_per_scrape_seconds"] = (pg1 - pg0) / max(figures.scrapes, 1)
            step["prometheus_and_vm_cores"] = (side1 - side0) / figures.window
            step["prometheus_head_series"] = exposition_sums(prom.url + "/metrics")["prometheus_tsdb_head_series"]
            step["prometheus_rss_bytes"] = prom_proc.memory_info().rss
            step["loadavg"] = list(psutil.getloadavg())
            log(figures.line())
            result["steps"].append(step)
        whole = int(time.monotonic() - prom_started)  # every scrape, the cold first ones included
        health = scrape_health(prom.url, "postgres", whole, timeout)
        result["whole_run"] = {"seconds": whole, "scrapes": scalar(prom.url, f'sum(count_over_time(up{{job="postgres"}}[{whole}s]))'),
                               "down": health.down, "over_timeout": health.over_timeout,
                               "scrape_max_seconds": health.max_duration, "dbperf_max_seconds": health.dbperf_max}
        if vm:
            result["victoriametrics"] = storage_figures(vm, result["steps"][-1], args.interval)
            log(json.dumps(result["victoriametrics"]))
    finally:
        for proc in reversed(procs):
            proc.stop()
        for cluster, _ in built:
            cluster.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    result["elapsed_seconds"] = time.monotonic() - started
    return result


def figures_dict(f) -> dict:
    h = f.health
    return {"targets": f.targets, "window_seconds": f.window, "scrapes": f.scrapes, "dbperf_cores": f.cpu_cores,
            "cpu_per_scrape_seconds": f.cpu_per_scrape, "targets_per_core": f.targets_per_core,
            "rss_bytes": f.rss, "rss_base_bytes": f.rss_base, "rss_per_target_bytes": f.rss_per_target,
            "peak_rss_bytes": f.peak, "other_cores": f.other_cores, "active_targets": h.targets,
            "errors": h.errors, "down": h.down, "over_timeout": h.over_timeout,
            "scrape_p50_seconds": h.p50_duration, "scrape_max_seconds": h.max_duration, "samples_per_scrape": h.samples,
            "dbperf_max_seconds": h.dbperf_max}


def storage_figures(vm: VictoriaMetrics, last: dict, interval: int) -> dict:
    """Series and bytes in VictoriaMetrics, per target and extrapolated per day: as ingested (small
    parts, minutes old) and after merging this month's parts (what older data settles to)."""
    vm.flush()
    status = vm.get("/api/v1/status/tsdb", match='{job="postgres"}', topN="5")
    rows, fresh, index = vm.stored()
    disk_fresh = vm.disk_bytes()
    vm.force_merge()
    merged_rows, merged, merged_index = vm.stored()
    all_series = float(vm.get("/api/v1/series/count")[0])
    job_series = status["totalSeries"]
    targets = last["targets"]
    per_series = merged_index / all_series if all_series else 0.0
    samples_per_day = last["samples_per_scrape"] * DAY / interval

    def per_day(bytes_per_sample):  # the samples, plus a day's index entries (VictoriaMetrics indexes per day)
        return samples_per_day * bytes_per_sample + per_series * job_series / targets
    return {"series_job": job_series, "series_all": all_series, "series_per_target": job_series / targets,
            "rows_stored": rows, "data_bytes_fresh": fresh, "bytes_per_sample_fresh": fresh / rows,
            "disk_bytes_fresh": disk_fresh, "rows_merged": merged_rows, "data_bytes_merged": merged,
            "bytes_per_sample_merged": merged / merged_rows, "disk_bytes_merged": vm.disk_bytes(),
            "indexdb_bytes": merged_index, "index_bytes_per_series": per_series,
            "samples_per_target_per_day": samples_per_day,
            "bytes_per_target_per_day_fresh": per_day(fresh / rows),
            "bytes_per_target_per_day": per_day(merged / merged_rows),
            "top_metrics": [(m["name"], m["value"]) for m in status["seriesCountByMetricName"]],
            "vm_rss_bytes": psutil.Process(vm.proc.pid).memory_info().rss}


# -- the write-up ------------------------------------------------------------------------------

def markdown(r: dict) -> str:
    m, s = r["machine"], r["setup"]
    out = [f"# dbperf fleet: one process, {r['steps'][-1]['targets']} targets at {s['interval_seconds']} s", "",
           f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}, dbperf at "
           f"{m['commit']}; {m['date']}; PostgreSQL {s['postgres']}. Generated by `bench/fleet.py` in "
           f"{r['elapsed_seconds'] / 60:.0f} minutes.", "",
           f"{s['clusters']} throwaway clusters x {s['databases_per_cluster']} databases, each database "
           f"{s['tables_per_database']} tables with an index and one statement per table; one target per database "
           f"(`databases: {{discover: false}}`, every collector at its default). Prometheus scrapes `/probe` every "
           f"{s['interval_seconds']} s (timeout {s['timeout_seconds']:g} s) through file_sd and relabelling, and "
           f"remote-writes into VictoriaMetrics. Each step grows the file_sd list; once every target has had two "
           f"scrapes, {s['window_seconds']} s are measured.", "",
           "| targets | scrapes | all up, none over the timeout | scrape p50 / max (dbperf's own max) | samples per scrape "
           "| dbperf CPU per target scrape | dbperf cores | targets per core | RSS (per target) "
           "| PostgreSQL CPU per scrape | Prometheus + VM cores | rest of the machine (noise) |",
           "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for st in r["steps"]:
        ok = "yes" if not st["errors"] and not st["down"] and not st["over_timeout"] else \
            f"no: {st['down']} down, {st['over_timeout']} over, {len(st['errors'])} errors"
        out.append(f"| {st['targets']} | {st['scrapes']} | {ok} | {st['scrape_p50_seconds'] * 1000:.0f} / "
                   f"{st['scrape_max_seconds'] * 1000:.0f} ({st['dbperf_max_seconds'] * 1000:.0f}) ms | {st['samples_per_scrape']:,.0f} | "
                   f"{st['cpu_per_scrape_seconds'] * 1000:.1f} ms | {st['dbperf_cores']:.3f} | "
                   f"{st['targets_per_core']:,.0f} | {st['rss_bytes'] / 1e6:.0f} MB "
                   f"(+{st['rss_per_target_bytes'] / 1e6:.2f} MB) | {st['postgres_cpu_per_scrape_seconds'] * 1000:.1f} ms | "
                   f"{st['prometheus_and_vm_cores']:.2f} | {st['other_cores']:.2f} cores, load {st['loadavg'][0]:.1f} |")
    last, w = r["steps"][-1], r["whole_run"]
    out += ["", "Before each window, from the file_sd change until every target has had two scrapes (the new "
                "targets' first scrapes are cold: new sessions, every cache empty):", "",
            "| targets | seconds | dbperf CPU | slowest scrape (dbperf's own) | targets down | targets with a scrape over the timeout |",
            "|---:|---:|---:|---:|---:|---:|"]
    for st in r["steps"]:
        wu = st["warmup"]
        out.append(f"| {st['targets']} | {wu['seconds']:.0f} | {wu['dbperf_cpu_seconds']:.1f} s | "
                   f"{wu['scrape_max_seconds'] * 1000:,.0f} ({wu['dbperf_max_seconds'] * 1000:,.0f}) ms | {wu['down']} | "
                   f"{wu['over_timeout']} |")
    out += ["", f"Over the whole run: {w['scrapes']:,.0f} scrapes, slowest {w['scrape_max_seconds'] * 1000:,.0f} ms as "
                f"Prometheus timed it, {w['dbperf_max_seconds'] * 1000:,.0f} ms as dbperf did; {w['down']} targets ever "
                f"down, {w['over_timeout']} with a scrape at or over the {s['timeout_seconds']:g} s timeout.",
            "", f"dbperf's RSS before its first scrape: {last['rss_base_bytes'] / 1e6:.0f} MB; peak "
                f"{last['peak_rss_bytes'] / 1e6:.0f} MB. Prometheus: {last['prometheus_head_series']:,.0f} head series, "
                f"{last['prometheus_rss_bytes'] / 1e6:.0f} MB RSS."]
    first = r["steps"][0]
    per_core = s["interval_seconds"] / last["cpu_per_scrape_seconds"]
    out += ["", "## Reading it", "",
            f"- **Targets per core.** dbperf's collectors run under one Python interpreter lock, so one process uses "
            f"at most about one core. At {last['cpu_per_scrape_seconds'] * 1000:.1f} ms of CPU per target scrape and one "
            f"scrape per target every {s['interval_seconds']} s, one core holds about {per_core:,.0f} targets (the cost per "
            f"scrape grew from {first['cpu_per_scrape_seconds'] * 1000:.1f} ms at {first['targets']} targets to "
            f"{last['cpu_per_scrape_seconds'] * 1000:.1f} ms at {last['targets']}). Plan for half of it, about "
            f"{per_core / 2:,.0f} targets per process: a restart makes every target's next scrape a cold one, a slow "
            f"server keeps its scrape's threads busy, and the machine has other work.",
            f"- **Memory.** {last['rss_base_bytes'] / 1e6:.0f} MB for the process plus about "
            f"{last['rss_per_target_bytes'] / 1e6:.1f} MB per target of this shape ({last['samples_per_scrape']:,.0f} "
            "series: sessions, cached rendered text of the slow collectors, statement state).",
            f"- **The database's side.** Each scrape cost the PostgreSQL server about "
            f"{last['postgres_cpu_per_scrape_seconds'] * 1000:.0f} ms of CPU (its backends and background processes over "
            "the window, divided by the scrapes).",
            "- **Past one process.** Run several dbperf processes with the same configuration (dbperf is stateless) "
            "and let each Prometheus keep its share of the target list with `hashmod`, sending it to its own "
            "dbperf: docs/scaling.md, tested end to end by tests/test_fleet.py.",
            "- **Noise.** The machine was shared with other work during the run; the last column is the machine's "
            "busy CPU minus dbperf, Prometheus, VictoriaMetrics and the PostgreSQL servers. CPU times are the "
            "processes' own (user + system), so the other work shows in them only through cache and scheduler "
            "effects; scrape durations (wall time) show it fully."]
    if r.get("notes"):
        out += ["", "## Notes", ""] + [f"- {note}" for note in r["notes"]]
    vm = r.get("victoriametrics")
    if vm:
        out += ["", "## What one target costs in VictoriaMetrics", "",
                f"- series: {vm['series_job']:,.0f} for the job, {vm['series_per_target']:,.0f} per target "
                f"({vm['series_all']:,.0f} in all, with Prometheus's own)",
                f"- stored: {vm['rows_stored']:,.0f} samples in {vm['data_bytes_fresh'] / 1e6:.1f} MB of parts "
                f"({vm['bytes_per_sample_fresh']:.2f} bytes per sample, as ingested); after merging the month's parts "
                f"{vm['data_bytes_merged'] / 1e6:.1f} MB ({vm['bytes_per_sample_merged']:.2f} bytes per sample); index "
                f"{vm['indexdb_bytes'] / 1e6:.1f} MB ({vm['index_bytes_per_series']:.0f} bytes per series); on disk "
                f"{vm['disk_bytes_fresh'] / 1e6:.1f} MB, then {vm['disk_bytes_merged'] / 1e6:.1f} MB",
                f"- per target per day: {vm['samples_per_target_per_day']:,.0f} samples "
                f"({last['samples_per_scrape']:,.0f} per scrape x {DAY // s['interval_seconds']:,} scrapes) x "
                f"{vm['bytes_per_sample_merged']:.2f} bytes + a day's index for {vm['series_per_target']:,.0f} series = "
                f"**{vm['bytes_per_target_per_day'] / 1e6:.1f} MB** ({vm['bytes_per_target_per_day_fresh'] / 1e6:.1f} MB "
                f"at the as-ingested size)",
                f"- VictoriaMetrics RSS {vm['vm_rss_bytes'] / 1e6:.0f} MB",
                "- top metric names by series: " + ", ".join(f"{n} {v:,}" for n, v in vm["top_metrics"])]
    return "\n".join(out) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clusters", type=int, default=20)
    parser.add_argument("--databases", type=int, default=10, help="databases (= targets) per cluster")
    parser.add_argument("--tables", type=int, default=10, help="tables per database")
    parser.add_argument("--interval", type=int, default=15, help="scrape interval, seconds")
    parser.add_argument("--steps", type=lambda v: [int(x) for x in v.split(",")], default=[50, 100, 200],
                        help="targets scraped in each step (default 50,100,200)")
    parser.add_argument("--window", type=int, default=180, help="seconds measured per step")
    parser.add_argument("--no-vm", dest="vm", action="store_false", help="no VictoriaMetrics")
    parser.add_argument("--output", default=str(ROOT / "bench" / "FLEET.md"), help="'' for none")
    parser.add_argument("--json", action="store_true", help="the figures as JSON on stdout")
    parser.add_argument("--from-json", metavar="FILE", help="no run: write the Markdown of a saved --json output")
    parser.add_argument("--note", action="append", default=[], help="a paragraph for the write-up's notes (repeatable)")
    args = parser.parse_args(argv)
    result = json.loads(Path(args.from_json).read_text()) if args.from_json else run(args)
    result["notes"] = result.get("notes", []) + args.note
    if args.output:
        Path(args.output).write_text(markdown(result))
        log(f"wrote {args.output}")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
