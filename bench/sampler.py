"""What the wait_events sampler costs (issue 17): server time per sample and dbperf's CPU, at 50 and
500 client connections.

    python bench/sampler.py                      # ~2 minutes; writes bench/SAMPLER.md
    python bench/sampler.py --seconds 20 --output ''   # shorter, figures on stdout only

Per connection count, a throwaway cluster (exporter.pgcluster.Cluster, max_connections raised) with
that many client sessions: 10 % active (``pg_sleep`` in a statement of about 1 kB, the default
``track_activity_query_size``, with literals and a sqlcommenter route tag), 4 % blocked on one row
lock behind one session idle in transaction, the rest idle. The real :class:`exporter.postgres.sampler.Sampler`
then runs in this process for ``--seconds`` at its default 1 s interval, nothing else of dbperf
running (no scrapes), and the bench reads:

- server time per sample: ``mean_exec_time`` of the sample's statement (the aggregated sessions and
  the active backends with their texts) in pg_stat_statements (reset before the run), and the CPU
  of the sampler's backend (``/proc``, parse and plan included) per sample;
- dbperf's CPU: this process's CPU over the run (the sampler thread, its watchdog; the bench's
  own sessions are idle) as a share of one core.

The targets: under 1 ms server time per sample at 50 connections, under 1 % of one core for dbperf.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.config import parse  # noqa: E402
from exporter.pgcluster import Cluster  # noqa: E402
from exporter.postgres.sampler import Sampler, sample_sql  # noqa: E402
from exporter.postgres.sqlmark import mark  # noqa: E402

COUNTS = (50, 500)


class Sessions:
    """``n`` client sessions: 10 % active in pg_sleep, 4 % blocked on a row lock, the rest idle."""

    def __init__(self, dsn: str, n: int):
        self.conns = []
        admin = psycopg.connect(dsn, autocommit=True)
        admin.execute("DROP TABLE IF EXISTS bench_lock; CREATE TABLE bench_lock (id int PRIMARY KEY, v int); "
                      "INSERT INTO bench_lock VALUES (1, 0)")
        admin.close()
        self.holder = psycopg.connect(dsn, application_name="bench")
        self.holder.execute("UPDATE bench_lock SET v = v + 1 WHERE id = 1")
        active, blocked = n // 10, max(1, n // 25)
        for i in range(n - 1):
            conn = psycopg.connect(dsn, autocommit=True, application_name="bench")
            if i < active:
                filler = "x" * 900
                conn.pgconn.send_query(f"SELECT pg_sleep(3600), '{filler}', {i} "
                                       f"/*route='%2Fbench%2F{i % 5}',framework='bench'*/".encode())
            elif i < active + blocked:
                conn.pgconn.send_query(b"UPDATE bench_lock SET v = v + 1 WHERE id = 1")
            self.conns.append(conn)
        self.active, self.blocked = active, blocked

    def close(self) -> None:
        for conn in self.conns:
            conn.pgconn.finish()  # no cancel: the server ends their backends
        self.holder.close()


# the sample's statement before it read the active backends' texts (issue 17's first step), for
# the comparison: the counted sessions grouped on the server, nothing else
AGGREGATED_ONLY = mark("""SELECT a.datid, a.datname::text, a.state, a.wait_event_type, a.wait_event, a.query_id::text,
  count(*)::int FROM pg_stat_activity a
WHERE a.backend_type = 'client backend'
  AND a.state IN ('active', 'idle in transaction', 'idle in transaction (aborted)', 'fastpath function call')
  AND a.pid <> pg_backend_pid() AND a.application_name IS DISTINCT FROM 'dbperf'
