"""What one scrape of a MySQL/MariaDB target costs (issue 19), at 5,000 digests and 1,000 tables, and
how much of it is PyMySQL's (pure Python) decoding of the digest table.

    python bench/mysql_scrape.py                     # ~1 minute; writes bench/MYSQL.md
    python bench/mysql_scrape.py --scrapes 5 --output ''   # figures on stdout only

A throwaway MariaDB (exporter.mysqlcluster.MariaDB, Debian's mariadb-server) with 1,000 InnoDB
tables and 5,000 distinct statement digests (performance_schema_digests_size 10,000), then:

- scrape: the real engine (exporter.scrape.TargetScraper, every collector of kind mysql on, the
  statements collector with its defaults: top 50 per schema), wall time and this process's CPU per
  scrape, samples served, statements dbperf sent per scrape;
- driver: the statements collector's read alone (the digest table, 5,000 rows x 16 columns) with
  PyMySQL, and with mysqlclient (the C driver, ``MySQLdb``) when it can be imported: wall time
  and this process's CPU per read. mysqlclient is not a dependency; to compare, build it aside:
  ``apt-get install libmariadb-dev pkg-config; pip install --target /tmp/mysqlclient mysqlclient``
  and run with ``PYTHONPATH=/tmp/mysqlclient``.
- mysqld_exporter: Debian's ``prometheus-mysqld-exporter`` (when installed) with the collectors of
  the same coverage (global status and variables, slave status, processlist, tables, InnoDB
  metrics, statement digests, table I/O) against the same server: wall time per scrape over HTTP
  and its process's CPU per scrape.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.config import parse  # noqa: E402
from exporter.mysql.connection import MySQLConnection  # noqa: E402
from exporter.mysql.statements import MAIN_SQL  # noqa: E402
from exporter.mysqlcluster import MariaDB  # noqa: E402
from exporter.scrape import TargetScraper  # noqa: E402

TABLES, DIGESTS = 1000, 5000
USER, PASSWORD = "bench", "bench-pw"  # the monitoring user of both exporters (mysqld_exporter needs a password)


def build(server: MariaDB) -> None:
    conn = server.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE bench")
            cur.execute(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'")
            cur.execute(f"GRANT PROCESS, REPLICATION CLIENT, SLAVE MONITOR, SELECT ON *.* TO '{USER}'@'127.0.0.1'")
            for i in range(TABLES):
                cur.execute(f"CREATE TABLE bench.t{i} (id INT PRIMARY KEY, v INT, KEY (v)) ENGINE=InnoDB")
            cur.execute("TRUNCATE performance_schema.events_statements_summary_by_digest")
            cur.execute("USE bench")
            for i in range(DIGESTS):  # an alias is part of the digest: each statement its own
                cur.execute(f"SELECT id AS c{i} FROM t{i % TABLES} WHERE id = 1")
    finally:
        conn.close()


def measure(fn, runs: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def c_read(server: MariaDB, runs: int):
    """``(version, wall, cpu)`` of the digest read with mysqlclient, None when it is not importable."""
    try:
        import MySQLdb
    except ImportError:
        return None
    conn = MySQLdb.connect(host="127.0.0.1", port=server.port, user="root", password="")

    def read():
        cur = conn.cursor()
        cur.execute(MAIN_SQL)
        cur.fetchall()
        cur.close()

    try:
        wall, cpu = measure(read, runs)
    finally:
        conn.close()
    return ".".join(map(str, MySQLdb.version_info[:3])), wall, cpu


MYSQLD_EXPORTER_FLAGS = ("--collect.global_status", "--collect.global_variables", "--collect.slave_status",
                         "--collect.info_schema.processlist", "--collect.info_schema.tables",
                         "--collect.info_schema.innodb_metrics", "--collect.perf_schema.eventsstatements",
                         "--collect.perf_schema.eventsstatements.limit=100", "--collect.perf_schema.tableiowaits")


def mysqld_exporter(server: MariaDB, runs: int):
    """``(wall, cpu, samples)`` per scrape of Debian's mysqld_exporter, None when it is not installed."""
    import psutil
    import requests

    from exporter.pgcluster import free_port

    binary = shutil.which("prometheus-mysqld-exporter") or shutil.which("mysqld_exporter")
    if binary is None:
        return None
    workdir = Path(tempfile.mkdtemp(prefix="dbperf-bench-mysqld-exporter-"))
    cnf = workdir / "my.cnf"
    cnf.write_text(f"[client]\nuser={USER}\npassword={PASSWORD}\nhost=127.0.0.1\nport={server.port}\n")
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.my-cnf={cnf}", f"--web.listen-address=127.0.0.1:{port}",
                             *MYSQLD_EXPORTER_FLAGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        for _ in range(100):
            try:
                requests.get(url, timeout=30)
                break
            except requests.RequestException:
                time.sleep(0.1)
        body = requests.get(url, timeout=30).text  # the warm-up scrape
        samples = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        process = psutil.Process(proc.pid)
        walls = []
        before = sum(process.cpu_times()[:2])  # in clock ticks (10 ms): the mean over the runs, not a median
        for _ in range(runs):
            start = time.perf_counter()
            requests.get(url, timeout=30)
            walls.append(time.perf_counter() - start)
        return statistics.median(walls), (sum(process.cpu_times()[:2]) - before) / runs, samples
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scrapes", type=int, default=10)
    parser.add_argument("--output", default=str(ROOT / "bench" / "MYSQL.md"))
    args = parser.parse_args()
    with MariaDB(settings={"performance-schema-digests-size": "10000", "max-connections": "50"}) as server:
        started = time.monotonic()
        build(server)
        built = time.monotonic() - started
        (digests,), = server.execute("SELECT COUNT(*) FROM performance_schema.events_statements_summary_by_digest")
        config = parse({"targets": [{"name": "bench", "kind": "mysql", "dsn": server.dsn(USER, PASSWORD)}]},
                       source="bench")
        scraper = TargetScraper(config.targets[0])
        try:
            scraper.scrape(30.0)  # warm-up: the sessions open, the cached collectors fill
            samples = scraper.scrape(30.0).samples
            sent = scraper.main.queries
            scrape_wall, scrape_cpu = measure(lambda: scraper.scrape(30.0), args.scrapes)
            per_scrape = (scraper.main.queries - sent) / (args.scrapes + 1)
            durations = {o.collector: o.duration for o in scraper.outcomes}
        finally:
            scraper.close()
        conn = MySQLConnection(server.dsn())
        try:
            conn.query("SELECT 1", 5.0)
            read_wall, read_cpu = measure(lambda: conn.query(MAIN_SQL, 30.0), args.scrapes)
        finally:
            conn.close()
        uncached = parse({"targets": [{"name": "bench", "kind": "mysql", "dsn": server.dsn(USER, PASSWORD),
                                       "collectors": {"tables": {"ttl": 0}, "variables": {"ttl": 0}}}]}, source="bench")
        scraper = TargetScraper(uncached.targets[0])
        try:
            scraper.scrape(30.0)
            cold_wall, cold_cpu = measure(lambda: scraper.scrape(30.0), args.scrapes)
        finally:
            scraper.close()
        c_driver = c_read(server, args.scrapes)
        other = mysqld_exporter(server, args.scrapes)
    lines = [
        f"# MySQL/MariaDB scrape ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
        f"Machine: {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"MariaDB from Debian; {TABLES} tables, {digests} digests (built in {built:.0f} s); median of "
        f"{args.scrapes} runs after a warm-up. `python bench/mysql_scrape.py`", "",
        "| what | wall ms | dbperf CPU ms |", "|---|---:|---:|",
        f"| one scrape, every collector (tables and variables from their cache) | {scrape_wall * 1000:.1f} | {scrape_cpu * 1000:.1f} |",
        f"| one scrape, every collector run (no cache: tables and variables with ttl 0) | {cold_wall * 1000:.1f} | {cold_cpu * 1000:.1f} |",
        f"| the digest table read alone (PyMySQL, {digests} rows x 16 columns) | {read_wall * 1000:.1f} | {read_cpu * 1000:.1f} |",
        (f"| the same read with mysqlclient {c_driver[0]} (C) | {c_driver[1] * 1000:.1f} | {c_driver[2] * 1000:.1f} |"
         if c_driver else "| the same read with mysqlclient (C) | not installed | |"),
        (f"| prometheus-mysqld-exporter, one scrape over HTTP, the same coverage ({other[2]} samples) | "
         f"{other[0] * 1000:.1f} | {other[1] * 1000:.1f} (its process, mean) |" if other
         else "| prometheus-mysqld-exporter | not installed | |"),
        "",
        f"Samples per scrape: {samples}; statements dbperf sends per scrape: {per_scrape:.1f}.",
        "mysqld_exporter flags: " + " ".join(MYSQLD_EXPORTER_FLAGS) + ".", "",
        "Collector durations in the last scrape (ms): "
        + ", ".join(f"{name} {seconds * 1000:.1f}" for name, seconds in sorted(durations.items())), "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.output:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
