"""Credentials inside URLs are never printed (issue 13, item 8): ``dbperf alerts --alertmanager``,
``dbperf report --prometheus`` and ``--webhook`` with ``user:password@`` in the URL, run as the
real commands against a closed port, a real Alertmanager with basic auth and a real Prometheus."""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import pytest
import yaml

from conftest import ROOT
from exporter.pgcluster import free_port
from fixtures.report_history import served_history
from test_alerts_support import Alertmanager, alertmanager_test_config

pytestmark = pytest.mark.prom

PASSWORD = "Pw9-s3cr3t:w@rd/x?y"     # needs percent-encoding in a URL
SECRETS = (PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD))
AM_USER, AM_PASSWORD = "admin", "Am-Pass.W0rd"
AM_HASH = "$2b$04$stJPvuHjnQxPsPXbAEv1seB1kK4m7vuZut70R7s5ukgUEl.KG2P3C"  # bcrypt of AM_PASSWORD, cost 4
END = 1795132800  # 2026-11-20T00:00:00Z
PERIOD = f"{END - 86400}..{END}"


def dbperf(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "exporter", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def assert_no_secret(proc: subprocess.CompletedProcess, *secrets: str) -> None:
    for secret in secrets or SECRETS:
        assert secret not in proc.stdout and secret not in proc.stderr, (proc.stdout[-500:], proc.stderr)


def with_password(url: str, user: str = "admin", password: str = PASSWORD) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{quote(password, safe='')}@{rest}"


def test_alerts_to_a_closed_port_hides_the_password():
    port = free_port()
    proc = dbperf("alerts", "--alertmanager", with_password(f"http://127.0.0.1:{port}"), "list")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"dbperf alerts: Alertmanager at http://***@127.0.0.1:{port} is unreachable: ConnectionError"
    assert_no_secret(proc)


@pytest.fixture(scope="module")
def am_with_auth(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("am-auth")
    (workdir / "web.yml").write_text(yaml.safe_dump({"basic_auth_users": {AM_USER: AM_HASH}}))
    manager = Alertmanager(alertmanager_test_config("http://127.0.0.1:9"), workdir,
                           extra_args=(f"--web.config.file={workdir / 'web.yml'}",),
                           userinfo=f"{AM_USER}:{AM_PASSWORD}@")
    yield manager
    manager.stop()


def test_alerts_with_a_wrong_password_in_the_url_hides_it(am_with_auth):
    wrong = "Pw9-wrong-" + PASSWORD
    proc = dbperf("alerts", "--alertmanager", with_password(am_with_auth.url, AM_USER, wrong), "list")
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"dbperf alerts: Alertmanager at http://***@127.0.0.1:{am_with_auth.port} answered 401")
    assert_no_secret(proc, wrong, quote(wrong, safe=""))


def test_alerts_with_the_right_password_in_the_url_work_and_hide_it(am_with_auth):
    url = with_password(am_with_auth.url, AM_USER, AM_PASSWORD)
    listed = dbperf("alerts", "--alertmanager", url, "list")
    assert listed.returncode == 0 and listed.stdout == "no alerts firing\n", listed.stderr
    refused = dbperf("alerts", "--alertmanager", url, "ack", "NoSuchAlert", "-c", "INC-1")
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"dbperf alerts: no alert at http://***@127.0.0.1:{am_with_auth.port} matches NoSuchAlert")
    for proc in (listed, refused):
        assert_no_secret(proc, AM_PASSWORD)


def test_report_to_a_closed_prometheus_hides_the_password():
    port = free_port()
    proc = dbperf("report", "--prometheus", with_password(f"http://127.0.0.1:{port}"), "--period", PERIOD)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"dbperf report: Prometheus unreachable at http://***@127.0.0.1:{port}: Connection refused"
    assert_no_secret(proc)


def write_pg_up(path, end: int) -> dict:
    """The smallest history a report accepts: pg_up of one target, every minute of two days."""
    lines = ["# TYPE pg_up gauge"]
    lines += [f'pg_up{{job="dbperf",instance="db:9847",target="main"}} 1 {t}' for t in range(end - 2 * 86400, end + 1, 60)]
    path.write_text("\n".join(lines) + "\n# EOF\n")
    return {}


@pytest.fixture(scope="module")
def prometheus_url():
    with served_history(write_pg_up, END, prefix="dbperf-url-secrets-") as (url, _):
        yield url


def test_report_hides_the_prometheus_password_in_the_report_and_the_webhook_secret(prometheus_url):
    hook_port = free_port()
    webhook = with_password(f"http://127.0.0.1:{hook_port}/services/T1/B2/HookPathSecret9", "hook")
    proc = dbperf("report", "--prometheus", with_password(prometheus_url), "--period", PERIOD, "--webhook", webhook)
    assert proc.returncode == 1, proc.stderr
    assert "Prometheus: http://***@127.0.0.1:" in proc.stdout  # the report was made, naming its source
    assert proc.stderr.strip() == (f"dbperf report: --webhook: cannot post to http://***@127.0.0.1:{hook_port}/…: "
                                   "ConnectionError")
    assert_no_secret(proc, *SECRETS, "HookPathSecret9")
    as_json = dbperf("report", "--prometheus", with_password(prometheus_url), "--period", PERIOD, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert_no_secret(as_json)