GROUP BY 1, 2, 3, 4, 5, 6""")
ROUNDS, TRIES = 3, 200


def compare(conn, *statements: str) -> list[float]:
    """Client-side median milliseconds per round trip of each statement, interleaved in
    :data:`ROUNDS` rounds of :data:`TRIES` (the shared machine's load hits both alike); the
    lowest round's median each."""
    best = [float("inf")] * len(statements)
    for _ in range(ROUNDS):
        for i, sql in enumerate(statements):
            times = []
            for _ in range(TRIES):
                t0 = time.perf_counter()
                conn.execute(sql).fetchall()
                times.append(time.perf_counter() - t0)
            best[i] = min(best[i], statistics.median(times) * 1000)
    return best


def backend_cpu(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run(count: int, seconds: float, log) -> dict:
    settings = {"max_connections": str(count + 50), "compute_query_id": "on"}
    with Cluster(settings=settings) as cluster:
        dsn = cluster.dsn("postgres")
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            version = c.execute("SHOW server_version").fetchone()[0]
        log(f"== {count} connections: opening the sessions")
        sessions = Sessions(dsn, count)
        config = parse({"targets": [{"name": "bench", "dsn": dsn}]}, source="bench")
        sampler = Sampler(config.targets[0])
        try:
            sampler.sample_once()  # connect and read the settings: not measured
            sampler.sample_once()
            pid = sampler.conn.backend_pid
            with psycopg.connect(dsn, autocommit=True) as c:
                c.execute("SELECT pg_stat_statements_reset()")
            me = psutil.Process()
            cpu0, server0, samples0, t0 = me.cpu_times(), backend_cpu(pid), sampler.samples, time.monotonic()
            log(f"   sampling for {seconds:g} s")
            sampler.start()
            time.sleep(seconds)
            cpu1, server1, t1 = me.cpu_times(), backend_cpu(pid), time.monotonic()
            samples = sampler.samples - samples0
            failures, skipped = sampler.failures, sampler.skipped
            same_backend = sampler.conn.backend_pid == pid
            seen = sum(sampler.integrator.snapshot()[0].values())
            routes = sampler.integrator.routes_snapshot()
            kept = len(sampler.store)
            sampler.close()
            with psycopg.connect(dsn, autocommit=True) as c:  # before the comparison adds its own calls
                calls, mean_ms, max_ms, rows = c.execute(
                    "SELECT sum(calls), sum(total_exec_time) / sum(calls), max(max_exec_time), sum(rows) / sum(calls) "
                    "FROM pg_stat_statements WHERE query LIKE '%FROM pg_stat_activity a%' "
                    "AND query LIKE '%application=''dbperf''%'").fetchone()
            log("   timing the statement against the aggregated one alone")
            with psycopg.connect(dsn, autocommit=True, application_name="dbperf") as c:
                medians = compare(c, sample_sql(150000), AGGREGATED_ONLY)
        finally:
            sampler.close()
            sessions.close()
    dbperf_cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"connections": count, "active": sessions.active, "blocked": sessions.blocked, "postgres": version,
            "seconds": t1 - t0, "samples": samples, "failures": failures, "skipped": skipped,
            "statement_calls": int(calls or 0), "exec_ms_mean": float(mean_ms or 0), "exec_ms_max": float(max_ms or 0),
            "rows_per_sample": float(rows or 0),
            "routes": len({k[1] for k in routes}), "samples_kept": kept,
            "round_trip_ms": medians[0], "aggregated_only_ms": medians[1],
            "backend_cpu_ms": (server1 - server0) * 1000 if same_backend else None,
            "dbperf_cpu_percent": 100 * dbperf_cpu / (t1 - t0), "session_seconds": seen}


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} CPUs ({model}), {psutil.virtual_memory().total / 1024 ** 3:.1f} GB RAM, "
            f"Python {platform.python_version()}; load average at the end {load}")


