"""docker-compose.yml: valid for Debian's docker-compose (v1), every file it mounts or builds from
exists, images pinned, health checks everywhere, and the configurations it mounts are valid for the
real tools (promtool, amtool, dbperf check-config) and consistent with each other."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, require_tool

pytestmark = pytest.mark.prom

SERVICES = {"postgres", "dbperf", "app", "load", "prometheus", "alertmanager", "grafana"}


@pytest.fixture(scope="module")
def compose() -> dict:
    tool = require_tool("docker-compose")
    proc = subprocess.run([tool, "-f", "docker-compose.yml", "config"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def mounts(service: dict):
    """(host path, container path) of each bind mount (named volumes excluded)."""
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                yield Path(volume["source"]), volume["target"]
            continue
        source, target = volume.split(":")[:2]
        if source.startswith(("/", ".")):
            yield Path(source), target


def mount_of(service: dict, target: str) -> Path:
    found = [source for source, t in mounts(service) if t == target]
    assert len(found) == 1, f"nothing mounted at {target}"
    return found[0]


def test_config_is_valid_and_complete(compose):
    assert set(compose["services"]) == SERVICES
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name}: no health check"
        image = service.get("image", "")
        if "build" in service:
            build = service["build"]
            dockerfile = Path(build["context"]) / build["dockerfile"]
            assert dockerfile.is_file(), f"{name}: {dockerfile} missing"
            assert re.search(rf"^FROM .+ AS {build['target']}$", dockerfile.read_text(), re.M), \
                f"{name}: no stage {build['target']} in {dockerfile}"
        else:
            assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+(\.\d+)?", image), f"{name}: image {image!r} not pinned"


def test_every_mounted_and_copied_file_exists(compose):
    seen = 0
    for name, service in compose["services"].items():
        for source, target in mounts(service):
            assert source.exists(), f"{name}: mounts {source} at {target}, which does not exist"
            seen += 1
    assert seen >= 8
    dockerfile = (ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim AS base$", dockerfile, re.M)
    for line in re.findall(r"^COPY (.+)$", dockerfile, re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "exporter" not in ignored and "examples" not in ignored


@pytest.mark.fast
def test_the_dbperf_image_installs_the_daemon_and_the_app_image_the_library():
    """``pip install .`` is the application library alone: the dbperf stage needs the server extra
    (else ``dbperf serve`` exits 2 in the container), the app stage needs none of the daemon's."""
    stages = re.split(r"^FROM ", (ROOT / "docker" / "Dockerfile").read_text(), flags=re.M)
    installs = {stage.split()[2]: re.findall(r"^RUN pip install (.+)$", stage, re.M)
                for stage in stages if " AS " in stage.split("\n")[0]}
    assert installs["dbperf"] == ["'.[server]'"], installs
    assert installs["app"] == ["'.[app]'"], installs


def test_postgres_preloads_pg_stat_statements(compose):
    command = compose["services"]["postgres"]["command"]
    assert "shared_preload_libraries=pg_stat_statements" in command
    init = mount_of(compose["services"]["postgres"], "/docker-entrypoint-initdb.d/10-dbperf.sql").read_text()
    assert "GRANT pg_monitor TO dbperf" in init and "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" in init
    assert compose["services"]["postgres"]["image"] == "postgres:16.4"


def test_dbperf_config_passes_check_config(compose):
    service = compose["services"]["dbperf"]
    config = mount_of(service, "/etc/dbperf/dbperf.yaml")
    env = {**os.environ, "PG_DSN": service["environment"]["PG_DSN"]}
    proc = subprocess.run([sys.executable, "-m", "exporter", "check-config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "advisor" in proc.stdout


def test_prometheus_config_with_the_rules_passes_promtool(compose, tmp_path):
    promtool = require_tool("promtool")
    service = compose["services"]["prometheus"]
    config = yaml.safe_load(mount_of(service, "/etc/prometheus/prometheus.yml").read_text())
    rules = mount_of(service, "/etc/prometheus/rules")
    assert rules == ROOT / "alerts" / "rules" and list(rules.glob("*.yml"))
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    # the same file with the rules where they are on this machine, checked by promtool (config and rules)
    config["rule_files"] = [str(rules / "*.yml")]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config))
    proc = subprocess.run([promtool, "check", "config", str(local)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs["dbperf"] == ["dbperf:9847"] and jobs["shop-app"] == ["app:8000"]
    assert jobs["alertmanager"] == ["alertmanager:9093"]
    threshold_file = yaml.safe_load((ROOT / "alerts" / "thresholds.yaml").read_text())
    assert re.fullmatch(threshold_file.get("exporter_job_regex", "dbperf.*"), "dbperf")


def test_grafana_provisioning_matches_the_stack(compose):
    service = compose["services"]["grafana"]
    assert service["image"].startswith("grafana/grafana:10.4.")
    providers = mount_of(service, "/etc/grafana/provisioning/dashboards") / "dbperf.yaml"
    (provider,) = yaml.safe_load(providers.read_text())["providers"]
    assert mount_of(service, provider["options"]["path"]) == ROOT / "dashboards" / "json"
    sources = mount_of(service, "/etc/grafana/provisioning/datasources") / "prometheus.yaml"
    (prom,) = [d for d in yaml.safe_load(sources.read_text())["datasources"] if d["type"] == "prometheus"]
    assert prom["url"] == "http://prometheus:9090"
    prometheus = yaml.safe_load(mount_of(compose["services"]["prometheus"], "/etc/prometheus/prometheus.yml")
                                .read_text())
    # $__rate_interval is only right when Grafana knows the real scrape interval
    assert prom["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]
    home = service["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(provider["options"]["path"]) and (ROOT / "dashboards/json" / Path(home).name).is_file()


def test_alertmanager_config_is_the_shipped_routing_with_silent_receivers(compose, tmp_path):
    from exporter.demo import demo_alertmanager_config

    amtool = require_tool("amtool")
    path = mount_of(compose["services"]["alertmanager"], "/etc/alertmanager/alertmanager.yml")
    config = yaml.safe_load(path.read_text())
    assert config == demo_alertmanager_config(), "regenerate docker/alertmanager/alertmanager.yml (see its header)"
    assert all(set(receiver) == {"name"} for receiver in config["receivers"])   # nothing is ever sent
    proc = subprocess.run([amtool, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the shipped routing still routes: a critical alert reaches the receiver named "critical"
    proc = subprocess.run([amtool, "config", "routes", "test", f"--config.file={path}", "--verify.receivers=critical",
                           "severity=critical", "alertname=PostgreSQLDown"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
