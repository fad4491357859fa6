"""The example shop app as users run it (``python -m examples.shop_app``) driven by its load
generator (``python -m examples.shop_app.load``): every generated request is counted."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from urllib.parse import unquote

import httpx

from conftest import ROOT, Samples, promtool_check_metrics, wait_until
import pytest

pytestmark = pytest.mark.e2e

SHOP_DB = "dbperf_shop_example"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shop_app_module_and_load_generator(pg):
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(SHOP_DB,)):
        pg.execute(f"CREATE DATABASE {SHOP_DB}")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "examples.shop_app", "--dsn", pg.dsn(SHOP_DB), "--port", str(port)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, proc.stdout.read()
            try:
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, timeout=30, message="the shop app to serve")
        # the shop's statements from here on: those run in a request carry their route (sql_comments)
        pg.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = %s), 0)",
                   params=(SHOP_DB,))
        load = subprocess.run([sys.executable, "-m", "examples.shop_app.load", "--url", url, "--requests", "60",
                               "--concurrency", "3", "--seed", "7"], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert load.returncode == 0, load.stdout + load.stderr
        assert load.stdout.startswith("60 requests in ")
        text = httpx.get(url + "/metrics").text
        s = Samples(text)
        assert sum(x.value for x in s.series("http_requests_total")) == 60  # /healthz and /metrics excluded
        handlers = {x.labels["handler"] for x in s.series("http_requests_total")}
        assert handlers <= {"/products", "/products/{product_id}", "/customers/{customer_id}/orders", "/slow",
                            "/fail", "<unmatched>"}
        assert promtool_check_metrics(text) == ""
        texts = [r[0] for r in pg.execute("SELECT query FROM pg_stat_statements s JOIN pg_database d "
                                          "ON d.oid = s.dbid WHERE d.datname = %s", params=(SHOP_DB,))]
        routes = {unquote(m) for t in texts for m in re.findall(r"route='([^']*)'", t)}
        assert "/products/{product_id}" in routes and routes <= handlers, texts
        assert all("application='shop'" in t for t in texts if "route=" in t)
    finally:
        proc.terminate()
        proc.wait(15)


def test_shop_app_bad_dsn_is_one_clear_line():
    proc = subprocess.run([sys.executable, "-m", "examples.shop_app", "--dsn", "host=127.0.0.1 port=1 dbname=x",
                           "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shop_app: cannot start: OperationalError"), proc.stderr
