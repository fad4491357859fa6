"""``dbperf demo`` end to end, as a user runs it: a real subprocess, real PostgreSQL, real HTTP."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path


from exporter.pgcluster import free_port
from conftest import ROOT, Samples, processes_using, wait_until
import pytest

pytestmark = pytest.mark.e2e

SHOP_TABLES = ("customers", "products", "orders", "order_items")


def scrape(url: str) -> Samples | None:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return Samples(response.read().decode())
    except OSError:
        return None


def test_demo_runs_workload_serves_metrics_and_cleans_up():
    """The minimal demo (--no-app --no-prometheus --no-mysql: PostgreSQL, workload, pipelines and dbperf only)
    for a --duration: it serves, its workload works, it ends by itself and removes everything."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}",
                             "--duration", "18", "--any-ports", "--no-app", "--no-prometheus", "--no-mysql"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        first = wait_until(lambda: (s := scrape(url)) and s.has("pg_up", target="demo")
                           and s.value("pg_up", target="demo") == 1 and s,
                           timeout=25, interval=0.5, message="pg_up{target=demo} 1")
        # the printed lines: the metrics and probe URLs and a psql connection string
        output = "".join(lines)
        assert url in output
        assert f"http://127.0.0.1:{port}/probe?target=demo" in output
        assert re.search(r'psql "host=127\.0\.0\.1 port=\d+ dbname=shop', output), output
        match = re.search(r"PostgreSQL in (\S+)", output)
        assert match, output
        cluster_dir = Path(match.group(1))
        assert cluster_dir.is_dir()

        def shop_inserts(samples: Samples) -> dict:
            return {t: samples.value("pg_stat_user_tables_n_tup_ins_total", target="demo", datname="shop",
                                     relname=t) for t in SHOP_TABLES
                    if samples.has("pg_stat_user_tables_n_tup_ins_total", datname="shop", relname=t)}

        def commits(samples: Samples) -> float:
            return samples.value("pg_stat_database_xact_commit_total", target="demo", datname="shop")

        ins0 = wait_until(lambda: (s := scrape(url)) and len(d := shop_inserts(s)) == 4 and d, timeout=10,
                          message="the four shop tables in pg_stat_user_tables_n_tup_ins_total")
        assert ins0["customers"] >= 1000 and ins0["orders"] >= 1000
        commits0 = commits(scrape(url))

        def grown():
            s = scrape(url)
            if not s:
                return None
            ins = shop_inserts(s)
            return (ins.get("orders", 0) > ins0["orders"] and ins.get("order_items", 0) > ins0["order_items"]
                    and commits(s) > commits0 and (ins, commits(s)))

        ins1, commits1 = wait_until(grown, timeout=12, interval=1, message="inserts and commits to grow")
        assert commits1 > commits0 and ins1["orders"] > ins0["orders"]
        assert first.has("pg_stat_database_xact_commit_total", datname="postgres")

        # it ends by itself after --duration, exit code 0, and leaves nothing behind
        assert proc.wait(timeout=35) == 0, "".join(lines)
        reader.join(5)
        output = "".join(lines)
        for absent in ("shop app", "prometheus ", "alertmanager", "pgbouncer"):  # what it was told not to start
            assert f"dbperf demo: {absent}" not in output, output
        assert ": not started:" not in output, output
        removed = re.findall(r"^dbperf demo: removed (\S+)$", output, re.M)
        assert len(removed) == 2 and not any(Path(p).exists() for p in removed), output
        assert not cluster_dir.exists(), f"{cluster_dir} left behind"
        assert not processes_using(cluster_dir), processes_using(cluster_dir)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(15)


def test_demo_port_taken_is_one_clear_line():
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{port}",
                               "--duration", "5"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert f"127.0.0.1:{port}" in proc.stderr and "cannot listen" in proc.stderr
    assert time.monotonic() - started < 10  # fails before starting PostgreSQL


def test_demo_bad_scrape_interval_is_one_clear_line():
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "exporter", "demo", "--listen", f"127.0.0.1:{free_port()}",
                           "--scrape-interval", "0.5s"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2  # a refused argument (docs/exit-codes.md)
    assert proc.stderr.strip().count("\n") == 0 and "--scrape-interval" in proc.stderr, proc.stderr
    assert time.monotonic() - started < 10  # fails before starting PostgreSQL


# the demo as `python -m exporter demo` runs it, on a machine without MariaDB's binaries (find_server
# fails as it does there): only the MariaDB part is missing
WITHOUT_MARIADB = """import sys
import exporter.mysqlcluster as mysqlcluster

def missing():
    raise mysqlcluster.MariaDBError("MariaDB server binaries not found (mariadbd, mariadb-install-db): "
                                    "install them with: apt-get install mariadb-server")

mysqlcluster.find_server = missing
from exporter.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_demo_without_mariadb_says_so_in_one_line_and_runs():
    proc = subprocess.run([sys.executable, "-c", WITHOUT_MARIADB, "demo", "--listen", f"127.0.0.1:{free_port()}",
                           "--any-ports", "--duration", "1", "--no-app", "--no-prometheus", "--no-standby"],
                          cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    notes = [line for line in proc.stdout.splitlines() if "mariadb" in line.lower()]
    assert notes == ["dbperf demo: mariadb: not started: MariaDB server binaries not found (mariadbd, "
                     "mariadb-install-db): install them with: apt-get install mariadb-server"], proc.stdout
    assert "dbperf demo: running for 1 s" in proc.stdout and "probe?target=mysql" not in proc.stdout
