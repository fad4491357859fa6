#!/usr/bin/env python3
"""Scrape cost of dbperf on generated workloads, against the bare-SQL floor and postgres_exporter.

    python bench/scrape.py --scale small                 # < 1 minute
    python bench/scrape.py --scale large --scrapes 10
    python bench/scrape.py --scale small --scale large --json

Each scale gets its own throwaway cluster (exporter.pgcluster.Cluster). Every measurement runs in
a fresh subprocess so that peak RSS is per measurement. See bench/README.md for the columns.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import platform
import pstats
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import psycopg  # noqa: E402

SCALES = {  # databases, tables per database, distinct statements (over all databases)
    "small": (1, 50, 500),
    "large": (10, 500, 5000),
    "xl": (30, 500, 5000),
}
IDLE_CONNECTIONS = 50
DBPERF_ROLE, FLOOR_ROLE, PGEXP_ROLE = "dbperf_bench", "dbperf_floor", "pgexp_bench"
COLS = ("id", "a", "b", "c", "d")
SUBSETS = [c for n in range(1, len(COLS) + 1) for c in itertools.combinations(COLS, n)]  # 31
MAX_SERIES_OFF = 100_000_000  # the largest max_series: no budget at these scales
PGEXP_BIN = "/usr/bin/prometheus-postgres-exporter"
PGEXP_QUERIES = Path(__file__).with_name("pgexporter_queries.yaml")
FLOOR_ROW, PGEXP_ROW = "floor: same SQL, open conns", "postgres_exporter /metrics HTTP"


# ---------------------------------------------------------------------------------------------
# workload
# ---------------------------------------------------------------------------------------------
def ddl(tables: int, with_rows_every: int = 5, rows: int = 200) -> str:
    parts = []
    for i in range(tables):
        parts.append(f"CREATE TABLE t{i} (id int PRIMARY KEY, a int NOT NULL, b int, c text, "
                     f"d timestamptz DEFAULT now())")
        parts.append(f"CREATE INDEX t{i}_a ON t{i} (a)")
        if i % with_rows_every == 0:
            parts.append(f"INSERT INTO t{i} (id, a, b, c) SELECT g, g % 17, g % 101, md5(g::text) "
                         f"FROM generate_series(1, {rows}) g")
    return ";\n".join(parts)


def statements(tables: int, count: int) -> list[str]:
    """``count`` query shapes that pg_stat_statements keeps apart (table, columns, WHERE, ORDER)."""
    out = []
    for j in range(count):
        t, r = j % tables, j // tables
        cols = SUBSETS[r % len(SUBSETS)]
        where = COLS[(r // len(SUBSETS)) % len(COLS)]
        order = COLS[(r // (len(SUBSETS) * len(COLS))) % len(COLS)]
        out.append(f"SELECT {', '.join(cols)} FROM t{t} WHERE {where} IS NULL ORDER BY {order} LIMIT 1")
    return out


def build(cluster, scale: str, log) -> dict:
    ndb, ntables, nstatements = SCALES[scale]
    start = time.monotonic()
    admin = cluster.dsn("postgres")
    dbs = [f"bench_{i:02d}" for i in range(ndb)]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for role in (DBPERF_ROLE, FLOOR_ROLE, PGEXP_ROLE):
            conn.execute(f"CREATE ROLE {role} LOGIN IN ROLE pg_monitor")
        for db in dbs:
            conn.execute(f"CREATE DATABASE {db}")

    def make(db):
        with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
            c.execute(ddl(ntables))
            c.execute("ANALYZE")

    with ThreadPoolExecutor(max_workers=min(4, ndb)) as pool:
        list(pool.map(make, dbs))
    log(f"  {ndb} databases x {ntables} tables in {time.monotonic() - start:.1f}s")

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    per_db = [nstatements // ndb + (1 if i < nstatements % ndb else 0) for i in range(ndb)]

    def run(args):
        db, n = args
        sqls = statements(ntables, n)
        with psycopg.connect(cluster.dsn(db), autocommit=True) as c:
            for k in range(0, len(sqls), 250):
                c.execute(";\n".join(sqls[k:k + 250]))

    with ThreadPoolExecutor(max_workers=min(4, ndb)) as pool:
        list(pool.map(run, zip(dbs, per_db)))
    with psycopg.connect(admin, autocommit=True) as conn:
        entries = conn.execute("SELECT count(*) FROM pg_stat_statements").fetchone()[0]
        tables = sum(psycopg.connect(cluster.dsn(db), autocommit=True).execute(
            "SELECT count(*) FROM pg_stat_user_tables").fetchone()[0] for db in dbs)
    log(f"  {entries} pg_stat_statements entries, {tables} tables; built in {time.monotonic() - start:.1f}s")
    return {"databases": ndb, "tables": tables, "statements": entries, "build_seconds": time.monotonic() - start,
            "dbnames": ["postgres", *dbs]}


class Sessions:
    """Idle sessions (connected, one query run) and a few active ones (pg_sleep) held open."""

    def __init__(self, cluster, dbnames: list[str], idle: int, active: int):
        self.conns = []
        for i in range(idle):
            c = psycopg.connect(cluster.dsn(dbnames[i % len(dbnames)]), autocommit=True,
                                application_name="bench_idle")
            c.execute("SELECT 1").fetchall()
            self.conns.append(c)
        self.active = []
        for i in range(active):
            c = psycopg.connect(cluster.dsn(dbnames[i % len(dbnames)]), autocommit=True,
                                application_name="bench_active")
            t = threading.Thread(target=self._sleep, args=(c,), daemon=True)
            t.start()
            self.active.append(c)

    @staticmethod
    def _sleep(conn):
        try:
            conn.execute("SELECT pg_sleep(3600)")
        except Exception:
            pass

    def close(self):
        for c in self.active:
            try:
                c.cancel_safe(timeout=1.0)
            except Exception:
                pass
        for c in self.conns + self.active:
            try:
                c.close()
            except Exception:
                pass


# ---------------------------------------------------------------------------------------------
# server-side accounting (run with the admin role, so not counted itself)
# ---------------------------------------------------------------------------------------------
class ServerSide:
    """Execution time (pg_stat_statements, top-level statements of ``role``) and CPU of the
    backends of ``role`` (psutil; None when the set of backends changed in between)."""

    def __init__(self, admin_dsn: str, role: str):
        self.conn = psycopg.connect(admin_dsn, autocommit=True, application_name="bench_admin")
        self.role = role
        self.own_pid = self.conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.postmaster = psutil.Process(self.own_pid).parent()

    def cluster_cpu(self) -> float:
        """CPU seconds the whole cluster used so far, this sampling session's backend left out:
        the postmaster, its live children and, through the postmaster's children times, the
        children that exited (a session opened and closed between two samples, with its
        connection setup, is counted; pg_stat_statements sees neither)."""
        live = 0.0
        for child in self.postmaster.children():
            if child.pid != self.own_pid:
                try:
                    t = child.cpu_times()
                    live += t.user + t.system
                except psutil.Error:
                    pass
        t = self.postmaster.cpu_times()
        return live + t.user + t.system + t.children_user + t.children_system

    def sample(self):
        exec_ms, calls = self.conn.execute(
            "SELECT coalesce(sum(total_exec_time), 0)::float8, coalesce(sum(calls), 0)::int8 FROM pg_stat_statements s "
            "JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s AND s.toplevel", (self.role,)).fetchone()
        self.per_query = {(db, q): (calls, ms, text) for db, q, calls, ms, text in self.conn.execute(
            "SELECT s.dbid, s.queryid, s.calls, s.total_exec_time, left(regexp_replace(s.query, '\\s+', ' ', 'g'), 70) "
            "FROM pg_stat_statements s JOIN pg_roles r ON r.oid = s.userid WHERE r.rolname = %s AND s.toplevel",
            (self.role,))}
        pids = [r[0] for r in self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s", (self.role,)).fetchall()]
        cpu = 0.0
        for pid in pids:
            try:
                t = psutil.Process(pid).cpu_times()
                cpu += t.user + t.system
            except psutil.Error:
                pass
        return exec_ms, frozenset(pids), cpu, calls, self.cluster_cpu()

    def top(self, before: dict, n: int, limit: int = 8) -> list:
        """The role's statements with the most execution time since ``before``, summed over the
        databases: per scrape [calls, ms, text]."""
        by_text: dict[str, list] = {}
        for key, (calls, ms, text) in self.per_query.items():
            c0, m0, _ = before.get(key, (0, 0.0, ""))
            if calls > c0:
                row = by_text.setdefault(text, [0.0, 0.0, text])
                row[0] += (calls - c0) / n
                row[1] += (ms - m0) / n
        rows = list(by_text.values())
        sets = sum(r[0] for r in rows if r[2].upper().startswith("SET "))
        rows = sorted(rows, key=lambda r: -r[1])[:limit]
        return rows + [[sets, 0.0, "(all SET statements)"]] if sets else rows

    @staticmethod
    def delta(before, after, n):
        exec_ms = (after[0] - before[0]) / n
        cpu = (after[2] - before[2]) / n if before[1] == after[1] and before[1] else None
        ServerSide.last_calls = (after[3] - before[3]) / n  # statements pg_stat_statements saw, per scrape
        ServerSide.last_cluster_cpu_ms = (after[4] - before[4]) / n * 1000  # the whole cluster's CPU, per scrape
        return exec_ms, cpu

    def close(self):
        self.conn.close()


def count_samples(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n") if line and not line.startswith(b"#"))


def failed_collectors(body: bytes) -> int:
    return sum(1 for line in body.split(b"\n")
               if line.startswith(b"dbperf_collector_success{") and line.rstrip().endswith(b" 0"))


def p90(values):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(0.9 * len(s))) - 1))]


def body_stats(body: bytes) -> tuple[int, int, int]:
    """(samples, bytes, failed collectors) of one body; bodies are not kept (they would count in
    the measuring process's peak RSS)."""
    return count_samples(body), len(body), failed_collectors(body)


def families(body: bytes, top: int = 8) -> dict:
    """Samples per metric name (the largest ``top``), to see where the volume comes from."""
    counts: dict[str, int] = {}
    for line in body.split(b"\n"):
        if line and not line.startswith(b"#"):
            name = line.split(b"{", 1)[0].split(b" ", 1)[0].decode()
            counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])


