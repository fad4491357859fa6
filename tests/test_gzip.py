"""gzip on /metrics and /probe (issue 16): the real Prometheus (which sends Accept-Encoding: gzip)
scrapes dbperf and reads the compressed answer; a client decompresses it and promtool accepts the
text; Content-Length, Content-Encoding and Vary are right; plain text when gzip is not asked for.
The database has a few hundred tables so that large bodies are gzip members of their own and
cached collectors' members are reused across scrapes."""

from __future__ import annotations

import gzip
import http.client

import pytest

from conftest import Prometheus, Samples, make_config, promtool_check_metrics, wait_until
from exporter.compress import count_members

pytestmark = pytest.mark.prom

DB = "dbperf_gzip"
TABLES = 300


@pytest.fixture(scope="module")
def many_tables(pg):
    if not pg.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(DB,)):
        pg.execute(f"CREATE DATABASE {DB}")
        pg.execute(f"DO $$ BEGIN FOR i IN 1..{TABLES} LOOP EXECUTE format("
                   "'CREATE TABLE t%s (id int PRIMARY KEY, v text); INSERT INTO t%s VALUES (1, ''x'')', i, i); "
                   "END LOOP; END $$", dbname=DB)
        pg.execute("ANALYZE", dbname=DB)
    return DB


def get(served, path: str, gz: bool, method: str = "GET") -> tuple[int, dict, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", served.server.server_address[1], timeout=30)
    try:
        conn.request(method, path, headers={"Accept-Encoding": "gzip, deflate"} if gz else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def test_gzip_answers_are_right_and_promtool_reads_them(pg, many_tables, serve):
    served = serve(make_config(pg, {"databases": {"include": f"postgres|{DB}"}}, host_metrics=False))
    for path in ("/metrics", "/probe?target=main"):
        status, headers, body = get(served, path, gz=True)
        assert status == 200
        assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
        assert int(headers["Content-Length"]) == len(body)
        text = gzip.decompress(body).decode()
        assert promtool_check_metrics(text) == "", path
        samples = Samples(text)
        assert samples.value("pg_up", target="main") == 1
        assert len(samples.series("pg_stat_user_tables_n_live_tup", datname=DB)) == TABLES
        assert count_members(body) > 1  # large bodies are members of their own
        status, headers, plain = get(served, path, gz=False)
        assert status == 200 and "Content-Encoding" not in headers and headers["Vary"] == "Accept-Encoding"
        assert int(headers["Content-Length"]) == len(plain) and plain.startswith(b"# HELP")
        assert len(body) * 10 < len(plain), (len(body), len(plain))
        status, headers, empty = get(served, path, gz=True, method="HEAD")
        assert status == 200 and empty == b"" and headers["Content-Encoding"] == "gzip"
    status, headers, body = get(served, "/healthz", gz=True)  # only the expositions are compressed
    assert body == b"ok\n" and "Content-Encoding" not in headers


def test_prometheus_scrapes_gzip(pg, many_tables, serve):
    served = serve(make_config(pg, {"databases": {"include": f"postgres|{DB}"}}, host_metrics=False))
    address = served.url.removeprefix("http://")
    prom = Prometheus([
        {"job_name": "metrics", "static_configs": [{"targets": [address]}]},
        {"job_name": "probe", "metrics_path": "/probe", "params": {"target": ["main"]},
         "static_configs": [{"targets": [address]}]},
    ], interval="1s")
    try:
        expr = f'count(pg_stat_user_tables_n_live_tup{{datname="{DB}"}}) by (job)'
        found = wait_until(lambda: len(prom.query(expr)) == 2 and prom.query(expr), timeout=30,
                           message="both jobs' table series in Prometheus")
        assert {r["metric"]["job"]: float(r["value"][1]) for r in found} == {"metrics": TABLES, "probe": TABLES}
        assert {r["metric"]["job"] for r in prom.query("up == 1")} == {"metrics", "probe"}
        assert served.server.gzip_responses >= 2  # what Prometheus read was compressed
        wait_until(lambda: served.server.gzip_responses >= 6, timeout=20, message="a few more gzip scrapes")
        # scrapes keep coming with cached collectors' members reused: still up, no scrape error
        assert {r["metric"]["job"] for r in prom.query("up == 1")} == {"metrics", "probe"}
        assert not prom.query("scrape_samples_scraped == 0")
    finally:
        prom.stop()
