"""What reading the server's log costs (issue 18): entries parsed per second on one core for jsonlog
and csvlog, and dbperf's CPU while the server writes 1,000 entries a second.

    python bench/serverlog.py                        # ~1 minute; writes bench/SERVERLOG.md
    python bench/serverlog.py --seconds 10 --output ''   # shorter, figures on stdout only

- *Parsing*: a synthetic log of ``--lines`` entries in the mix of a busy server with the settings of
  docs/server-log.md (connections, disconnections, slow statements, errors with DETAIL and STATEMENT,
  lock waits, temporary files, checkpoints, multi-line autovacuum entries), each format written as
  PostgreSQL writes it; the real :class:`~exporter.serverlog.records.Framer`,
  :class:`~exporter.serverlog.records.Parser` and :class:`~exporter.serverlog.tally.Tally`, timed with
  this process's CPU time (``time.process_time``): entries per CPU second, i.e. per core.
- *At 1,000 entries a second*: a child process appends 100 jsonlog entries every 100 ms to a file
  in a log directory; the real :class:`~exporter.serverlog.reader.LogReader` (its thread, default
  1 s interval, its state file written after every read) follows it for ``--seconds``; this
  process's CPU over that time (the reader and its state writes: nothing else of dbperf runs), as
  a share of one core, and whether every entry was counted.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.config import parse  # noqa: E402
from exporter.serverlog.reader import LogReader  # noqa: E402
from exporter.serverlog.records import Framer, Parser  # noqa: E402
from exporter.serverlog.tally import Tally  # noqa: E402

STATEMENT = ("SELECT o.id, o.total, c.name FROM orders o JOIN customers c ON c.id = o.customer_id "
             "WHERE o.created_at > now() - interval '1 day' AND c.region = 'eu-west' ORDER BY o.total DESC LIMIT 50")
AUTOVACUUM = ('automatic vacuum of table "shop.public.orders": index scans: 1\npages: 0 removed, 1204 remain, '
              '1204 scanned (100.00% of total)\ntuples: 2310 removed, 88012 remain, 0 are dead but not yet removable\n'
              "buffer usage: 2630 hits, 0 misses, 12 dirtied\nsystem usage: CPU: user: 0.02 s, system: 0.00 s, "
              "elapsed: 0.05 s")
# (weight, fields): the mix of a busy server's log with docs/server-log.md's settings
MIX = (
    (25, {"error_severity": "LOG", "message": "connection authorized: user=app database=shop application_name=web"}),
    (25, {"error_severity": "LOG",
          "message": "disconnection: session time: 0:00:03.210 user=app database=shop host=10.0.3.7 port=51234"}),
    (25, {"error_severity": "LOG", "message": f"duration: 1204.332 ms  statement: {STATEMENT}", "query_id": 41237}),
    (10, {"error_severity": "ERROR", "state_code": "23505",
          "message": 'duplicate key value violates unique constraint "orders_pkey"',
          "detail": "Key (id)=(4242) already exists.", "statement": "INSERT INTO orders (id, total) VALUES (4242, 10)"}),
    (5, {"error_severity": "LOG", "message": "process 4242 still waiting for ShareLock on transaction 9121 after "
                                             "1000.121 ms", "statement": "UPDATE orders SET total = 1 WHERE id = 7"}),
    (4, {"error_severity": "LOG", "message": 'temporary file: path "base/pgsql_tmp/pgsql_tmp4242.0", size 20971520'}),
    (3, {"error_severity": "LOG", "message": "checkpoint complete: wrote 1204 buffers (7.3%); 0 WAL file(s) added, "
                                             "0 removed, 1 recycled; write=26.981 s, sync=0.004 s, total=27.001 s"}),
    (3, {"error_severity": "LOG", "message": AUTOVACUUM}),
)
BASE = {"timestamp": "2026-12-01 14:00:00.123 UTC", "user": "app", "dbname": "shop", "pid": 4242,
        "remote_host": "10.0.3.7", "remote_port": 51234, "session_id": "674c5a3e.1092", "line_num": 7,
        "ps": "idle", "session_start": "2026-12-01 13:59:58 UTC", "vxid": "3/1204", "txid": 0,
        "application_name": "web", "backend_type": "client backend", "query_id": 0}


def entries(n: int) -> list[dict]:
    out, cycle = [], [fields for weight, fields in MIX for _ in range(weight)]
    for i in range(n):
        out.append({**BASE, "pid": 4000 + i % 200, **cycle[i % len(cycle)]})
    return out


def jsonlog(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in rows).encode()


def csvlog(rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for r in rows:
        writer.writerow([r["timestamp"], r["user"], r["dbname"], r["pid"], f"{r['remote_host']}:{r['remote_port']}",
                         r["session_id"], r["line_num"], "SELECT", r["session_start"], r["vxid"], r["txid"],
                         r["error_severity"], r.get("state_code", "00000"), r["message"], r.get("detail", ""), "", "",
                         "", "", r.get("statement", ""), "", "", r["application_name"], r["backend_type"], "",
                         r["query_id"]])
    return out.getvalue().encode()


def options():
    return parse({"targets": [{"name": "b", "dsn": "host=x", "server_log": {"path": "/nonexistent"}}]},
                 source="bench").targets[0].server_log


def parse_rate(fmt: str, data: bytes, n: int) -> dict:
    framer, parser, tally = Framer(fmt, 65536), Parser(fmt), Tally(options())
    start = time.process_time()
    pos, parsed = 0, 0
    while pos < len(data):
        records, consumed = framer.split(data[pos:pos + 1024 * 1024], at_eof=pos + 1024 * 1024 >= len(data))
        batch = parser.parse(records)
        tally.add(batch)
        parsed += len(batch)
        pos += consumed
    cpu = time.process_time() - start
    assert parsed == n and parser.errors == 0, (parsed, parser.errors)
    return {"format": fmt, "entries": n, "bytes": len(data), "cpu": cpu, "rate": n / cpu,
            "mb_rate": len(data) / cpu / 1e6}


WRITER = r"""
import sys, time
path, lines, seconds = sys.argv[1], sys.stdin.buffer.read().splitlines(keepends=True), float(sys.argv[2])
start = time.monotonic(); i = 0; tick = 0
with open(path, "ab", buffering=0) as f:
    while time.monotonic() - start < seconds:
        f.write(b"".join(lines[(i + k) % len(lines)] for k in range(100))); i += 100; tick += 1
        time.sleep(max(0.0, start + tick * 0.1 - time.monotonic()))