def summarise(walls, cpus, stats, extra):
    return {
        "scrapes": len(walls),
        "median_ms": statistics.median(walls) * 1000,
        "p90_ms": p90(walls) * 1000,
        "cpu_ms": statistics.mean(cpus) * 1000 if cpus else None,
        "samples": statistics.median(s[0] for s in stats),
        "bytes": statistics.median(s[1] for s in stats),
        "failed": max(s[2] for s in stats),
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# children: one measurement each, in a fresh process
# ---------------------------------------------------------------------------------------------
def dbperf_config(spec):
    from exporter.config import parse
    from exporter.registry import all_collectors

    target = {"name": "bench", "dsn": spec["dsn"]}
    if spec.get("max_series"):
        target["max_series"] = spec["max_series"]
    if spec.get("max_connections"):
        target["max_connections"] = spec["max_connections"]
    if spec["mode"].startswith("cold"):
        # `enabled` spelled out: a collectors entry without it enables a collector that is off by default
        target["collectors"] = {c.name: {"ttl": 0, "enabled": c.enabled_by_default} for c in all_collectors()}
        target["table_limit"] = 100000
    if spec["mode"] == "default-nodb":  # roughly postgres_exporter's coverage: no per-table series
        from exporter.collector import DATABASE

        target["collectors"] = {c.name: False for c in all_collectors() if c.scope == DATABASE}
    return parse({"targets": [target], "scrape_timeout": spec["budget"]}, source="<bench>")


def sql_queries(exporter):
    return sum(c.queries for s in exporter.scrapers.values() for c in [s.main, *s.conns.values()])


def trim():
    from exporter import memory

    memory.trim()


def child_probe(spec):
    """In-process: ``Exporter.probe`` N times after one warm-up scrape (which connects)."""
    from exporter.server import Exporter

    exporter = Exporter(dbperf_config(spec))
    if spec.get("settle"):
        offset = settle_clock(exporter)
    side = ServerSide(spec["admin_dsn"], DBPERF_ROLE)
    t0 = time.perf_counter()
    exporter.probe("bench", spec["budget"])
    first = time.perf_counter() - t0
    if spec.get("settle"):
        # the steady state: every TTL expired twice on the clock (the series budget counts the other
        # collectors in the first scrape and shares the rest out from the next refreshes on)
        for _ in range(2):
            offset[0] += 301.0
            exporter.probe("bench", spec["budget"])
    if spec.get("profile"):
        out = io.StringIO()
        profile_scrape(exporter, spec["budget"], out)
        print(json.dumps({"profile": out.getvalue()}))
        exporter.close()
        return
    q0, before = sql_queries(exporter), side.sample()
    per_query = side.per_query
    walls, cpus, stats = [], [], []
    for i in range(spec["scrapes"]):
        c, w = time.process_time(), time.perf_counter()
        body = exporter.probe("bench", spec["budget"])
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        stats.append(body_stats(body))
        top = families(body) if i == 0 else top
        del body
        trim()  # as dbperf serve's handler does once the answer is sent
    after, q1 = side.sample(), sql_queries(exporter)
    exec_ms, backend_cpu = ServerSide.delta(before, after, spec["scrapes"])
    result = summarise(walls, cpus, stats, {
        "first_ms": first * 1000, "sql": (q1 - q0) / spec["scrapes"], "server_exec_ms": exec_ms, "families": top,
        "server_calls": ServerSide.last_calls, "cluster_cpu_ms": ServerSide.last_cluster_cpu_ms,
        "top_statements": side.top(per_query, spec["scrapes"]),
        "backend_cpu_ms": None if backend_cpu is None else backend_cpu * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
    exporter.close()
    side.close()
    print(json.dumps(result))


def settle_clock(exporter) -> list:
    """The bench target's scraper on a clock the benchmark moves: real time plus ``offset[0]``."""
    from exporter.registry import all_collectors
    from exporter.scrape import TargetScraper

    offset = [0.0]
    target = exporter.scrapers["bench"].target
    exporter.scrapers["bench"].close()
    exporter.scrapers["bench"] = TargetScraper(target, all_collectors(), clock=lambda: time.monotonic() + offset[0])
    return offset


def child_window(spec):
    """The shipped TTLs over a simulated quarter of an hour: after one warm-up scrape, one scrape
    every ``interval`` seconds for ``window`` seconds on a clock that the benchmark moves forward
    (TargetScraper's ``clock``: real time plus the simulated offset), so that the 30 s and 5 min
    TTLs expire as they would while every query really runs. Per scrape: the growth of the
    role's execution time in pg_stat_statements."""
    from exporter.server import Exporter

    exporter = Exporter(dbperf_config({**spec, "mode": "default"}))
    offset = settle_clock(exporter)
    cached = {c.name for c, ttl, _ in exporter.scrapers["bench"].enabled() if ttl > 0}
    side = ServerSide(spec["admin_dsn"], DBPERF_ROLE)
    t0 = time.perf_counter()
    exporter.probe("bench", spec["budget"])
    first = time.perf_counter() - t0
    n = int(spec["window"] // spec["interval"])
    q0, before = sql_queries(exporter), side.sample()
    per_query, last = side.per_query, before
    walls, cpus, stats, execs, refreshed = [], [], [], [], []
    for i in range(n):
        offset[0] += spec["interval"]
        c, w = time.process_time(), time.perf_counter()
        body = exporter.probe("bench", spec["budget"])
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
        stats.append(body_stats(body))
        now = side.sample()
        execs.append(now[0] - last[0])
        last = now
        refreshed.append(refreshes(body, cached))
        del body
        trim()
    exec_ms, backend_cpu = ServerSide.delta(before, last, n)
    result = summarise(walls, cpus, stats, {
        "first_ms": first * 1000, "sql": (sql_queries(exporter) - q0) / n, "server_exec_ms": exec_ms,
        "server_calls": ServerSide.last_calls, "cluster_cpu_ms": ServerSide.last_cluster_cpu_ms,
        "top_statements": side.top(per_query, n),
        "backend_cpu_ms": None if backend_cpu is None else backend_cpu * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "window": {"interval": spec["interval"], "seconds": spec["window"], "scrapes": n,
                   "exec_ms": execs, "refreshed": refreshed}})
    exporter.close()
    side.close()
    print(json.dumps(result))


def refreshes(body: bytes, cached: set) -> int:
    """Runs of collectors with a TTL (one per database for database-scope ones) that refreshed in
    this scrape instead of being served from their cache (cache age 0)."""
    n = 0
    for line in body.split(b"\n"):
        if line.startswith(b"dbperf_collector_cache_age_seconds{"):
            labels, value = line.rsplit(b" ", 1)
            name = labels.split(b'collector="', 1)[1].split(b'"', 1)[0].decode()
            n += name in cached and float(value) == 0
    return n


def profile_scrape(exporter, budget, out):
    """cProfile of one scrape, including the collector threads: the calling thread and each
    ``_run_job`` (one per database, in the scraper's pool) get a profiler; the stats are merged."""
    from exporter.scrape import TargetScraper

    profiles, lock = [], threading.Lock()
    original = TargetScraper._run_job

    def run_job(self, *a, **kw):
        prof = cProfile.Profile()
        prof.enable()
        try:
            return original(self, *a, **kw)
        finally:
            prof.disable()
            with lock:
                profiles.append(prof)

    TargetScraper._run_job = run_job
    try:
        main = cProfile.Profile()
        w = time.perf_counter()
        main.enable()
        exporter.probe("bench", budget)
        main.disable()
        wall = time.perf_counter() - w
    finally:
        TargetScraper._run_job = original
    stats = pstats.Stats(main, stream=out)
    for prof in profiles:
        stats.add(prof)
    out.write(f"wall {wall * 1000:.0f} ms; {len(profiles)} collector threads profiled; times are summed over "
              f"threads (the main thread mostly waits for them in _run_jobs)\n")
    stats.sort_stats("cumulative").print_stats(int(os.environ.get("BENCH_PROFILE_LINES", "30")))


def child_http(spec):
    """/metrics over real HTTP; the parent is the client and measures this process's CPU."""
    from exporter.server import Exporter, serve_in_thread

    exporter = Exporter(dbperf_config(spec))
    server, _ = serve_in_thread(exporter)
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "mark":
            print(json.dumps({"sql": sql_queries(exporter)}), flush=True)
        elif cmd == "done":
            print(json.dumps({"sql": sql_queries(exporter),
                              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
                  flush=True)
            break
    server.shutdown()
    exporter.close()


def floor_sql(dsn, table_limit):
    """The statements dbperf sends in a cold scrape, per database: [(dbname or None, sql)]."""
    from exporter.collector import CLUSTER, Context, ServerInfo
    from exporter.config import Target
    from exporter.postgres import catalog
    from exporter.postgres.settings import SQL as SETTINGS_SQL
    from exporter.registry import all_collectors
    from exporter.postgres.kind import PROBE_SQL

    with psycopg.connect(dsn, autocommit=True) as c:
        version, rec, dbname, dbs, exts = c.execute(PROBE_SQL).fetchone()[:5]
    server = ServerInfo(version=version, in_recovery=rec, databases=tuple(dbs), extensions=frozenset(exts),
                        dbname=dbname)
    target = Target(name="bench", dsn=dsn, table_limit=table_limit)
    plan = {dbname: [PROBE_SQL]}
    captured = []
    for c in all_collectors():
        if not c.enabled_by_default or c.applies(server) is not None:
            continue
        if isinstance(c, catalog.CatalogCollector):
            make = lambda db, c=c: c.sql(Context("bench", db, server, target))  # noqa: E731
        elif c.name == "settings":
            make = lambda db: SETTINGS_SQL  # noqa: E731
        else:
            make = lambda db, c=c: captured_sql(c, dsn, db, Context("bench", db, server, target))  # noqa: E731
            captured.append(c.name)
        for db in ([dbname] if c.scope == CLUSTER else [dbname, *[d for d in dbs if d != dbname]]):
            plan.setdefault(db, []).extend(make(db) if c.name in captured else [make(db)])
    return plan, captured


class Recorder:
    """A dbperf connection that remembers the SQL it was asked to run."""

    def __init__(self, conn):
        self.conn, self.sqls = conn, []

    def query(self, sql, timeout, wait=0.0):
        self.sqls.append(sql)
        return self.conn.query(sql, timeout, wait)

    def __getattr__(self, name):
        return getattr(self.conn, name)


def captured_sql(collector, dsn, db, ctx):
    """SQL of a code collector: what its second run (steady state) sends, captured."""
    from exporter.postgres.connection import Connection

    conn = Connection(dsn, db)
    try:
        collector.collect(conn, ctx, 30.0)
        rec = Recorder(conn)
        collector.collect(rec, ctx, 30.0)
        return rec.sqls
    finally:
        conn.close()


def run_plan(conns, plan):
    for db, sqls in plan.items():
        with conns[db].cursor() as cur:
            for sql in sqls:
                cur.execute(sql)
                while True:
                    if cur.description is not None:
                        cur.fetchall()
                    if not cur.nextset():
                        break


def child_floor(spec):
    """The same SQL run bare over open connections, one per database, sequentially."""
    from psycopg.conninfo import make_conninfo

    plan, captured = floor_sql(spec["dsn"], 100000)
    connect = lambda db: psycopg.connect(make_conninfo(spec["dsn"], dbname=db), autocommit=True,  # noqa: E731
                                         prepare_threshold=None)
    side = ServerSide(spec["admin_dsn"], FLOOR_ROLE)
    results = {}
    for variant in ("floor", "floor+connect"):
        conns = {db: connect(db) for db in plan} if variant == "floor" else None
        if conns:
            run_plan(conns, plan)  # warm-up
        before = side.sample()
        walls, cpus = [], []
        for _ in range(spec["scrapes"]):
            c, w = time.process_time(), time.perf_counter()
            if variant == "floor+connect":
                opened = {db: connect(db) for db in plan}
                run_plan(opened, plan)
                for conn in opened.values():
                    conn.close()
            else:
                run_plan(conns, plan)
            walls.append(time.perf_counter() - w)
            cpus.append(time.process_time() - c)
        exec_ms, backend_cpu = ServerSide.delta(before, side.sample(), spec["scrapes"])
        results[variant] = {
            "scrapes": len(walls), "median_ms": statistics.median(walls) * 1000, "p90_ms": p90(walls) * 1000,
            "cpu_ms": statistics.mean(cpus) * 1000, "server_exec_ms": exec_ms, "server_calls": ServerSide.last_calls,
            "cluster_cpu_ms": ServerSide.last_cluster_cpu_ms,
            "backend_cpu_ms": None if backend_cpu is None else backend_cpu * 1000,
            "sql": sum(1 + s.count(";") for sqls in plan.values() for s in sqls),
            "note": f"SQL of code collectors captured from their second run: {', '.join(captured)}"
                    if captured else "",
        }
        for conn in (conns or {}).values():
            conn.close()
    for r in results.values():
        r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    side.close()
    print(json.dumps(results))


# ---------------------------------------------------------------------------------------------
# parent side
# ---------------------------------------------------------------------------------------------
def spawn(spec, stdin=False):
    return subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None)


def run_child(spec, timeout=3600):
    proc = spawn(spec)
    out, _ = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec['mode']} failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def proc_cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def http_scrapes(url, pid, n, side: ServerSide | None, timeout):
    """First GET (timed apart), then ``n`` GETs: wall, CPU of ``pid``, bodies."""
    p = psutil.Process(pid)
    t0 = time.perf_counter()
    urllib.request.urlopen(url, timeout=timeout).read()
    first = time.perf_counter() - t0
    before = side.sample() if side else None
    walls, cpus, stats = [], [], []
    for _ in range(n):
        c, w = proc_cpu(p), time.perf_counter()
        body = urllib.request.urlopen(url, timeout=timeout).read()
        walls.append(time.perf_counter() - w)
        cpus.append(proc_cpu(p) - c)
        stats.append(body_stats(body))
    extra = {"first_ms": first * 1000, "families": families(body), "last_body": body}
    if side:
        extra["server_exec_ms"], cpu = ServerSide.delta(before, side.sample(), n)
        extra["server_calls"] = ServerSide.last_calls
        extra["cluster_cpu_ms"] = ServerSide.last_cluster_cpu_ms
        extra["backend_cpu_ms"] = None if cpu is None else cpu * 1000
    return walls, cpus, stats, extra


def measure_http(spec):
    proc = spawn(spec, stdin=True)
    side = ServerSide(spec["admin_dsn"], DBPERF_ROLE)
    try:
        port = json.loads(proc.stdout.readline())["port"]
        url = f"http://127.0.0.1:{port}/metrics"
        p = psutil.Process(proc.pid)
        t0 = time.perf_counter()
        urllib.request.urlopen(url, timeout=spec["budget"] + 5).read()
        first = time.perf_counter() - t0
        proc.stdin.write("mark\n")
        proc.stdin.flush()
        q0 = json.loads(proc.stdout.readline())["sql"]
        before = side.sample()
        walls, cpus, stats = [], [], []
        for _ in range(spec["scrapes"]):
            c, w = proc_cpu(p), time.perf_counter()
            body = urllib.request.urlopen(url, timeout=spec["budget"] + 5).read()
            walls.append(time.perf_counter() - w)
            cpus.append(proc_cpu(p) - c)
            stats.append(body_stats(body))
        exec_ms, backend_cpu = ServerSide.delta(before, side.sample(), spec["scrapes"])
        proc.stdin.write("done\n")
        proc.stdin.flush()
        end = json.loads(proc.stdout.readline())
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        side.close()
    return summarise(walls, cpus, stats, {
        "first_ms": first * 1000, "sql": (end["sql"] - q0) / spec["scrapes"], "server_exec_ms": exec_ms,
        "families": families(body), "server_calls": ServerSide.last_calls,
        "cluster_cpu_ms": ServerSide.last_cluster_cpu_ms,
        "backend_cpu_ms": None if backend_cpu is None else backend_cpu * 1000,
        "peak_rss_mb": end["peak_rss_mb"]})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure_pgexporter(cluster, scrapes, budget, log):
    if not Path(PGEXP_BIN).exists():
        return {"error": f"{PGEXP_BIN} not installed"}
    port = free_port()
    env = {**os.environ, "DATA_SOURCE_NAME":
           f"postgresql://{PGEXP_ROLE}@127.0.0.1:{cluster.port}/postgres?sslmode=disable"}
    args = [PGEXP_BIN, f"--web.listen-address=127.0.0.1:{port}", "--auto-discover-databases",
            f"--extend.query-path={PGEXP_QUERIES}", "--log.level=error"]
    version = subprocess.run([PGEXP_BIN, "--version"], capture_output=True, text=True).stderr.split("\n")[0]
    logfile = open(cluster.root / "pgexporter.log", "w")
    proc = subprocess.Popen(args, env=env, stdout=logfile, stderr=subprocess.STDOUT)
    side = ServerSide(cluster.dsn("postgres"), PGEXP_ROLE)
    try:
        for _ in range(100):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"exited with {proc.returncode}")
                time.sleep(0.1)
        walls, cpus, stats, extra = http_scrapes(f"http://127.0.0.1:{port}/metrics", proc.pid, scrapes, side,
                                                  budget + 5)
        extra["peak_rss_mb"] = peak_rss_mb(proc.pid)
        extra["note"] = f"{version.strip()}; " + " ".join(a.split("=")[0] for a in args[2:])
        body = extra.pop("last_body")
        errors = [line for line in body.split(b"\n") if line.startswith(b"pg_exporter_last_scrape_error")]
        if errors:
            extra["note"] += "; " + errors[0].decode()
        extra["statements_samples"] = sum(1 for line in body.split(b"\n")
                                          if line.startswith(b"pg_stat_statements_"))
        result = summarise(walls, cpus, stats, extra)
        result["failed"] = None
        result["sql"] = None
        return result
    except Exception as exc:
        logfile.flush()
        tail = (cluster.root / "pgexporter.log").read_text()[-500:]
        return {"error": f"{exc}; log: {tail}"}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        side.close()
        logfile.close()


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    return {"nproc": os.cpu_count(), "cpu": model,
            "ram_gb": round(psutil.virtual_memory().total / 1024 ** 3, 1),
            "python": platform.python_version(),
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "commit": subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                     text=True).stdout.strip() or "?"}


def run_scale(scale, args, log):
    from exporter.pgcluster import Cluster

    ndb = SCALES[scale][0]
    settings = {"pg_stat_statements.max": "10000", "max_connections": str(IDLE_CONNECTIONS + args.active + 4 * ndb + 40),
                "max_locks_per_transaction": "256", "shared_buffers": "256MB"}
    log(f"== scale {scale}: cluster")
    with Cluster(settings=settings) as cluster:
        info = build(cluster, scale, log)
        with psycopg.connect(cluster.dsn("postgres")) as c:
            info["postgres"] = c.execute("SHOW server_version").fetchone()[0]
        sessions = Sessions(cluster, info["dbnames"], IDLE_CONNECTIONS, args.active)
        rows = {}
        try:
            base = {"dsn": cluster.dsn("postgres", DBPERF_ROLE), "admin_dsn": cluster.dsn("postgres"),
                    "scrapes": args.scrapes, "budget": 120.0, "max_series": args.max_series,
                    "max_connections": args.max_connections}
            if args.budget:  # the series budget: the shipped max_series against none
                for mode in ("cold", "default", "window"):
                    for label, limit in (("", args.max_series), (", max_series off", MAX_SERIES_OFF)):
                        name = (f"dbperf default, {args.window / 60:g} min at {args.interval:g} s" if mode == "window"
                                else f"dbperf {mode}" + (", settled" if mode == "default" else "")) + label
                        log(f"  {name} /probe in-process")
                        rows[name] = run_child({**base, "mode": mode, "max_series": limit, "settle": mode == "default",
                                                "window": args.window, "interval": args.interval})
                return {"scale": scale, **{k: v for k, v in info.items() if k != "dbnames"}, "idle": IDLE_CONNECTIONS,
                        "active": args.active, "rows": rows}
            for mode in ("cold", "default"):
                log(f"  dbperf {mode} /probe in-process")
                rows[f"dbperf {mode}"] = run_child({**base, "mode": mode})
            log(f"  dbperf default over {args.window:g} s at a {args.interval:g} s interval (simulated clock)")
            rows[f"dbperf default, {args.window / 60:g} min at {args.interval:g} s"] = run_child(
                {**base, "mode": "window", "window": args.window, "interval": args.interval})
            if not args.dbcost:
                log("  dbperf default, database-scope collectors off")
                rows["dbperf default, no database-scope collectors"] = run_child({**base, "mode": "default-nodb"})
                for mode in ("cold-http", "default-http"):
                    log(f"  dbperf {mode} /metrics")
                    rows[f"dbperf {mode.replace('-http', '')} /metrics HTTP"] = measure_http({**base, "mode": mode})
            log("  floor")
            floor = run_child({**base, "mode": "floor", "dsn": cluster.dsn("postgres", FLOOR_ROLE)})
            rows[FLOOR_ROW] = floor["floor"]
            if not args.dbcost:
                rows["floor + opening conns"] = floor["floor+connect"]
            if not args.no_pgexporter:
                log("  postgres_exporter")
                rows[PGEXP_ROW] = measure_pgexporter(cluster, args.scrapes, 120.0, log)
            if args.profile:
                log("  cProfile of one cold scrape")
                info["profile"] = run_child({**base, "mode": "cold", "profile": True})["profile"]
        finally:
            sessions.close()
    info.pop("dbnames")
    return {"scale": scale, **info, "idle": IDLE_CONNECTIONS, "active": args.active, "rows": rows}


def fmt(v, digits=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}"


def ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "–"


def db_cost(rows) -> list[str]:
    """The database's cost per scrape: cold, cached, averaged over the simulated window, against
    the floor and postgres_exporter (which caches nothing: each of its scrapes costs the same), and
    the issue's two targets."""
    get = lambda name: rows[name] if name in rows and "error" not in rows[name] else None  # noqa: E731
    cold, floor, pgexp = get("dbperf cold"), get(FLOOR_ROW), get(PGEXP_ROW)
    name, window = next(((n, m) for n, m in rows.items() if m.get("window")), (None, None))
    if not (cold and window and (floor or pgexp)):  # --budget runs neither: nothing to set it against
        return []
    w = window["window"]
    execs, refreshed = w["exec_ms"], w["refreshed"]
    f_ms, p_ms = (floor or {}).get("server_exec_ms"), (pgexp or {}).get("server_exec_ms")
    lines = [("dbperf cold (every TTL 0)", cold), ("dbperf default, a scrape served from the caches",
                                                  get("dbperf default")),
             (f"**{name}: average of {w['scrapes']} scrapes** (the DB cost over {w['seconds'] / 60:g} minutes)",
              window),
             ("floor (the SQL of dbperf cold, open connections, one database after the other)", floor),
             ("postgres_exporter (caches nothing: also its average over any period)", pgexp)]
    out = ["Database cost per scrape: `server exec` is pg_stat_statements' execution time of the exporter's role "
           "(a wall time: dbperf runs up to `max_connections` databases at once, and on few CPUs its backends wait "
           "for each other, so its figures are upper bounds); `cluster CPU` is the CPU of every PostgreSQL "
           "process of the cluster (sessions opened and closed during the row included, the sampling session "
           "left out) while the row ran, per scrape.", "",
           "| | server exec ms | x floor | x postgres_exporter | cluster CPU ms |", "|---|---:|---:|---:|---:|"]
    for label, m in lines:
        if m:
            e = m["server_exec_ms"]
            out.append(f"| {label} | {fmt(e)} | {ratio(e, f_ms)} | {ratio(e, p_ms)} | {fmt(m.get('cluster_cpu_ms'))} |")
    median = statistics.median(execs)
    out += ["", f"The {w['scrapes']} scrapes of the window, server exec ms: median {fmt(median)}, "
                f"p90 {fmt(p90(execs))}, "
                f"largest {fmt(max(execs))}; {sum(1 for e in execs if e > 2 * median)} above twice the median. "
                f"Refreshes of cached collectors (one per collector and database): {sum(refreshed)} in all, median "
                f"{statistics.median(refreshed):g} and at most {max(refreshed)} in one scrape.", ""]
    targets = [f"cold <= 2x floor: {ratio(cold['server_exec_ms'], f_ms)} "
               f"({'met' if f_ms and cold['server_exec_ms'] <= 2 * f_ms else 'not met'})"]
    if p_ms:
        targets.append(f"{w['seconds'] / 60:g}-minute average <= 0.25x postgres_exporter: "
                       f"{ratio(window['server_exec_ms'], p_ms)} "
                       f"({'met' if window['server_exec_ms'] <= 0.25 * p_ms else 'not met'})")
    return out + ["Targets (issue 16): " + "; ".join(targets) + ".", ""]


def markdown(results, mach, label):
    out = [f"# dbperf scrape benchmark{(' — ' + label) if label else ''}", "",
           f"Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['ram_gb']} GB RAM; Python {mach['python']}; "
           f"PostgreSQL {results[0]['postgres'] if results else '?'}; dbperf at {mach['commit']}; {mach['date']}.", "",
           "Produced by `python bench/scrape.py` (see bench/README.md for the columns). Latencies are wall "
           "time per scrape; CPU is the exporter process's own; `server exec` is pg_stat_statements "
           "execution time of the exporter's role; `backend CPU` is the CPU of its PostgreSQL backends.", ""]
    for r in results:
        out += [f"## {r['scale']}: {r['databases']} databases, {r['tables']:,} tables, "
                f"{r['statements']:,} pg_stat_statements entries, {r['idle']} idle + {r['active']} active sessions",
                "", f"Workload built in {r['build_seconds']:.0f}s.", "",
                "| exporter / mode | median ms | p90 ms | first ms | CPU ms/scrape | server exec ms | backend CPU ms "
                "| peak RSS MB | samples | KB/scrape | SQL stmts | failed collectors |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        notes = []
        for name, m in r["rows"].items():
            if "error" in m:
                out.append(f"| {name} | failed: {m['error'][:200]} |" + " |" * 11)
                continue
            out.append(f"| {name} | {fmt(m['median_ms'])} | {fmt(m['p90_ms'])} | {fmt(m.get('first_ms'))} | "
                       f"{fmt(m['cpu_ms'])} | {fmt(m.get('server_exec_ms'))} | {fmt(m.get('backend_cpu_ms'))} | "
                       f"{fmt(m.get('peak_rss_mb'))} | {fmt(round(m['samples']) if m.get('samples') else None)} | "
                       f"{fmt(m['bytes'] / 1024 if m.get('bytes') else None)} | {fmt(m.get('sql'))} | "
                       f"{fmt(m.get('failed'))} |")
            if m.get("note"):
                notes.append(f"- {name}: {m['note']}")
            if m.get("server_calls") is not None:
                notes.append(f"- {name}: pg_stat_statements counted {m['server_calls']:,.1f} top-level statements "
                             "per scrape (includes SET; utility statements are tracked too)")
            if m.get("families"):
                top = ", ".join(f"{k} {v:,}" for k, v in list(m["families"].items())[:5])
                notes.append(f"- {name}: largest families (samples): {top}")
            if "statements_samples" in m:
                notes.append(f"- {name}: {m['statements_samples']:,} pg_stat_statements_* samples")
        out += [""] + notes + ([""] if notes else [])
        out += db_cost(r["rows"])
        for name, m in r["rows"].items():
            if m.get("top_statements"):
                out += [f"{name}: its statements with the most server execution time, per scrape:", "",
                        "| calls | exec ms | statement |", "|---:|---:|---|"]
                out += [f"| {c:,.1f} | {ms:,.1f} | `{text.replace('|', '/')}` |" for c, ms, text in m["top_statements"]]
                out.append("")
        if r.get("profile"):
            out += ["cProfile of one cold scrape (in-process, top by cumulative time):", "", "```",
                    r["profile"].strip(), "```", ""]
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", action="append", choices=sorted(SCALES), help="repeatable; default small")
    ap.add_argument("--scrapes", type=int, default=20)
    ap.add_argument("--active", type=int, default=2, help="active sessions (pg_sleep) besides the 50 idle")
    ap.add_argument("--json", action="store_true", help="print the results as JSON instead of Markdown")
    ap.add_argument("--no-pgexporter", action="store_true", help="skip postgres_exporter")
    ap.add_argument("--profile", action="store_true", help="add a cProfile of one cold scrape")
    ap.add_argument("--dbcost", action="store_true",
                    help="only the rows of the database's cost: dbperf cold, default, the simulated window, the "
                         "floor and postgres_exporter (no HTTP rows)")
    ap.add_argument("--window", type=float, default=900.0, help="simulated seconds of the window row (default 900)")
    ap.add_argument("--interval", type=float, default=15.0, help="its scrape interval in seconds (default 15)")
    ap.add_argument("--max-series", type=int, default=None,
                    help="max_series of dbperf's target (default: the shipped one)")
    ap.add_argument("--max-connections", type=int, default=None,
                    help="the target's max_connections (databases queried at once; default the shipped 4)")
    ap.add_argument("--budget", action="store_true",
                    help="only dbperf cold and default, with max_series as shipped (or --max-series) and off")
    ap.add_argument("--label", default="", help="title suffix for RESULTS.md, e.g. 'preliminary'")
    ap.add_argument("--output", default=str(Path(__file__).with_name("RESULTS.md")),
                    help="Markdown file to write ('' for none)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        if spec["mode"] != "floor":  # the heap as dbperf serve sets it up (exporter.memory)
            from exporter import memory

            memory.limit_arenas()
        {"cold": child_probe, "default": child_probe, "default-nodb": child_probe, "cold-http": child_http, "default-http": child_http,
         "floor": child_floor, "window": child_window}[spec["mode"]](spec)
        return 0
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    mach = machine()
    results = [run_scale(s, args, log) for s in (args.scale or ["small"])]
    text = markdown(results, mach, args.label)
    if args.output:
        Path(args.output).write_text(text)
    print(json.dumps({"machine": mach, "results": results}, indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
