"""The dashboards: generated JSON up to date, the conventions (dashboard-linter's rules, mirrored in
Python), every metric known, and every PromQL expression parsed by the real ``promtool``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, require_tool

pytestmark = pytest.mark.prom

sys.path.insert(0, str(ROOT / "dashboards"))
from queries import load_all, panels, substitute  # noqa: E402

DASHBOARDS = load_all()
DS = {"type": "prometheus", "uid": "${datasource}"}
UNITS = {"none", "short", "percentunit", "s", "ms", "dtdurations", "dateTimeFromNow", "bytes", "decbytes", "Bps",
         "ops", "reqps", "cps", "bool_on_off"}
EXPECTED = {"overview.json", "postgresql-server.json", "queries.json", "tables-indexes.json", "application.json",
            "pipelines.json", "pgbouncer-host.json", "monitoring-health.json", "logs-access.json", "mysql-server.json"}
FUNCTIONS = {"rate", "irate", "increase", "sum", "max", "min", "avg", "count", "topk", "bottomk", "by", "on",
             "without", "group_left", "group_right", "histogram_quantile", "time", "vector", "delta", "and", "or",
             "unless", "bool", "label_values", "le"}


def all_targets():
    for name, dash in DASHBOARDS.items():
        for panel in panels(dash):
            for t in panel.get("targets", []):
                yield name, panel, t


@pytest.mark.fast
def test_generated_json_is_up_to_date():
    proc = subprocess.run([sys.executable, str(ROOT / "dashboards" / "generate.py"), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(DASHBOARDS) == EXPECTED


def test_drift_check_fails_on_a_hand_edit(tmp_path):
    out = tmp_path / "json"
    assert subprocess.run([sys.executable, str(ROOT / "dashboards" / "generate.py"), "--out", str(out)],
                          capture_output=True, timeout=60).returncode == 0
    edited = json.loads((out / "overview.json").read_text())
    edited["title"] = "hand edited"
    (out / "overview.json").write_text(json.dumps(edited, indent=2) + "\n")
    proc = subprocess.run([sys.executable, str(ROOT / "dashboards" / "generate.py"), "--check", "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "overview.json is out of date" in proc.stdout


@pytest.mark.fast
def test_dashboard_level_conventions():
    uids, titles = set(), set()
    for name, dash in DASHBOARDS.items():
        assert "__inputs" not in dash, name
        assert dash["schemaVersion"] == 39, name                 # Grafana 10.4
        assert re.fullmatch(r"dbperf-[a-z0-9-]{3,30}", dash["uid"]), (name, dash["uid"])
        assert dash["uid"] not in uids and dash["title"] not in titles, name
        uids.add(dash["uid"])
        titles.add(dash["title"])
        assert dash["id"] is None and dash["editable"] is False and dash["graphTooltip"] == 1, name
        assert dash["description"] and "dbperf" in dash["tags"], name
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), name
        for p in dash["panels"]:                                   # the grid: inside 24 columns, no overlap
            pos = p["gridPos"]
            assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24, (name, p["title"])
        cells = set()
        for p in dash["panels"]:
            pos = p["gridPos"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in cells, f"{name}: {p['title']} overlaps another panel"
                    cells.add((x, y))


@pytest.mark.fast
def test_variables():
    for name, dash in DASHBOARDS.items():
        variables = dash["templating"]["list"]
        first = variables[0]
        assert (first["type"], first["name"], first["query"], first["label"]) == \
            ("datasource", "datasource", "prometheus", "Data source"), name
        assert [v for v in variables if v["type"] == "datasource"] == [first], name
        names = {v["name"] for v in variables}
        assert any(n.endswith("job") for n in names), f"{name}: no job variable"
        assert any(n.endswith("instance") for n in names), f"{name}: no instance variable"
        for v in variables[1:]:
            if v["type"] != "query":
                assert v["type"] == "custom", (name, v["name"])
                continue
            assert v["datasource"] == DS, (name, v["name"])
            assert v["refresh"] == 2, f"{name}: {v['name']} must refresh on time range change"
            assert v["multi"] and v["includeAll"] and v["allValue"] == ".+", (name, v["name"])
            assert v["query"]["query"].startswith("label_values("), (name, v["name"])
            # a variable only refers to variables defined before it
            earlier = {w["name"] for w in variables[:variables.index(v)]}
            for ref in re.findall(r"\$(\w+)", v["query"]["query"]):
                assert ref in earlier, f"{name}: {v['name']} uses ${ref} before it is defined"


@pytest.mark.fast
def test_panel_conventions():
    for name, dash in DASHBOARDS.items():
        defined = {v["name"] for v in dash["templating"]["list"]}
        for panel in panels(dash):
            where = f"{name}: {panel['title']!r}"
            assert panel["title"] and len(panel.get("description", "")) > 15, f"{where}: title and description"
            assert panel["datasource"] == DS, f"{where}: datasource must be ${{datasource}}"
            unit = panel["fieldConfig"]["defaults"].get("unit")
            assert unit in UNITS, f"{where}: unit {unit!r}"
            for override in panel["fieldConfig"]["overrides"]:
                for prop in override["properties"]:
                    if prop["id"] == "unit":
                        assert prop["value"] in UNITS, f"{where}: unit {prop['value']!r}"
            assert panel["targets"], f"{where}: no query"
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), where
            for t in panel["targets"]:
                assert t["datasource"] == DS, where
                for ref in re.findall(r"\$\{?(\w+)", t["expr"]):
                    assert ref.startswith("__") or ref in defined, f"{where}: ${ref} is not a variable"
            if panel["type"] == "timeseries":
                assert all(not t["instant"] for t in panel["targets"]), where
            if panel["type"] == "table":
                assert all(t["instant"] and t["format"] == "table" for t in panel["targets"]), where


def _selectors(expr: str):
    """(metric, matchers, rest of the expression after the selector) for each ``metric{...}``."""
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        yield m.group(1), m.group(2), expr[m.end():], expr[:m.start()]


@pytest.mark.fast
def test_queries_follow_the_rules():
    for name, panel, t in all_targets():
        expr, where = t["expr"], f"{name}: {panel['title']!r} {t['refId']}"
        for fn, window in re.findall(r"\b(rate|irate|increase|delta)\((?:[^()]|\([^()]*\))*?\[([^\]]+)\]", expr):
            if fn in ("rate", "irate"):
                assert window == "$__rate_interval", f"{where}: {fn}() must use $__rate_interval, not {window}"
            else:
                assert window in ("$__range", "$__rate_interval", "1h"), f"{where}: {fn}() over {window}"
        selectors = list(_selectors(expr))
        assert selectors, f"{where}: no selector"
        for metric, matchers, after, before in selectors:
            assert re.search(r'\bjob=~"\$', matchers), f"{where}: {metric} without a job variable matcher"
            uses_instance = any(v["name"].endswith("instance") for v in DASHBOARDS[name]["templating"]["list"])
            exempt = metric.startswith("dbperf:http") or "$prometheus_job" in matchers or "$alertmanager_job" in matchers
            if uses_instance and not exempt:
                assert re.search(r'\binstance=~"\$', matchers), f"{where}: {metric} without an instance matcher"
            # counters only through rate/irate/increase (a raw counter is meaningless on a graph)
            if ":" not in metric and re.search(r"_(total|bucket|count|sum)$", metric):
                assert after.startswith("["), f"{where}: counter {metric} without a range"
                assert re.search(r"\b(rate|irate|increase)\($", before), f"{where}: counter {metric} not in rate()"
            else:
                assert not (after.startswith("[") and re.search(r"\b(rate|irate|increase)\($", before)), \
                    f"{where}: rate() over the gauge {metric}"


def known_metrics() -> set:
    """Metric names dbperf and exporter.instrument document (README's generated reference, docs/instrument.md,
    docs/logs-and-access.md),
    the recording rules of alerts/rules, and what Prometheus and Alertmanager expose about themselves."""
    readme = (ROOT / "README.md").read_text()
    reference = readme[readme.index("<!-- metrics:begin -->"):readme.index("<!-- metrics:end -->")]
    names = set(re.findall(r"^\| `([a-z_]+)`", reference, re.M))
    for doc in ("instrument.md", "logs-and-access.md"):  # the library's; the server log's metrics and their panels
        names |= set(re.findall(r"^\| `([a-z_]+)`", (ROOT / "docs" / doc).read_text(), re.M))
    names |= {"pgbouncer_up", "mysql_up"}
    # the reference as exporter.docs generates it (README's copy is regenerated by `python -m exporter.docs --write`)
    from exporter.docs import reference
    names |= set(re.findall(r"^\| `([a-z_]+)`", reference(), re.M))
    for path in (ROOT / "alerts" / "rules").glob("*.yml"):
        for group in yaml.safe_load(path.read_text())["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


@pytest.mark.fast
def test_every_metric_is_known():
    known = known_metrics()
    unknown = set()
    for name, panel, t in all_targets():
        for metric, _, _, _ in _selectors(t["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", metric)
            if metric in known or base in known or metric.startswith(("pg_settings_", "prometheus_", "alertmanager_",
                                                                       "process_")):
                continue
            if metric in ("ALERTS", "up", "scrape_duration_seconds"):
                continue
            unknown.add(f"{name}: {panel['title']!r}: {metric}")
    assert not unknown, sorted(unknown)


def test_every_expression_parses_with_promtool():
    promtool = require_tool("promtool")
    rules, where = [], []
    for name, panel, t in all_targets():
        rules.append({"record": f"dashboard:expr_{len(rules)}:check", "expr": substitute(t["expr"], {"topn": "10"})})
        where.append(f"{name}: {panel['title']!r} {t['refId']}")
    for name, dash in DASHBOARDS.items():
        for v in dash["templating"]["list"]:
            m = re.fullmatch(r"label_values\((.+), *(\w+)\)", v["query"]["query"]) if v["type"] == "query" else None
            if v["type"] == "query":
                assert m, f"{name}: {v['name']}: not label_values(selector, label)"
                rules.append({"record": f"dashboard:var_{len(rules)}:check", "expr": substitute(m.group(1))})
                where.append(f"{name}: variable {v['name']}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboards.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
        proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(rules)} rules found" in proc.stdout, proc.stdout
    assert len(rules) > 200


def test_promtool_check_catches_a_broken_expression(tmp_path):
    """The parse check above can fail: a typo in one expression is reported."""
    promtool = require_tool("promtool")
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "d", "rules": [
        {"record": "dashboard:bad:check", "expr": substitute('sum by (datname (rate(x{job=~"$job"}[$__rate_interval]))')}]}]}))
    proc = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


@pytest.mark.fast
def test_provisioning_files():
    providers = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/dbperf.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["folder"] and provider["options"]["path"]
    sources = yaml.safe_load((ROOT / "dashboards/provisioning/datasources/prometheus.yaml").read_text())
    prom = [d for d in sources["datasources"] if d["type"] == "prometheus"]
    assert len(prom) == 1 and prom[0]["uid"] and prom[0]["isDefault"] is True
    assert re.fullmatch(r"\d+s", prom[0]["jsonData"]["timeInterval"])
    # dashboards never hard-code the provisioned uid (they use their datasource variable)
    for name, dash in DASHBOARDS.items():
        assert prom[0]["uid"] not in json.dumps(dash), name


@pytest.mark.parametrize("uid,table_title,kind", [("dbperf-postgres", "Servers", "pg"),
                                                   ("dbperf-mysql", "MySQL servers", "mysql")])
def test_overview_links_to_the_server_dashboard(uid, table_title, kind):
    overview = DASHBOARDS["overview.json"]
    assert uid in {d["uid"] for d in DASHBOARDS.values()}
    (servers,) = [p for p in panels(overview) if p["title"] == table_title]
    links = [prop["value"][0]["url"] for o in servers["fieldConfig"]["overrides"] for prop in o["properties"]
             if prop["id"] == "links"]
    assert links and all(f"/d/{uid}/" in url and "var-instance=${__data.fields.instance}" in url
                         and "var-target=${__data.fields.target}" in url for url in links)
    # the per-server time series of each kind link each series to its kind's server dashboard
    series = [(p, link["url"]) for p in panels(overview) if p["type"] == "timeseries"
              for link in p["fieldConfig"]["defaults"]["links"]]
    assert len(series) == 4
    mine = [(p, url) for p, url in series if f"/d/{uid}/" in url]
    assert len(mine) == 2 and all("var-target=${__field.labels.target}" in url for _, url in mine)
    assert all(re.search(rf"(^|[^a-z_]){kind}_", t["expr"]) for p, _ in mine for t in p["targets"])


@pytest.mark.fast
def test_a_route_links_to_its_statements_with_their_text_and_plan():
    queries = DASHBOARDS["queries.json"]
    (table_,) = [p for p in panels(queries) if p["title"] == "Statements of the selected routes by DB load"]
    (expr,) = [t["expr"] for t in table_["targets"]]
    assert 'pg_route_statement_active_seconds_total{' in expr and 'route=~"$route"' in expr
    assert "pg_stat_statements_query_info" in expr and "pg_statement_plan_info" in expr
    assert "route" in {v["name"] for v in queries["templating"]["list"]}
    # the Application dashboard's per-route series land on the Queries dashboard, the route selected
    urls = [link["url"] for p in panels(DASHBOARDS["application.json"]) if p["type"] == "timeseries"
            for link in p["fieldConfig"]["defaults"].get("links", [])]
    assert urls and all("/d/dbperf-queries/" in u and "var-route=${__field.labels.handler}" in u for u in urls)
