"""``dbperf report`` against the real Prometheus 2.42 serving a TSDB built by ``promtool tsdb
create-blocks-from openmetrics`` from a known two-day history with injected spikes: figures, top
lists, growth, projected fill date, alerts, exactly the injected anomalies, output formats, errors,
auth through a proxy, the webhook, and the HTML rendered by headless Chromium."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading

import pytest
import requests

from conftest import ROOT, require_tool
from exporter.pgcluster import free_port
from fixtures.report_history import STATEMENTS, served_history, write_history

pytestmark = pytest.mark.e2e

END = 1795132800  # 2026-11-20T00:00:00Z: a fixed "now"; the history is the two days before
PERIOD = f"{END - 86400}..{END}"
TOKEN = "Report-Secret-Token-7731"


@pytest.fixture(scope="module")
def history():
    with served_history(write_history, END) as (url, truth):
        yield {"url": url, "truth": truth}


def report(*args, check=True):
    proc = subprocess.run([sys.executable, "-m", "exporter", "report", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def data(history):
    proc = report("--prometheus", history["url"], "--period", PERIOD, "--format", "json")
    return json.loads(proc.stdout)


def test_summary_figures(data, history):
    truth = history["truth"]
    s = data["sections"]["summary"]
    assert s["missing"] == []
    calls = sum(rate for rate, *_ in STATEMENTS.values()) * 86400
    seconds = sum(rate * mean2 for rate, _, mean2, _ in STATEMENTS.values()) * 86400
    assert s["queries"] == pytest.approx(calls, rel=1e-9)
    assert s["statement_seconds"] == pytest.approx(seconds, rel=1e-9)
    assert s["mean_latency_seconds"] == pytest.approx(seconds / calls, rel=1e-9)
    assert s["p95_latency_seconds"] == pytest.approx(truth["p95"], rel=1e-6)
    assert s["p99_latency_seconds"] == pytest.approx(truth["p99"], rel=1e-6)
    assert s["commits"] == pytest.approx(200 * 86400) and s["rollbacks"] == pytest.approx(2 * 86400)
    assert s["transactions"] == pytest.approx(202 * 86400)
    assert s["rollback_ratio"] == pytest.approx(2 / 202)
    assert s["deadlocks"] == 0
    assert s["cache_hit_ratio"] == pytest.approx(0.98)
    availability = {a["target"]: a["ratio"] for a in s["availability"]}
    assert availability == {"main": 1.0, "replica": pytest.approx(truth["replica_availability"])}
    assert availability["replica"] == pytest.approx(1 - 72 / 1441)
    (conn,) = s["connections"]
    assert (conn["peak"], conn["limit"]) == (180, 197) and conn["peak_ratio"] == pytest.approx(180 / 197)
    sizes = {d["datname"]: d for d in s["database_size"]}
    assert sizes["app"]["growth_bytes"] == pytest.approx(24 * 50 * 1024 ** 2)
    assert sizes["postgres"]["growth_bytes"] == 0
    assert data["period"]["step_seconds"] == 300


def test_top_statements_in_order_with_change(data):
    st = data["sections"]["statements"]
    assert [r["queryid"] for r in st["by_total_time"]] == ["1002", "1001", "1003", "1004"]
    assert [r["queryid"] for r in st["by_mean_time"]] == ["1003", "1002", "1001", "1004"]
    assert [r["queryid"] for r in st["by_calls"]] == ["1004", "1001", "1002", "1003"]
    rows = {r["queryid"]: r for r in st["by_total_time"]}
    assert "other" not in rows
    assert rows["1001"]["query"] == "SELECT * FROM orders WHERE customer_id = $1"
    assert rows["1001"]["mean_seconds"] == pytest.approx(0.002)
    assert rows["1001"]["previous_mean_seconds"] == pytest.approx(0.001)
    assert rows["1001"]["mean_seconds_change"] == pytest.approx(1.0)
    assert rows["1001"]["calls_change"] == pytest.approx(0.0, abs=1e-9)
    assert rows["1002"]["total_seconds"] == pytest.approx(10 * 0.020 * 86400)
    assert rows["1002"]["share_of_time"] == pytest.approx(17280 / 33984)


def test_application(data, history):
    app = data["sections"]["application"]
    truth = history["truth"]["http"]
    endpoints = {e["handler"]: e for e in app["endpoints"]}
    for handler, expected in truth.items():
        assert endpoints[handler]["requests"] == pytest.approx(expected["requests"])
        assert endpoints[handler]["errors"] == pytest.approx(expected["errors"])
        assert endpoints[handler]["p95_seconds"] == pytest.approx(expected["p95"], rel=1e-3)
    assert app["requests"] == pytest.approx(sum(e["requests"] for e in truth.values()))
    assert app["error_ratio"] == pytest.approx(sum(e["errors"] for e in truth.values()) / app["requests"])
    assert app["slowest"] == ["/api/checkout", "/api/orders", "/health"]
    assert app["n_plus_one"] == [{"handler": "/api/orders", "fingerprint": "a1b2c3d4", "requests": pytest.approx(4320)}]


def test_pipelines(data):
    pipes = {p["pipeline"]: p for p in data["sections"]["pipelines"]["pipelines"]}
    assert (pipes["hourly_import"]["runs"], pipes["hourly_import"]["failures"]) == (24, 2)
    assert (pipes["daily_sales"]["runs"], pipes["daily_sales"]["failures"]) == (1, 0)
    assert pipes["daily_sales"]["duration_change"] == pytest.approx(0.2)
    assert (pipes["stale_export"]["runs"], pipes["stale_export"]["failures"]) == (8, 8)
    assert data["sections"]["pipelines"]["stale"] == ["stale_export"]
    assert data["sections"]["pipelines"]["success_rate"] == pytest.approx(23 / 33)


def test_resources_and_disk_fill(data, history):
    res = data["sections"]["resources"]
    (cpu,) = res["cpu"]
    assert cpu["peak"] == pytest.approx(0.92, abs=0.005)
    fs = {f["mountpoint"]: f for f in res["filesystems"]}
    data_fs = fs["/var/lib/postgresql"]
    assert data_fs["avail_change_bytes_per_day"] == pytest.approx(-2 * 1024 ** 3, rel=1e-6)
    assert data_fs["projected_full_timestamp"] == pytest.approx(history["truth"]["disk_full"], abs=60)
    assert data_fs["used_growth_bytes"] == pytest.approx(2 * 1024 ** 3, rel=1e-6)
    assert fs["/"]["projected_full"] is None
    (mem,) = res["memory"]
    assert 11 / 32 - 0.001 <= mem["min_available_ratio"] <= mem["mean_available_ratio"] <= 13 / 32


def test_alerts_fired_with_durations(data, history):
    fired = {a["alertname"]: a for a in data["sections"]["alerts"]["fired"]}
    assert set(fired) == {"HighErrorRate", "PostgreSQLDown"}  # the pending state is not firing
    for name, (first, last) in history["truth"]["alerts"].items():
        assert (fired[name]["start"], fired[name]["end"]) == (first, last)
        assert fired[name]["duration_seconds"] == last - first + 60
    assert fired["PostgreSQLDown"]["labels"]["target"] == "replica"


def test_exactly_the_injected_anomalies_with_causes(data, history):
    events = history["truth"]["events"]
    found = data["sections"]["anomalies"]["found"]
    assert data["sections"]["anomalies"]["missing"] == []
    got = sorted((a["series"], a["start"], a["end"]) for a in found)
    expected = {("cpu_use", events["cpu"]), ("connections_used", events["latency"]),
                ("workload_p95_latency", events["latency"]), ("http_error_ratio", events["errors"]),
                ("workload_p95_latency", events["restart"])}
    assert len(found) == len(expected), got
    for series, when in expected:
        matches = [a for a in found if a["series"] == series and a["start"] - 300 <= when <= a["end"]]
        assert len(matches) == 1, (series, when, got)
    by = {(a["series"], round(a["peak_time"] / 3600)): a for a in found}

    def one(series, when):
        return next(a for a in found if a["series"] == series and a["start"] - 300 <= when <= a["end"])

    latency = one("workload_p95_latency", events["latency"])
    assert latency["peak"] == pytest.approx(1.0) and latency["factor"] > 20
    assert latency["size"].startswith(f"{latency['factor']:.0f}x the median")
    assert any("connections used anomaly" in c for c in latency["causes"])
    assert any("PostgreSQL restart" in c for c in one("workload_p95_latency", events["restart"])["causes"])
    assert any("alert HighErrorRate firing" in c for c in one("http_error_ratio", events["errors"])["causes"])
    assert any("pipeline daily_sales was running" in c for c in one("cpu_use", events["cpu"])["causes"])
    assert by


def test_recommendations_tied_to_numbers(data):
    recs = data["sections"]["recommendations"]
    text = "\n".join(f"{r['severity']} {r['area']} {r['text']} {r['evidence']}" for r in recs)
    assert "queryid 1002" in text and "50.8% of all statement time" in text
    assert "queryid 1001 (app) got slower" in text and "+100%" in text
    assert "replica" in text and "95.00% of scrapes" in text
    assert "stale_export is stale" in text
    assert "cache hit ratio 98.00%" in text
    assert "180 of 197" in text
    assert "4 advisor findings" in text
    assert recs[0]["severity"] == "critical"
    assert not any(r["area"] == "disk" for r in recs)  # 48 days to full: above the 30-day horizon


def test_json_keys_are_stable(data):
    assert set(data) == {"report_version", "prometheus", "period", "target", "sections", "series", "queries"}
    assert set(data["sections"]) == {"summary", "statements", "application", "pipelines", "resources", "alerts",
                                     "advisor", "anomalies", "recommendations"}
    assert data["period"]["start"] == "2026-11-19T00:00:00Z" and data["period"]["end"] == "2026-11-20T00:00:00Z"
    assert len(data["series"]["workload_p95_latency"]) == 289


def test_markdown_and_relative_period(history):
    md = report("--prometheus", history["url"], "--period", "24h", "--end", "2026-11-20T00:00:00Z").stdout
    for heading in ("## Summary", "## Top statements", "## Application", "## Pipelines", "## Resources",
                    "## Alerts fired", "## Anomalies", "## Recommendations"):
        assert heading in md
    assert "replica 95.00%" in md and "`SELECT report_rollup($1)`" in md
    assert "no data" not in md


def test_target_filter_and_missing_sections(history):
    up_start, up_end = history["truth"]["segments"]["up_only"]
    out = json.loads(report("--prometheus", history["url"], "--period", f"{up_start}..{up_end}", "--format", "json").stdout)
    s = out["sections"]
    assert s["statements"]["missing"] == ["pg_stat_statements_calls_total", "pg_stat_statements_seconds_total"]
    assert s["application"]["requests"] is None and "http_requests_total" in s["application"]["missing"]
    md = report("--prometheus", history["url"], "--period", f"{up_start}..{up_end}").stdout
    assert "no data (missing: pg_stat_statements_calls_total, pg_stat_statements_seconds_total)" in md
    assert "no data (missing: http_requests_total, http_request_duration_seconds_bucket, db_client_n_plus_one_total)" in md
    replica = json.loads(report("--prometheus", history["url"], "--period", PERIOD, "--target", "replica",
                                "--format", "json").stdout)
    assert [a["target"] for a in replica["sections"]["summary"]["availability"]] == ["replica"]
    assert replica["sections"]["statements"]["missing"]


@pytest.mark.parametrize("case", ["unreachable", "empty", "missing", "unknown-target", "bad-period"])
def test_errors_are_one_line_exit_1_or_2(history, case):
    """Exit code 1 when Prometheus fails or the period holds no data, 2 for refused arguments."""
    host_start, host_end = history["truth"]["segments"]["host_only"]
    dead = f"http://127.0.0.1:{free_port()}"
    args, expected = {
        "unreachable": (["--prometheus", dead, "--period", PERIOD], f"Prometheus unreachable at {dead}"),
        "empty": (["--prometheus", history["url"], "--period", f"{END - 20 * 86400}..{END - 19 * 86400}"],
                  "no samples at all between 2026-10-31T00:00:00Z and 2026-11-01T00:00:00Z"),
        "missing": (["--prometheus", history["url"], "--period", f"{host_start}..{host_end}"],
                    "the metrics needed are missing between 2026-11-15T00:00:00Z and 2026-11-15T03:00:00Z: pg_up"),
        "unknown-target": (["--prometheus", history["url"], "--period", PERIOD, "--target", "nosuch"],
                           'for target "nosuch": pg_up'),
        "bad-period": (["--prometheus", history["url"], "--period", "yesterday"], "--period: 'yesterday' is not a duration"),
    }[case]
    proc = report(*args, check=False)
    assert proc.returncode == (2 if case == "bad-period" else 1), proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dbperf report: ") and expected in lines[0], proc.stderr


def test_progress_on_stderr_only_when_asked(history):
    quiet = report("--prometheus", history["url"], "--period", PERIOD, "--format", "json")
    assert quiet.stderr == ""
    loud = report("--prometheus", history["url"], "--period", PERIOD, "--format", "json", "--progress")
    assert "[1/12] checking Prometheus" in loud.stderr and "[12/12] recommendations" in loud.stderr
    assert json.loads(loud.stdout)["sections"]


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A tiny webhook receiver, and a proxy to Prometheus that wants a bearer token."""

    received: list = []
    upstream = ""

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers.get("Content-Type"), body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def do_GET(self):
        self.received.append((self.path, self.headers.get("Authorization"), b""))
        basic = "Basic " + base64.b64encode(f"reporter:{TOKEN}".encode()).decode()
        if self.headers.get("Authorization") not in (f"Bearer {TOKEN}", basic):
            self.send_response(401)
            self.end_headers()
            return
        upstream = requests.get(self.upstream + self.path, timeout=30)
        self.send_response(upstream.status_code)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(upstream.content)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver(history):
    _Recorder.received = []
    _Recorder.upstream = history["url"]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.received
    server.shutdown()
    server.server_close()


