"""The structure of the generated rules, checked without running anything.

Prometheus evaluates the rules of one group in order, at one timestamp, each seeing the results of
those before it; groups run in no fixed order (promtool picks one at random, Prometheus staggers
them). So a rule may read a recorded series only when that series is recorded earlier in its own
group: read from another group it is this evaluation's value or the previous one, by chance (a unit
test that fails one run in eight, an alert value that lags an interval). And a ratio an alert's text
shows is computed in one expression: numerator and denominator over the same window at the same
instant, never a raw rate divided by a series recorded elsewhere ("102.4% of the requests")."""

from __future__ import annotations

import re

import pytest
import yaml

from test_alerts_support import generate, metric_names

pytestmark = pytest.mark.fast

PROFILES = ("production", "development", "test")


def groups_of(profile: str) -> list[tuple[str, dict]]:
    """(file name, group) of every group of a profile: the checked-in files for the checked-in
    profiles (what users load), generated in memory for the others."""
    if profile in generate.CHECKED_IN:
        out = []
        for path in sorted(generate.out_dir(profile).glob("*.yml")):
            out += [(path.name, g) for g in yaml.safe_load(path.read_text())["groups"]]
        return out
    values = generate.load_profile(profile)
    return [(f"{c}.yml", g) for c in generate.CONCERNS for g in generate.build(c, values)["groups"]]


def order_problems(groups: list[tuple[str, dict]]) -> list[str]:
    """Each rule that reads a recorded series not recorded earlier in its own group."""
    recorded = {r["record"]: (f, g["name"]) for f, g in groups for r in g["rules"] if "record" in r}
    problems = []
    for file, group in groups:
        here = [r["record"] for r in group["rules"] if "record" in r]
        seen = set()
        for rule in group["rules"]:
            for name in sorted(metric_names(rule["expr"])):
                if name in seen or not (name in recorded or name.startswith("dbperf:")):
                    continue
                if name in here:
                    where = "later in the same group"
                elif name in recorded:
                    where = "in group {1} of {0}".format(*recorded[name])
                else:
                    where = "by no rule"
                problems.append(f"{file}: group {group['name']}: {rule.get('alert') or rule['record']} reads "
                                f"{name}, recorded {where}")
            if "record" in rule:
                seen.add(rule["record"])
    return problems


@pytest.mark.parametrize("profile", PROFILES)
def test_every_rule_reads_only_series_recorded_earlier_in_its_own_group(profile):
    groups = groups_of(profile)
    assert groups and any("record" in r for _, g in groups for r in g["rules"])
    assert order_problems(groups) == []


def test_the_check_finds_recording_rules_of_another_group():
    """The layout before: each concern's recording rules in a group of their own."""
    split = []
    for file, group in groups_of("production"):
        records = [r for r in group["rules"] if "record" in r]
        if records:
            split.append((file, {"name": group["name"] + "-recording", "rules": records}))
        split.append((file, {"name": group["name"], "rules": [r for r in group["rules"] if "alert" in r]}))
    problems = order_problems(split)
    assert ("host.yml: group dbperf-host: HostFilesystemFillingUp reads dbperf:host_filesystem:avail_ratio, "
            "recorded in group dbperf-host-recording of host.yml") in problems
    # and a recording rule moved after the alert that reads it
    group = {"name": "g", "rules": [{"alert": "A", "expr": "dbperf:x:ratio > 1"}, {"record": "dbperf:x:ratio", "expr": "1"}]}
    assert order_problems([("f.yml", group)]) == ["f.yml: group g: A reads dbperf:x:ratio, recorded later in the same group"]
    with pytest.raises(SystemExit, match="group g: A reads dbperf:x:ratio, not recorded earlier in the same group"):
        generate.check_order(group)


def value_expression(expr: str) -> str:
    """The operand an alert's ``$value`` comes from: the expression before its first comparison."""
    masked = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: "_" * len(m.group()), expr)
    masked = re.sub(r"\{[^}]*\}", lambda m: "_" * len(m.group()), masked)
    m = re.search(r"==|!=|>=|<=|>|<", masked)
    return expr[:m.start()] if m else expr


def ratio_problems(alerts: list[dict]) -> list[str]:
    """Alerts whose text shows ``$value`` as a percentage computed from a recorded series and raw
    series together, or from two recorded series."""
    recorded_names = {name for name in metric_names(" ".join(a["expr"] for a in alerts)) if name.startswith("dbperf:")}
    problems = []
    for a in alerts:
        if "$value | humanizePercentage" not in a["annotations"]["description"]:
            continue
        names = metric_names(value_expression(a["expr"]))
        recorded = names & recorded_names
        if recorded and names != recorded or len(recorded) > 1:
            problems.append(f"{a['alert']} ({a['labels']['severity']}): its percentage mixes {', '.join(sorted(names))}")
    return problems


def test_ratios_in_alert_texts_come_from_one_expression():
    alerts = [r for _, g in groups_of("production") for r in g["rules"] if "alert" in r]
    shown = [a for a in alerts if "$value | humanizePercentage" in a["annotations"]["description"]]
    assert len(shown) >= 10
    assert ratio_problems(alerts) == []
    # the text of AppSlowRequests before: a raw rate over a recorded one
    before = dict(next(a for a in shown if a["alert"] == "AppSlowRequests"),
                  expr="sum by (job, handler) (rate(http_slow_requests_total[5m]))\n"
                       "/ dbperf:http_requests:rate5m > 0.05\nand dbperf:http_requests:rate5m > 0.1")
    assert ratio_problems([before]) == ["AppSlowRequests (warning): its percentage mixes "
                                        "dbperf:http_requests:rate5m, http_slow_requests_total"]


def test_value_expression():
    assert value_expression('rate(a{x!="1"}[5m]) / rate(b[5m]) > 0.01') == 'rate(a{x!="1"}[5m]) / rate(b[5m]) '
    assert value_expression("dbperf:a:ratio < 0.1\nand b > 0") == "dbperf:a:ratio "
    assert value_expression("vector(1)") == "vector(1)"
