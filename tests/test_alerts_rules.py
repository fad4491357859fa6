"""The alert rules: generated files up to date, promtool lint and unit tests, a firing and a quiet
case for every alert, and the house style (names, severities, annotations, runbook anchors, pairs)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import defaultdict

import pytest
import yaml

from conftest import require_tool
from test_alerts_support import ALERTS, RULES, alerts, generate, rule_files, rules

pytestmark = pytest.mark.prom

UNIT_TESTS = sorted((ALERTS / "tests").glob("*.yml"))
ALWAYS_FIRING = {"Watchdog"}  # fires by design: there is no healthy state to test


def test_generated_files_are_up_to_date():
    proc = subprocess.run([sys.executable, str(ALERTS / "generate.py"), "--all", "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("profile", ["production", "development", "test"])
def test_promtool_check_rules_with_lint(profile, tmp_path):
    out = tmp_path / profile
    assert generate.main(["--profile", profile, "--out", str(out)]) == 0
    files = sorted(out.glob("*.yml"))
    assert [f.name for f in files] == [f"{c}.yml" for c in sorted(generate.CONCERNS)]
    proc = subprocess.run([require_tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", *map(str, files)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checked_in_rules_pass_promtool():
    files = rule_files(RULES) + rule_files(ALERTS / "rules-development")
    proc = subprocess.run([require_tool("promtool"), "check", "rules", "--lint=all", "--lint-fatal", *map(str, files)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", UNIT_TESTS, ids=lambda p: p.name)
def test_promtool_unit_tests(path):
    proc = subprocess.run([require_tool("promtool"), "test", "rules", path.name], cwd=path.parent,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


def _cases():
    fires, quiet = defaultdict(list), defaultdict(list)
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                where = f"{path.name}: {test['name']} @ {case['eval_time']}"
                (fires if case.get("exp_alerts") else quiet)[case["alertname"]].append(where)
    return fires, quiet


def test_every_alert_has_a_firing_and_a_quiet_case():
    fires, quiet = _cases()
    names = {a["alert"] for a in alerts()}
    assert names - set(fires) == set(), "alerts without a case where they fire"
    assert names - set(quiet) - ALWAYS_FIRING == set(), "alerts without a case where they must not fire"
    assert set(fires) | set(quiet) <= names, "unit tests of alerts that do not exist"
    # and every unit-test file covers the rule file it loads, each alert of it in a healthy case
    for path in UNIT_TESTS:
        data = yaml.safe_load(path.read_text())
        assert data["rule_files"] == [f"../rules/{path.name.split('_')[0].removesuffix('.yml')}.yml"], path.name


def test_every_severity_of_a_pair_fires_in_some_case():
    """A warning/critical pair: each of the two rules is seen firing in a unit test."""
    seen = defaultdict(set)
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                for exp in case.get("exp_alerts") or []:
                    seen[case["alertname"]].add(exp["exp_labels"]["severity"])
    for alert in alerts():
        assert alert["labels"]["severity"] in seen[alert["alert"]], f"{alert['alert']} {alert['labels']['severity']}"


def _anchors(markdown: str) -> set[str]:
    out = set()
    for line in markdown.splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            out.add(re.sub(r"[^a-z0-9 _-]", "", m.group(1).strip().lower()).replace(" ", "-"))
    return out


def test_alert_style():
    anchors = _anchors((ALERTS / "runbook.md").read_text())
    base = yaml.safe_load((ALERTS / "thresholds.yaml").read_text())["runbook_base_url"]
    by_name = defaultdict(list)
    for a in alerts():
        name = a["alert"]
        by_name[name].append(a)
        assert re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z][a-zA-Z0-9]*)*", name), f"{name}: not CamelCase"
        assert a["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert "for" in a, f"{name}: no for:"
        if name not in ALWAYS_FIRING:
            assert a["for"] != "0s" or a["labels"]["severity"] == "info", f"{name}: a page needs a for:"
        ann = a["annotations"]
        assert set(ann) == {"summary", "description", "runbook_url"}, name
        summary = ann["summary"]
        assert summary[0].isupper() and summary.endswith(".") and "{{" not in summary, f"{name}: summary {summary!r}"
        assert summary.count(". ") == 0, f"{name}: one sentence"
        if name not in ALWAYS_FIRING and "absent(" not in a["expr"]:  # those have no values or labels to show
            assert "{{" in ann["description"], f"{name}: description without values or labels"
        assert ann["runbook_url"] == f"{base}#{name.lower()}", name
        assert name.lower() in anchors, f"{name}: no section in alerts/runbook.md"
        assert "irate(" not in a["expr"], f"{name}: irate() in an alert flaps"
    for name, group in by_name.items():
        severities = sorted(a["labels"]["severity"] for a in group)
        assert len(severities) == len(set(severities)), f"{name}: two rules with one severity"
        if len(group) == 2:
            assert severities == ["critical", "warning"], f"{name}: a pair is a warning and a critical"
            assert group[0]["annotations"]["summary"] == group[1]["annotations"]["summary"], name
        assert len(group) <= 2, name
    # the names of a file share a prefix per concern
    prefixes = {"postgres.yml": ("PostgreSQL", "Dbperf"), "queries.yml": ("PostgreSQL",),
                "application.yml": ("App",), "pipelines.yml": ("Pipeline",), "pgbouncer.yml": ("PgBouncer",), "mysql.yml": ("MySQL",),
                "host.yml": ("Host",), "monitoring.yml": ("Watchdog", "Prometheus", "Alertmanager")}
    for a in alerts():
        assert a["alert"].startswith(prefixes[a["_file"]]), f"{a['alert']} in {a['_file']}"


def test_recording_rule_names_follow_the_convention():
    recorded = [r["record"] for r in rules() if "record" in r]
    assert len(recorded) == len(set(recorded)), "a recording rule is defined twice"
    for name in recorded:
        assert re.fullmatch(r"dbperf:[a-z0-9_]+:[a-z0-9_]+", name), name
    # the shared series the dashboards use
    for name in ("dbperf:pg_connections:use_ratio", "dbperf:pg_stat_database_blks:hit_ratio_rate5m",
                 "dbperf:pg_stat_database_xact:rollback_ratio_rate5m", "dbperf:pg_statement_duration_seconds:p50_rate5m",
                 "dbperf:pg_statement_duration_seconds:p95_rate5m", "dbperf:pg_statement_duration_seconds:p99_rate5m",
                 "dbperf:pg_stat_statements_mean_seconds:rate5m", "dbperf:http_requests:error_ratio_rate5m",
                 "dbperf:http_request_duration_seconds:p99_rate5m", "dbperf:http_requests:error_burn_rate1h",
                 "dbperf:http_requests:latency_burn_rate5m"):
        assert name in recorded, name


def test_every_recorded_series_an_alert_reads_is_recorded():
    recorded = {r["record"] for r in rules() if "record" in r}
    from test_alerts_support import metric_names
    for a in alerts():
        for name in metric_names(a["expr"]):
            if name.startswith("dbperf:"):
                assert name in recorded, f"{a['alert']} reads {name}, which no rule records"


def test_profiles_differ_only_in_values_and_the_test_profile_is_fast(tmp_path):
    prod = {(a["alert"], a["labels"]["severity"]): a for a in generate.build_all("production")}
    fast = {(a["alert"], a["labels"]["severity"]): a for a in generate.build_all("test")}
    assert prod.keys() == fast.keys()
    for key in ("PostgreSQLDown", "PostgreSQLIdleInTransaction", "PostgreSQLTooManyConnections", "PipelineRunFailed"):
        for (name, _), a in fast.items():
            if name == key:
                assert generate.seconds(a["for"]) <= 5, (name, a["for"])


def test_thresholds_file_rejects_unknown_keys(tmp_path):
    path = tmp_path / "thresholds.yaml"
    data = yaml.safe_load((ALERTS / "thresholds.yaml").read_text())
    data["profiles"]["test"]["pg_down_fro"] = "1s"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(SystemExit, match="pg_down_fro: not a key of the base profile"):
        generate.load_profile("test", path)
    with pytest.raises(SystemExit, match="unknown profile 'nope'"):
        generate.load_profile("nope", path)