def test_webhook_posts_markdown_summary(history, receiver, tmp_path):
    url, received = receiver
    out = tmp_path / "report.md"
    report("--prometheus", history["url"], "--period", PERIOD, "--out", str(out), "--webhook", url + "/services/T1/B2/secret")
    posts = [r for r in received if r[0].startswith("/services")]
    assert len(posts) == 1
    path, content_type, body = posts[0]
    assert content_type == "application/json"
    text = json.loads(body)["text"]
    assert text.startswith("*dbperf report*") and "Anomalies: 5" in text and "Alerts fired: 2" in text
    assert "[critical]" in text
    assert out.read_text().startswith("# Database performance report")


def test_bearer_token_through_a_proxy_never_printed(history, receiver, tmp_path):
    url, received = receiver
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    ok = report("--prometheus", url, "--period", PERIOD, "--format", "json", "--bearer-token-file", str(token), "--progress")
    assert json.loads(ok.stdout)["sections"]["summary"]["queries"] > 0
    assert all(auth == f"Bearer {TOKEN}" for _, auth, _ in received)
    wrong = tmp_path / "wrong"
    wrong.write_text("nope")
    denied = report("--prometheus", url, "--period", PERIOD, "--bearer-token-file", str(wrong), check=False)
    assert denied.returncode == 1
    assert "refused the request (HTTP 401)" in denied.stderr
    for proc in (ok, denied):
        assert TOKEN not in proc.stdout + proc.stderr and "nope" not in proc.stderr


