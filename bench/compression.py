#!/usr/bin/env python3
"""Bytes on the wire and CPU of gzip for /metrics (issue 16), on a real cluster.

    python bench/compression.py --scale large --scrapes 10      # 10 databases x 500 tables (bench/scrape.py)

dbperf runs as ``dbperf serve`` in a process of its own; the client asks for the same scrape
alternately plain and with ``Accept-Encoding: gzip`` (reading the raw bytes, as Prometheus
receives them) and takes the CPU of the dbperf process per scrape from /proc. Two set-ups:
default caching (cached collectors' gzip members are reused) and every TTL 0 (every chunk is
compressed again in every scrape). Writes bench/GZIP.md.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import psutil  # noqa: E402

from exporter.compress import count_members  # noqa: E402
from scrape import SCALES, Sessions, build, machine  # noqa: E402  (bench/scrape.py)


def cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def scrape(port: int, gz: bool, timeout: float) -> tuple[bytes, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    start = time.perf_counter()
    conn.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"} if gz else {})
    response = conn.getresponse()
    body = response.read()
    wall = time.perf_counter() - start
    assert response.status == 200, response.status
    assert (response.getheader("Content-Encoding") == "gzip") == gz
    assert int(response.getheader("Content-Length")) == len(body)
    conn.close()
    return body, wall


def run_mode(dsn: str, mode: str, scrapes: int, interval: float, log) -> dict:
    from exporter.registry import all_collectors

    target = {"name": "bench", "dsn": dsn}
    if mode == "ttl0":
        target["collectors"] = {c.name: {"ttl": 0, "enabled": c.enabled_by_default} for c in all_collectors()}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "dbperf.yml"
        config.write_text(json.dumps({"listen": "127.0.0.1:0", "scrape_timeout": "30s", "host_metrics": False,
                                      "targets": [target]}))
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", "--config", str(config),
                                 "--listen", f"127.0.0.1:{port}", "--log-level", "error"], cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    scrape(port, False, 60)
                    break
                except (ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            p = psutil.Process(proc.pid)
            rows = {"plain": [], "gzip": []}
            for i in range(scrapes * 2):
                gz = bool(i % 2)
                before = cpu(p)
                body, wall = scrape(port, gz, 60)
                rows["gzip" if gz else "plain"].append((len(body), (cpu(p) - before) * 1000, wall * 1000, body))
                time.sleep(interval)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    plain_body, gz_body = rows["plain"][-1][3], rows["gzip"][-1][3]
    text = gzip.decompress(gz_body)
    members = count_members(gz_body)
    result = {"mode": mode, "samples": sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))}
    for kind, values in rows.items():
        result[kind] = {"bytes": statistics.median(v[0] for v in values),
                        "cpu_ms": statistics.mean(v[1] for v in values),  # /proc counts 10 ms ticks
                        "wall_ms": statistics.median(v[2] for v in values)}
    result["ratio"] = result["plain"]["bytes"] / result["gzip"]["bytes"]
    result["members"] = members
    level6 = zlib.compressobj(6, zlib.DEFLATED, 31)
    result["one_stream_level6_bytes"] = len(level6.compress(plain_body) + level6.flush())
    start = time.process_time()
    for _ in range(5):  # what compressing the whole text costs (every chunk new), measured here
        level1 = zlib.compressobj(1, zlib.DEFLATED, 31)
        level1.compress(plain_body)
        level1.flush()
    result["one_stream_level1_cpu_ms"] = (time.process_time() - start) / 5 * 1000
    log(f"  {mode}: {result['samples']} samples, plain {result['plain']['bytes'] / 1e6:.2f} MB "
        f"{result['plain']['cpu_ms']:.0f} ms CPU, gzip {result['gzip']['bytes'] / 1e6:.3f} MB "
        f"{result['gzip']['cpu_ms']:.0f} ms CPU (1/{result['ratio']:.1f}, {members} members)")
    return result


def in_process(dsn: str, scrapes: int, log) -> dict:
    """The CPU of exporter.compress itself on the real rendered scrape: every body new (the first
    scrape) and with default caching (later scrapes: cached collectors' members are reused)."""
    from exporter.compress import gzip_chunks
    from exporter.config import parse
    from exporter.server import Exporter

    exporter = Exporter(parse({"scrape_timeout": "30s", "host_metrics": False,
                               "targets": [{"name": "bench", "dsn": dsn}]}, source="<bench>"))
    try:
        times = []
        for i in range(scrapes + 1):
            rendered = exporter.render_metrics(30.0)
            start = time.thread_time()
            gzip_chunks(rendered.chunks())
            times.append((time.thread_time() - start) * 1000)
            time.sleep(1.0)
    finally:
        exporter.close()
    result = {"first_ms": times[0], "cached_ms": statistics.median(times[1:])}
    log(f"  gzip in process: {result['first_ms']:.1f} ms for a scrape whose bodies are all new, "
        f"{result['cached_ms']:.1f} ms (median) with default caching")
    return result


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def markdown(scale: str, results: list[dict], mach: str) -> str:
    lines = [f"# gzip on /metrics: bytes and CPU ({scale} scale)", "",
             f"{mach}. `python bench/compression.py --scale {scale}`; medians over the scrapes of each kind (CPU: the mean, "
             "as /proc counts 10 ms ticks), the CPU of the dbperf process per scrape. gzip level 1; each large body is a gzip member of "
             "its own, kept beside the cached text (exporter/compress.py). \"all text at level 1\": the CPU of "
             "compressing the whole plain text once in one stream (the cost when nothing is cached), "
             "measured in the bench process.", "",
             "| caching | samples | plain bytes | gzip bytes | ratio | one stream, level 6 | "
             "CPU plain | CPU gzip | gzip's cost | all text at level 1 | members |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {'default' if r['mode'] == 'default' else 'every TTL 0'} | {r['samples']:,} | "
                     f"{r['plain']['bytes'] / 1e6:.2f} MB | {r['gzip']['bytes'] / 1e6:.3f} MB | 1/{r['ratio']:.1f} | "
                     f"{r['one_stream_level6_bytes'] / 1e6:.3f} MB | {r['plain']['cpu_ms']:.0f} ms | "
                     f"{r['gzip']['cpu_ms']:.0f} ms | {r['gzip']['cpu_ms'] - r['plain']['cpu_ms']:+.0f} ms | "
                     f"{r['one_stream_level1_cpu_ms']:.0f} ms | {r['members']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", default="large", choices=sorted(SCALES))
    ap.add_argument("--scrapes", type=int, default=10, help="of each kind (plain, gzip), alternately")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between scrapes")
    ap.add_argument("--output", default=str(Path(__file__).with_name("GZIP.md")))
    args = ap.parse_args(argv)
    from exporter.pgcluster import Cluster

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    with Cluster() as cluster:
        info = build(cluster, args.scale, log)
        sessions = Sessions(cluster, info["dbnames"], 50, 2)
        try:
            results = [run_mode(cluster.dsn("postgres"), mode, args.scrapes, args.interval, log)
                       for mode in ("default", "ttl0")]
            own = in_process(cluster.dsn("postgres"), args.scrapes, log)
        finally:
            sessions.close()
    m = machine()
    mach = f"{m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB, Python {m['python']}, {m['date']}, commit {m['commit']}"
    text = markdown(args.scale, results, mach) + (
        f"\nexporter.compress alone, in process (thread CPU): {own['first_ms']:.1f} ms for a scrape whose bodies "
        f"are all new, {own['cached_ms']:.1f} ms (median of {args.scrapes}) for the next scrapes with default caching.\n")
    Path(args.output).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