def report(results: list[dict], seconds: float) -> str:
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# What the wait_events sampler costs (issue 17)", "",
        f"Machine: {machine()}; PostgreSQL {results[0]['postgres']}; {when}. **Shared machine**: other "
        "helpers ran tests meanwhile, so every figure is an upper bound.",
        f"`python bench/sampler.py --seconds {seconds:g}`: per row a throwaway cluster with that many client "
        "sessions (10 % active in pg_sleep, in statements of about 1 kB with literals and a route tag among 5, "
        "4 % blocked on a row lock behind one idle-in-transaction "
        f"session, the rest idle) and the real sampler at its default 1 s interval for {seconds:g} s, no scrapes.",
        "",
        "| client connections | samples (failed, skipped) | server exec per sample, mean (max) | sampler backend CPU per sample | rows per sample | routes, samples kept | dbperf CPU, % of one core | round trip, median: this statement / the aggregated one alone |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        cpu = r["backend_cpu_ms"]
        backend = "?" if cpu is None else f"{cpu / max(1, r['samples']):.2f} ms ({cpu:.0f} ms in all)"
        lines.append(f"| {r['connections']} | {r['samples']} ({r['failures']}, {r['skipped']}) | "
                     f"{r['exec_ms_mean']:.3f} ms ({r['exec_ms_max']:.3f} ms) | "
                     f"{backend} | {r['rows_per_sample']:.1f} | {r['routes']}, {r['samples_kept']} | "
                     f"{r['dbperf_cpu_percent']:.2f} % | {r['round_trip_ms']:.3f} ms / {r['aggregated_only_ms']:.3f} ms |")
    verdicts = []
    for r in results:
        server = "met" if r["exec_ms_mean"] < 1 else "not met" if r["connections"] <= 50 else "(the target is for 50)"
        verdicts.append(f"{r['connections']} connections: server {r['exec_ms_mean']:.2f} ms per sample {server}, "
                        f"dbperf {r['dbperf_cpu_percent']:.2f} % of a core "
                        f"{'met' if r['dbperf_cpu_percent'] < 1 else 'not met'}")
    lines += [
        "", "Targets: under 1 ms server time per sample at 50 connections, under 1 % of one core for dbperf: "
        + "; ".join(verdicts) + ". The server's cost grows with the connections (pg_stat_activity copies "
        "every backend's status entry); what dbperf receives grows with the active sessions only (the counted "
        "sessions are grouped on the server; the active ones come back one row each, with their text).", "",
        "- *server exec*: pg_stat_statements' `total_exec_time / calls` of the sample's statement (reset before "
        "the run): the server's execution, which reads every backend's status entry (`max_connections` slots) "
        "once (a materialised CTE over pg_stat_activity), groups the counted client backends by database, state, "
        "wait event and query_id, and returns the active ones with their text (`left(query, 8192)`), query start, "
        "application, client and user;",
        "- *sampler backend CPU*: user + system CPU of the sampler's backend over the run (`/proc`), per sample: "
        "parse, plan, execution and the protocol, as the server pays it (the kernel counts in 10 ms ticks: the "
        "total over the run is the figure, the per-sample value its average);",
        "- *rows per sample*: what comes back (one row per database, state, wait event and statement, plus one per "
        "active session);",
        "- *routes, samples kept*: distinct route tags integrated, statements in the sample store at the end;",
        "- *round trip, median*: after the run, the sample's statement and the aggregated statement alone (what a "
        f"sample was before it read the texts) timed from the client, interleaved, {ROUNDS} rounds of {TRIES} "
        "each, the lowest round's median: what reading the active backends' texts adds, under the same load;",
        "- *dbperf CPU*: this process's CPU over the run (the sampler's thread and its watchdog; the bench's own "
        "client sessions are idle in it), as a share of one core.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="sampling time per row (default 30)")
    parser.add_argument("--connections", type=int, action="append", help="client connections (default 50 and 500)")
    parser.add_argument("--output", default=str(ROOT / "bench" / "SAMPLER.md"), help="'' for stdout only")
    args = parser.parse_args(argv)

    def log(text):
        print(text, file=sys.stderr, flush=True)

    results = [run(n, args.seconds, log) for n in (args.connections or COUNTS)]
    text = report(results, args.seconds)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