print(i)
"""


def at_rate(seconds: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="dbperf-bench-log-") as tmp:
        logdir = Path(tmp) / "log"
        logdir.mkdir()
        path = logdir / "postgresql-1.json"
        path.write_bytes(b"")
        target = parse({"state_dir": str(Path(tmp) / "state"),
                        "targets": [{"name": "b", "dsn": "host=x", "server_log": {"path": str(logdir)}}]},
                       source="bench").targets[0]
        reader = LogReader(target)
        reader.tick()  # at the end of the (empty) file
        reader.start()
        me = psutil.Process()
        before = me.cpu_times()
        start = time.monotonic()
        writer = subprocess.run([sys.executable, "-c", WRITER, str(path), str(seconds)], input=jsonlog(entries(1000)),
                                capture_output=True, check=True)
        written = int(writer.stdout)
        deadline = time.monotonic() + 10
        while reader.lines < written and time.monotonic() < deadline:
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        after = me.cpu_times()
        reader.close()
        cpu = (after.user - before.user) + (after.system - before.system)
        return {"written": written, "parsed": reader.lines, "dropped": reader.dropped, "errors": reader.parser.errors,
                "elapsed": elapsed, "cpu": cpu, "share": cpu / elapsed, "rate": written / seconds}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--output", default=str(ROOT / "bench" / "SERVERLOG.md"))
    args = ap.parse_args()
    rows = entries(args.lines)
    rates = [parse_rate("jsonlog", jsonlog(rows), args.lines), parse_rate("csvlog", csvlog(rows), args.lines)]
    steady = at_rate(args.seconds)
    text = report(args, rates, steady)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


def report(args, rates, steady) -> str:
    mem = psutil.virtual_memory().total / 2**30
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# What reading the server's log costs (issue 18)", "",
        f"Machine: {os.cpu_count()} CPUs ({cpu}), {mem:.1f} GB RAM, Python {platform.python_version()}; load average "
        f"at the end {load}; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. **Shared machine**: other helpers ran "
        "tests meanwhile, so every figure is an upper bound.",
        f"`python bench/serverlog.py --lines {args.lines} --seconds {args.seconds:g}` (what each figure is: the "
        "docstring of bench/serverlog.py).", "",
        "## Parsing, one core", "",
        "| format | entries | MB | CPU s | entries per second per core | MB/s per core |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rates:
        lines.append(f"| {r['format']} | {r['entries']:,} | {r['bytes'] / 1e6:.1f} | {r['cpu']:.2f} | "
                     f"{r['rate']:,.0f} | {r['mb_rate']:.1f} |")
    lines += [
        "", "Framing, parsing and counting together (the Tally: every metric and event ring), in the mix of the "
        "docstring (a quarter slow statements with their text, a tenth errors with DETAIL and STATEMENT, multi-line "
        "autovacuum entries).", "",
        "## dbperf at 1,000 entries a second", "",
        "| entries written | per second | parsed | dropped | parse errors | dbperf CPU, % of one core |",
        "|---:|---:|---:|---:|---:|---:|",
        f"| {steady['written']:,} | {steady['rate']:,.0f} | {steady['parsed']:,} | {steady['dropped']} | "
        f"{steady['errors']} | {100 * steady['share']:.2f} % |", "",
        "The real reader thread at its default 1 s interval (jsonlog, default max_lines_per_second 2000, its state file "
        "written atomically after each read), following a file a child process appends to; this process's CPU over "
        "the run.", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
