"""Multi-process mode with real workers: gunicorn -w 3 serving the Flask example with
PROMETHEUS_MULTIPROC_DIR; N requests spread over the workers, every scrape shows exactly N."""

from __future__ import annotations

import os
import socket
import subprocess
import time

import httpx

from conftest import ROOT, Samples, promtool_check_metrics, require_tool, wait_until
import pytest

pytestmark = pytest.mark.e2e

N = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gunicorn_three_workers_aggregate_exact_totals(tmp_path):
    gunicorn = require_tool("gunicorn")
    port = _free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(multiproc), PYTHONPATH=str(ROOT))
    env.pop("FLASK_APP_DSN", None)
    proc = subprocess.Popen(
        [gunicorn, "-w", "3", "-b", f"127.0.0.1:{port}", "-c", "python:examples.gunicorn_conf",
         "--log-level", "warning", "examples.flask_app:create_app()"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            try:
                return httpx.get(url + "/items/0", timeout=2).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read()
                return False
        wait_until(up, timeout=30, message="gunicorn to serve")
        # Let all three workers boot before counting, so requests spread over them.
        time.sleep(1.5)
        pids = set()
        for i in range(1, N + 1):  # a new connection per request: the kernel spreads them over workers
            response = httpx.get(f"{url}/items/{i}", timeout=10, headers={"Connection": "close"})
            assert response.status_code == 200
            pids.add(response.json()["pid"])
        for _ in range(3):
            assert httpx.get(url + "/nowhere", headers={"Connection": "close"}).status_code == 404
        assert len(pids) >= 2, f"all requests went to one worker: {pids}"
        # The last request may be recorded a moment after its response was read: wait for it once.
        def settled():
            s = Samples(httpx.get(url + "/metrics", headers={"Connection": "close"}).text)
            return sum(x.value for x in s.series("http_requests_in_progress")) == 0
        wait_until(settled, timeout=10, interval=0.05, message="no request in progress")
        scrapes = [httpx.get(url + "/metrics", headers={"Connection": "close"}).text for _ in range(4)]
        for text in scrapes:  # whichever worker answers, the totals are the sum over all workers
            s = Samples(text)
            assert s.value("http_requests_total", handler="/items/<int:item_id>", method="GET",
                           status="200") == N + 1  # + the readiness probe
            assert s.value("http_requests_total", handler="<unmatched>", method="GET", status="404") == 3
            assert s.value("http_request_duration_seconds_count", handler="/items/<int:item_id>",
                           method="GET") == N + 1
            assert s.value("http_requests_in_progress", handler="/items/<int:item_id>", method="GET") == 0
        assert promtool_check_metrics(scrapes[0]) == ""
        assert len(list(multiproc.iterdir())) >= 3  # one file set per worker
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def test_uvicorn_workers_aggregate_exact_totals(pg, tmp_path):
    """The shop app (FastAPI + SQLAlchemy) under ``uvicorn --workers 2 --factory``."""
    dbname = "dbperf_shop_workers"
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(dbname,)):
        pg.execute(f"CREATE DATABASE {dbname}")
    port = _free_port()
    multiproc = tmp_path / "prom"
    multiproc.mkdir()
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(multiproc), PYTHONPATH=str(ROOT), SHOP_DSN=pg.dsn(dbname))
    proc = subprocess.Popen(
        [require_tool("uvicorn"), "--factory", "examples.shop_app.app:app_from_env", "--workers", "2",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        def up():
            assert proc.poll() is None, proc.stdout.read()
            try:
                return httpx.get(url + "/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(up, timeout=60, message="uvicorn workers to serve")
        time.sleep(1.5)
        for i in range(40):
            path = "/products" if i % 2 else f"/products/{i % 20 + 1}"
            assert httpx.get(url + path, headers={"Connection": "close"}, timeout=10).status_code == 200
        for i in range(4):  # the shop logs a warning per missing product; app_from_env installs the log handler
            assert httpx.get(f"{url}/products/{900 + i}", headers={"Connection": "close"}, timeout=10).status_code == 404

        def settled():
            s = Samples(httpx.get(url + "/metrics", headers={"Connection": "close"}).text)
            return s if sum(x.value for x in s.series("http_requests_in_progress")) == 0 else None
        wait_until(settled, timeout=10, interval=0.05, message="no request in progress")
        for _ in range(3):
            s = Samples(httpx.get(url + "/metrics", headers={"Connection": "close"}).text)
            assert s.value("http_requests_total", handler="/products", method="GET", status="200") == 20
            assert s.value("http_requests_total", handler="/products/{product_id}", method="GET", status="200") == 20
            assert s.value("db_client_queries_per_request_sum", handler="/products") == 20
            assert s.value("app_log_messages_total", level="WARNING", logger="examples.shop") == 4  # over both workers
        pids = {f.name.rsplit("_", 1)[-1] for f in multiproc.glob("counter_*.db")}
        assert len(pids) == 2, pids  # both workers created metric files
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
