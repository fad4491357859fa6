"""Overhead of exporter.instrument.

1. HTTP: a FastAPI app called directly through ASGI (no sockets: the transport cost would hide the
   middleware), bare vs our PrometheusMiddleware vs prometheus-fastapi-instrumentator. Rounds
   alternate between the variants; the fastest and the median round are reported in µs per request.
2. SQL: the hook cost measured directly (``record_statement`` with a warm fingerprint cache, and the
   SQLAlchemy before/after pair), then timed vs untimed ``SELECT 1`` over real connections
   (psycopg and SQLAlchemy) against PostgreSQL, alternating rounds.

    python bench/instrument.py [--dsn DSN] [--requests 20000] [--statements 5000] [--write]

Without --dsn a throwaway cluster is started (exporter.pgcluster). --write rewrites
bench/INSTRUMENT_RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import CollectorRegistry  # noqa: E402

from exporter.instrument import Instrumentation, PrometheusMiddleware  # noqa: E402

ROUNDS = 15
# CPU time of this process, not wall time: other jobs share this machine, and what the
# instrumentation adds is CPU work in the application process. (For SQL round trips this counts the
# client side only, which is where the hooks run.)
CLOCK = time.process_time


def make_app(variant: str):
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        return {"id": item_id}

    if variant == "dbperf":
        app.add_middleware(PrometheusMiddleware, instrumentation=Instrumentation(registry=CollectorRegistry()))
    elif variant == "dbperf+timing":
        app.add_middleware(PrometheusMiddleware,
                           instrumentation=Instrumentation(registry=CollectorRegistry(), server_timing=True))
    elif variant == "instrumentator":
        from prometheus_fastapi_instrumentator import Instrumentator

        Instrumentator(registry=CollectorRegistry()).instrument(app)
    return app


async def drive(app, n: int, offset: int) -> float:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    start = CLOCK()
    for i in range(n):
        path = f"/items/{(offset + i) % 1000}"
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
                 "headers": [(b"host", b"bench")], "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
        await app(scope, receive, send)
    return (CLOCK() - start) / n * 1e6


def bench_http(requests: int) -> dict:
    variants = ["bare", "dbperf", "dbperf+timing", "instrumentator"]
    apps = {v: make_app(v) for v in variants}
    per_round = max(1, requests // ROUNDS)
    results = {v: [] for v in variants}

    async def run():
        for v in variants:  # warm-up: build middleware stacks, fill caches
            await drive(apps[v], 500, 0)
        for r in range(ROUNDS):
            for v in variants:
                results[v].append(await drive(apps[v], per_round, r * per_round))
    asyncio.run(run())
    return {v: (min(x), statistics.median(x)) for v, x in results.items()}


def bench_hooks(n: int) -> dict:
    inst = Instrumentation(registry=CollectorRegistry())
    sql = "SELECT id, name, price FROM products WHERE id = %(id)s"
    inst.record_statement(sql, 0.001, "shop", "main")
    out = {}
    start = CLOCK()
    for _ in range(n):
        inst.record_statement(sql, 0.001, "shop", "main")
    out["record_statement (warm cache)"] = (CLOCK() - start) / n * 1e6
    state, token = inst.start_request("GET", "/x")
    start = CLOCK()
    for _ in range(n):
        inst.record_statement(sql, 0.001, "shop", "main")
    out["record_statement inside a request"] = (CLOCK() - start) / n * 1e6
    inst.end_context(token)
    start = CLOCK()
    for i in range(n // 10):
        inst.fingerprints._cache.clear()
        inst.statement(f"SELECT * FROM t WHERE a = {i} AND b IN (1, 2, 3) AND c = 'x'")
    out["fingerprint, cold (normalise + hash)"] = (CLOCK() - start) / (n // 10) * 1e6
    return out


def bench_sql(dsn: str, n: int) -> dict:
    import psycopg
    from sqlalchemy import create_engine, text

    from examples.shop_app.app import sqlalchemy_url

    inst = Instrumentation(registry=CollectorRegistry())
    plain = psycopg.connect(dsn, autocommit=True)
    timed = inst.instrument_psycopg(psycopg.connect(dsn, autocommit=True), pool="bench")
    e_plain = create_engine(sqlalchemy_url(dsn), pool_size=1)
    e_timed = inst.instrument_sqlalchemy(create_engine(sqlalchemy_url(dsn), pool_size=1), pool="bench-sa",
                                         hooks="events")
    # the default for psycopg 3 engines (hooks="auto" picks "driver")
    e_driver = inst.instrument_sqlalchemy(create_engine(sqlalchemy_url(dsn), pool_size=1), pool="bench-sa-driver")
    from sqlalchemy import event

    e_empty = create_engine(sqlalchemy_url(dsn), pool_size=1)  # what SQLAlchemy's dispatch alone costs
    for name in ("before_cursor_execute", "after_cursor_execute", "handle_error"):
        event.listen(e_empty, name, lambda *a, **k: None)
    per_round = max(1, n // ROUNDS)

    def run_psycopg(conn):
        start = CLOCK()
        for _ in range(per_round):
            conn.execute("SELECT 1").fetchall()
        return (CLOCK() - start) / per_round * 1e6

    def run_sa(engine):
        with engine.connect() as conn:
            stmt = text("SELECT 1")
            start = CLOCK()
            for _ in range(per_round):
                conn.execute(stmt).fetchall()
            return (CLOCK() - start) / per_round * 1e6

    # The SQLAlchemy listener pair called directly on a real connection and cursor.
    hooks = inst.sqlalchemy_hooks["bench-sa"]
    with e_timed.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        statement = "SELECT id FROM products WHERE id = %(id)s"
        hooks.before(conn, cursor, statement, {}, None, False)
        hooks.after(conn, cursor, statement, {}, None, False)
        m = n * 4
        start = CLOCK()
        for _ in range(m):
            hooks.before(conn, cursor, statement, {}, None, False)
            hooks.after(conn, cursor, statement, {}, None, False)
        direct = (CLOCK() - start) / m * 1e6
    rows = {"psycopg untimed": [], "psycopg timed": [], "SQLAlchemy untimed": [], "SQLAlchemy timed": [],
            "SQLAlchemy timed (hooks='driver')": [], "SQLAlchemy, three empty listeners": []}
    run_psycopg(plain), run_psycopg(timed), run_sa(e_plain), run_sa(e_timed), run_sa(e_driver), run_sa(e_empty)
    for _ in range(ROUNDS):
        rows["psycopg untimed"].append(run_psycopg(plain))
        rows["psycopg timed"].append(run_psycopg(timed))
        rows["SQLAlchemy untimed"].append(run_sa(e_plain))
        rows["SQLAlchemy timed"].append(run_sa(e_timed))
        rows["SQLAlchemy timed (hooks='driver')"].append(run_sa(e_driver))
        rows["SQLAlchemy, three empty listeners"].append(run_sa(e_empty))
    plain.close(), timed.close(), e_plain.dispose(), e_timed.dispose(), e_driver.dispose(), e_empty.dispose()
    result = {k: (min(v), statistics.median(v)) for k, v in rows.items()}
    result["SQLAlchemy before+after listeners, called directly"] = (direct, direct)
    return result


def render(http: dict, hooks: dict, sql: dict, args) -> str:
    bare_min, bare_med = http["bare"]
    lines = [
        "# exporter.instrument overhead",
        "",
        f"`python bench/instrument.py --requests {args.requests} --statements {args.statements}` on "
        f"{platform.python_implementation()} {platform.python_version()}, {platform.machine()}; "
        f"{ROUNDS} alternating rounds.",
        "Times are CPU time of the benchmark process (`time.process_time`), which other jobs on this",
        "shared machine disturb less than wall time; figures are still noisy, compare differences within",
        "one run rather than absolute values across runs. SQL round trips count client CPU only.",
        "",
        "## HTTP middleware (FastAPI, direct ASGI calls, `GET /items/{item_id}`)",
        "",
        "| variant | µs/request (fastest round) | overhead | µs/request (median round) | overhead |",
        "|---|---:|---:|---:|---:|",
    ]
    for v, (us_min, us_med) in http.items():
        lines.append(f"| {v} | {us_min:.1f} | {us_min - bare_min:+.1f} | {us_med:.1f} | {us_med - bare_med:+.1f} |")
    ours, theirs = http["dbperf"], http["instrumentator"]
    lines += [
        "",
        "`dbperf+timing` adds the Server-Timing header. Targets: dbperf overhead < 50 µs/request and lower",
        "than prometheus-fastapi-instrumentator (default setup: `Instrumentator().instrument(app)`).",
        f"Result (median rounds): dbperf {ours[1] - bare_med:+.1f} µs, instrumentator {theirs[1] - bare_med:+.1f} µs.",
        "",
        "## SQL hooks",
        "",
        "Hook cost measured directly:",
        "",
        "| operation | µs/statement |",
        "|---|---:|",
    ]
    for k, us in hooks.items():
        lines.append(f"| {k} | {us:.2f} |")
    if sql:
        lines += [
            "",
            "Real `SELECT 1` round trips to PostgreSQL (one connection, loopback). `SQLAlchemy timed` uses",
            "SQLAlchemy's cursor events (hooks='events'); hooks='driver' is the default for psycopg 3 engines:",
            "",
            "| client | µs/statement (fastest round) | µs/statement (median round) |",
            "|---|---:|---:|",
        ]
        for k, (us_min, us_med) in sql.items():
            lines.append(f"| {k} | {us_min:.1f} | {us_med:.1f} |")
        d = {k: (sql[f"{k} timed"][0] - sql[f"{k} untimed"][0], sql[f"{k} timed"][1] - sql[f"{k} untimed"][1])
             for k in ("psycopg", "SQLAlchemy")}
        drv = sql["SQLAlchemy timed (hooks='driver')"]
        d["driver"] = (drv[0] - sql["SQLAlchemy untimed"][0], drv[1] - sql["SQLAlchemy untimed"][1])
        lines += [
            "",
            f"Timed minus untimed: psycopg {d['psycopg'][0]:+.1f} µs (fastest) / {d['psycopg'][1]:+.1f} µs "
            f"(median), SQLAlchemy events {d['SQLAlchemy'][0]:+.1f} / {d['SQLAlchemy'][1]:+.1f} µs, SQLAlchemy "
            f"hooks='driver' {d['driver'][0]:+.1f} / {d['driver'][1]:+.1f} µs per statement.",
            f"With cursor events, SQLAlchemy's own event dispatch (three empty listeners: "
            f"{sql['SQLAlchemy, three empty listeners'][1] - sql['SQLAlchemy untimed'][1]:+.1f} µs, median) adds to",
            "the hook work; hooks='driver' avoids it for psycopg 3. A round",
            "trip varies by more than that between rounds on a busy machine; the directly measured hook costs",
            "are the steadier figures.",
        ]
    lines += ["", "Target: < 20 µs per statement. Met by the hook work itself (`record_statement`, the listener",
              "pair called directly), by psycopg connections and by SQLAlchemy engines on psycopg 3, which are",
              "timed in the driver by default (hooks='auto' picks 'driver'). Not met end to end by SQLAlchemy's",
              "cursor events (hooks='events', the fallback for other drivers): SQLAlchemy's event dispatch",
              "alone costs about as much as the timing.",
              "The cold fingerprint cost is paid once per distinct statement text (a bounded cache of 4096",
              "texts); statements with inlined literals pay it every time.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: a throwaway cluster)")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--statements", type=int, default=5000)
    parser.add_argument("--no-db", action="store_true", help="skip the round-trip SQL measurement")
    parser.add_argument("--write", action="store_true", help="write bench/INSTRUMENT_RESULTS.md")
    args = parser.parse_args(argv)
    if args.requests < ROUNDS or args.statements < ROUNDS:
        parser.error(f"--requests and --statements must be at least {ROUNDS}")
    http = bench_http(args.requests)
    hooks = bench_hooks(args.statements * 10)
    sql = {}
    if not args.no_db:
        if args.dsn:
            sql = bench_sql(args.dsn, args.statements)
        else:
            from exporter.pgcluster import Cluster

            with Cluster() as cluster:
                sql = bench_sql(cluster.dsn("postgres"), args.statements)
    report = render(http, hooks, sql, args)
    print(report)
    if args.write:
        (ROOT / "bench" / "INSTRUMENT_RESULTS.md").write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
