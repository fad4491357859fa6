#!/usr/bin/env python3
"""Soak: `dbperf serve` scraped once a second for a long time; is its memory flat?

    python bench/soak.py --minutes 30                  # the issue's run (large scale, default caching)
    python bench/soak.py --minutes 2 --scale small     # a quick look

Builds the benchmark workload of bench/scrape.py on a throwaway cluster, keeps 50 idle sessions
and a churning statement workload running (new pg_stat_statements entries all the time, so the
statements collector's top-N, sticky set and histogram state are exercised), runs the real
`dbperf serve` as a child process and scrapes `/metrics` over HTTP at the given interval. It records
the child's RSS every 30 s and writes bench/SOAK.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402
import psycopg  # noqa: E402

from exporter.pgcluster import Cluster, free_port  # noqa: E402
from scrape import SCALES, Sessions, build, machine, statements  # noqa: E402


def churn(cluster, dbnames, stop: threading.Event, rate: float = 20.0) -> None:
    """Distinct statement shapes at `rate` per second, drawn from a space larger than
    pg_stat_statements.max, so entries are evicted and new ones appear for the whole run."""
    shapes = statements(500, 20000)
    conns = [psycopg.connect(cluster.dsn(db), autocommit=True) for db in dbnames[1:]]
    rnd = random.Random(7)
    while not stop.wait(1.0 / rate):
        conn = rnd.choice(conns)
        try:
            conn.execute(rnd.choice(shapes)).fetchall()
        except psycopg.Error:
            pass
    for conn in conns:
        conn.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="large")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    parser.add_argument("--output", default=str(ROOT / "bench" / "SOAK.md"))
    args = parser.parse_args(argv)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    with Cluster(settings={"pg_stat_statements.max": "10000", "max_connections": "300"}) as cluster:
        log(f"building {args.scale} ...")
        built = build(cluster, args.scale, log)
        sessions = Sessions(cluster, built["dbnames"], idle=50, active=2)
        stop = threading.Event()
        churner = threading.Thread(target=churn, args=(cluster, built["dbnames"], stop), daemon=True)
        churner.start()
        workdir = Path(tempfile.mkdtemp(prefix="dbperf-soak-"))
        port = free_port()
        config = workdir / "dbperf.yaml"
        config.write_text(f"listen: 127.0.0.1:{port}\nscrape_timeout: 10s\n"
                          f"targets:\n  - name: soak\n    dsn: \"{cluster.dsn('postgres', user='dbperf_bench')}\"\n")
        child = subprocess.Popen([sys.executable, "-m", "exporter", "serve", "--config", str(config),
                                  "--log-level", "warning"], cwd=ROOT, stderr=open(workdir / "dbperf.log", "w"))
        proc = psutil.Process(child.pid)
        url = f"http://127.0.0.1:{port}/metrics"
        headers = {"X-Prometheus-Scrape-Timeout-Seconds": "10"}
        rss, latencies, failures = [], [], 0
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(url, timeout=15).read()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)
            start = time.monotonic()
            end = start + args.minutes * 60
            next_rss = start
            n = 0
            while time.monotonic() < end:
                t0 = time.monotonic()
                try:
                    request = urllib.request.Request(url, headers=headers)
                    with urllib.request.urlopen(request, timeout=15) as response:
                        body = response.read()
                    if b'pg_up{target="soak"} 1' not in body:
                        failures += 1
                except OSError:
                    failures += 1
                latencies.append(time.monotonic() - t0)
                n += 1
                if time.monotonic() >= next_rss:
                    rss.append((time.monotonic() - start, proc.memory_info().rss / 2 ** 20))
                    log(f"  {rss[-1][0] / 60:5.1f} min  RSS {rss[-1][1]:6.1f} MB  scrapes {n}  "
                        f"median {statistics.median(latencies[-60:]) * 1000:.0f} ms")
                    next_rss += 30
                time.sleep(max(0.0, args.interval - (time.monotonic() - t0)))
            rss.append((time.monotonic() - start, proc.memory_info().rss / 2 ** 20))
        finally:
            child.terminate()
            child.wait(timeout=15)
            stop.set()
            churner.join(timeout=5)
            sessions.close()

    warm = [m for t, m in rss if t >= 60] or [m for _, m in rss]
    lat = sorted(latencies)
    m = machine()
    mach = f"{m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Python {m['python']}, dbperf at {m['commit']}"
    lines = [
        f"# dbperf soak: {args.minutes:g} minutes at one scrape per {args.interval:g} s",
        "",
        f"Machine: {mach}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. Scale `{args.scale}` "
        f"({built['databases']} databases, {built['tables']} tables, {built['statements']} statements at the start, "
        "a churning statement workload of 20 new shapes a second, 50 idle sessions); `dbperf serve` with its "
        "default configuration, scraped over HTTP by `bench/soak.py`.",
        "",
        f"- scrapes: {len(latencies)}, failed: {failures}",
        f"- latency: median {statistics.median(lat) * 1000:.0f} ms, p90 {lat[int(0.9 * (len(lat) - 1))] * 1000:.0f} ms, "
        f"max {lat[-1] * 1000:.0f} ms",
        f"- RSS: start {rss[0][1]:.1f} MB, after the first minute {warm[0]:.1f} MB, end {rss[-1][1]:.1f} MB, "
        f"max {max(m for _, m in rss):.1f} MB",
        "",
        "| minute | RSS MB |",
        "|---:|---:|",
    ] + [f"| {t / 60:.1f} | {m:.1f} |" for t, m in rss]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