def test_basic_auth_password_file(history, receiver, tmp_path):
    url, received = receiver
    password = tmp_path / "password"
    password.write_text(TOKEN + "\n")
    ok = report("--prometheus", url, "--period", PERIOD, "--basic-auth", f"reporter:{password}")
    assert "## Summary" in ok.stdout and TOKEN not in ok.stdout + ok.stderr
    assert received and all(auth.startswith("Basic ") for _, auth, _ in received)
    denied = report("--prometheus", url, "--period", PERIOD, "--basic-auth", f"someone:{password}", check=False)
    assert denied.returncode == 1 and "HTTP 401" in denied.stderr and TOKEN not in denied.stderr
    malformed = report("--prometheus", url, "--period", PERIOD, "--basic-auth", "reporter", check=False)
    assert malformed.returncode == 2 and malformed.stderr.strip() == "dbperf report: --basic-auth: expected USER:PASSWORD_FILE"


def test_html_is_self_contained_and_renders_in_chromium(history, tmp_path):
    chromium = require_tool("chromium")
    html_file = tmp_path / "report.html"
    report("--prometheus", history["url"], "--period", PERIOD, "--format", "html", "--out", str(html_file))
    html = html_file.read_text()
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    assert "http-equiv=\"Content-Security-Policy\"" in html and html.count("<svg") == 5
    png = tmp_path / "shot.png"
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                           f"--screenshot={png}", "--window-size=1200,3000", html_file.as_uri()],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines()
               if "CONSOLE" in line or "Refused to" in line or "Failed to load resource" in line or "Uncaught" in line]
    assert console == [], console
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    assert _distinct_colours(data) > 20, "the screenshot is blank"


def _distinct_colours(png: bytes) -> int:
    """Distinct RGB values in the decoded PNG (8-bit RGB/RGBA, as Chromium writes it)."""
    import struct
    import zlib

    pos, chunks, header = 8, [], None
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        payload = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            chunks.append(payload)
        pos += 12 + length
    width, height, depth, colour = header[:4]
    assert depth == 8 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    previous = bytearray(stride)
    colours = set()
    for row in range(min(height, 900)):  # the top of the page: header, cards, the charts
        kind = raw[row * (stride + 1)]
        line = bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = previous[i]
            c = previous[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if row % 10 == 0:
            colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp * 7))
        previous = line
    return len(colours)
