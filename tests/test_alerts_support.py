"""Helpers for the alert tests (no tests here): the generated rules, PromQL metric names, the real
``prometheus`` and ``prometheus-alertmanager`` on loopback, and a webhook receiver."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import requests
import yaml

from conftest import ROOT, Proc, require_tool
from exporter.pgcluster import free_port

ALERTS = ROOT / "alerts"
RULES = ALERTS / "rules"
sys.path.insert(0, str(ALERTS))
import generate  # noqa: E402  (alerts/generate.py)

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool", "group_left",
            "group_right", "inf", "nan", "le"}


def rule_files(directory: Path = RULES) -> list[Path]:
    return sorted(directory.glob("*.yml"))


def rules(directory: Path = RULES) -> list[dict]:
    """Every rule of every group, each with ``_file`` and ``_group``."""
    out = []
    for path in rule_files(directory):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                out.append(dict(rule, _file=path.name, _group=group["name"]))
    return out


def alerts(directory: Path = RULES) -> list[dict]:
    return [r for r in rules(directory) if "alert" in r]


def _strip(expr: str) -> str:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)                       # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)                                 # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)                                # ranges
    return re.sub(r"\boffset\s+\w+", " ", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression reads (recording-rule names included)."""
    text = _strip(expr)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", text):
        name, call = m.group(1), m.group(2)
        if call or name in KEYWORDS:
            continue
        names.add(name)
    return names


def range_function_args(expr: str) -> list[tuple[str, str]]:
    """(function, metric) for rate/irate/increase/deriv/predict_linear/delta/changes applied to a
    selector: ``rate(x{...}[5m])`` -> ("rate", "x")."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    pattern = r"\b(rate|irate|increase|deriv|predict_linear|delta|idelta|changes|resets)\s*\(\s*([a-zA-Z_:][\w:]*)"
    return re.findall(pattern, expr)


# -- real processes (Proc and Prometheus live in conftest, shared with the other tests) ----------

class Alertmanager(Proc):
    def __init__(self, config: dict | str, workdir: Path | None = None, extra_args: tuple = (), userinfo: str = ""):
        """``userinfo``: ``user:password@`` for the readiness check of one with basic auth."""
        owned = workdir is None
        workdir = workdir or Path(tempfile.mkdtemp(prefix="dbperf-am-"))
        path = workdir / "alertmanager.yml"
        path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([require_tool("prometheus-alertmanager"), f"--config.file={path}",
                          f"--storage.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                          "--cluster.listen-address=", *extra_args], workdir,
                         f"http://{userinfo}127.0.0.1:{self.port}/-/ready", "alertmanager", remove_workdir=owned)

    def post_alerts(self, *label_sets: dict) -> None:
        body = [{"labels": labels, "annotations": {"summary": "test."}} for labels in label_sets]
        response = requests.post(self.url + "/api/v2/alerts", json=body, timeout=5)
        assert response.status_code == 200, response.text

    def alerts(self) -> list[dict]:
        return requests.get(self.url + "/api/v2/alerts", timeout=5).json()


class Webhook:
    """An HTTP receiver for Alertmanager's webhook notifications; keeps every payload."""

    def __init__(self):
        self.payloads: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with outer.lock:
                    outer.payloads.append(dict(json.loads(body), _path=self.path))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self, alertname: str, status: str | None = None, path: str | None = None) -> list[dict]:
        """(payload, alert) pairs flattened to alerts, with the payload's receiver and status."""
        with self.lock:
            payloads = list(self.payloads)
        found = []
        for p in payloads:
            if path and p["_path"] != path:
                continue
            for a in p["alerts"]:
                if a["labels"].get("alertname") == alertname and (status is None or a["status"] == status):
                    found.append(dict(a, _receiver=p["receiver"], _path=p["_path"]))
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_test_config(receiver_url: str, group_wait="1s", group_interval="2s", repeat_interval="4s") -> dict:
    """alerts/alertmanager.yml with the same routes and inhibitions, every receiver a webhook to
    ``receiver_url/<receiver>``, and second-scale timers."""
    config = yaml.safe_load((ALERTS / "alertmanager.yml").read_text())
    config.pop("global", None)
    for receiver in config["receivers"]:
        name = receiver["name"]
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        if name != "null":
            receiver["webhook_configs"] = [{"url": f"{receiver_url}/{name}", "send_resolved": True}]

    def shorten(route):
        for key, value in (("group_wait", group_wait), ("group_interval", group_interval),
                           ("repeat_interval", repeat_interval)):
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    return config


# the end-to-end modules' Alertmanager timers: a group is flushed every second, and a firing alert
# is repeated at the first flush 1.5 s after it was last sent, so every other flush (every 2 s): a
# test sees a repeat, a heartbeat and a resolution within seconds
E2E_TIMERS = {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1500ms"}


def alerting_stack(dbperf_url: str, rules: Path, workdir: Path, started: list) -> tuple[Webhook, Alertmanager, object]:
    """A webhook receiver, the real Alertmanager (alerts/alertmanager.yml's routes, E2E_TIMERS)
    sending to it, and the real Prometheus scraping dbperf at ``dbperf_url`` with the rule
    files in ``rules``; each one's stop is appended to ``started``. Firing alerts are re-sent every
    second, not every minute: the first ones go out before Prometheus has discovered the Alertmanager.

    Start it first, dbperf after it (on the port of ``dbperf_url``): Prometheus applies what its
    discovery found 5 s after it starts, and the rest of the setup fits in that wait."""
    from conftest import Prometheus

    hook = Webhook()
    started.append(hook.close)
    am = Alertmanager(alertmanager_test_config(hook.url, **E2E_TIMERS), workdir)
    started.append(am.stop)
    prom = Prometheus([{"job_name": "dbperf", "static_configs": [{"targets": [dbperf_url.removeprefix("http://")]}]}],
                      [str(p) for p in sorted(rules.glob("*.yml"))], am.url, workdir,
                      extra_args=("--rules.alert.resend-delay=1s",))
    started.append(prom.stop)
    return hook, am, prom


@contextlib.contextmanager
def e2e_workdir(prefix: str):
    """``with e2e_workdir("dbperf-x-") as (workdir, rules, started)``: a temporary directory with
    the `test` profile's rules in ``rules``, and a list of stops the caller appends to as it starts
    things. On the way out every stop runs, newest first, even when one of them fails; the directory
    is removed last. A failed stop is raised then, unless the setup or a test failed first (that
    error is the one reported)."""
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    rules = workdir / "rules"
    started, failed = [], None
    try:
        assert generate.main(["--profile", "test", "--out", str(rules)]) == 0
        yield workdir, rules, started
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception as exc:  # noqa: BLE001 - the other stops still run; raised below
                failed = failed or exc
        shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        raise failed
