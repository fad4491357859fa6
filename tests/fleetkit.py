"""What the fleet tests and ``bench/fleet.py`` share: a real VictoriaMetrics (Debian's
``victoria-metrics``: a Prometheus remote_write receiver with a PromQL API) on a free port with its
own data directory, ``dbperf serve`` as its own process (so its CPU and memory are its own), the
``/probe`` scrape job with file-based discovery and optional ``hashmod`` sharding, and the
Prometheus-side health of a job's scrapes. Nothing is mocked."""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests
import yaml

from conftest import Proc, require_tool
from exporter.pgcluster import Cluster, free_port


# -- VictoriaMetrics ---------------------------------------------------------------------------

class VictoriaMetrics(Proc):
    """Single-node VictoriaMetrics; ``stop()`` removes its data directory."""

    def __init__(self, timeout: float = 30):
        workdir = Path(tempfile.mkdtemp(prefix="dbperf-vm-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = workdir / "data"
        super().__init__([require_tool("victoria-metrics"), f"-storageDataPath={self.data}",
                          f"-httpListenAddr=127.0.0.1:{self.port}", "-retentionPeriod=1d",
                          # a sample is searchable as soon as it is written (default: 30 s later)
                          "-search.latencyOffset=1s", "-search.disableCache", "-loggerLevel=WARN"],
                         workdir, self.url + "/health", "victoria-metrics", timeout, remove_workdir=True)

    @property
    def write_url(self) -> str:
        return self.url + "/api/v1/write"

    def flush(self) -> None:
        """Make everything received so far searchable (VictoriaMetrics' /internal/force_flush)."""
        requests.get(self.url + "/internal/force_flush", timeout=30).raise_for_status()

    def get(self, path: str, **params) -> dict:
        body = requests.get(self.url + path, params=params, timeout=30).json()
        assert body["status"] == "success", (path, params, body)
        return body["data"]

    def own_metrics(self) -> dict[str, float]:
        """VictoriaMetrics' /metrics, summed by name and ``type`` label: ``vm_rows{type="storage/small"}``."""
        return exposition_sums(self.url + "/metrics", by="type")

    def stored(self) -> tuple[float, float, float]:
        """(samples in parts, their bytes, index bytes), from VictoriaMetrics's own /metrics."""
        own = self.own_metrics()
        rows = sum(v for k, v in own.items() if k.startswith("vm_rows{") and "storage/" in k)
        data = sum(v for k, v in own.items() if k.startswith("vm_data_size_bytes{") and "storage/" in k)
        index = sum(v for k, v in own.items() if k.startswith("vm_data_size_bytes{") and "indexdb" in k)
        return rows, data, index

    def force_merge(self, timeout: float = 600) -> None:
        """Merge this month's parts as VictoriaMetrics eventually does with data a few hours old
        (/internal/force_merge), and wait until no merge runs."""
        requests.get(self.url + "/internal/force_merge", params={"partition_prefix": time.strftime("%Y_%m", time.gmtime())},
                     timeout=timeout).raise_for_status()
        deadline, idle = time.monotonic() + timeout, 0
        while time.monotonic() < deadline and idle < 3:  # the merge runs in the background: idle 3 polls in a row
            time.sleep(1)
            own = self.own_metrics()
            busy = own.get("vm_active_force_merges", 0) + sum(v for k, v in own.items() if k.startswith("vm_active_merges{"))
            idle = 0 if busy else idle + 1

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.data.rglob("*") if p.is_file())


class VMAlert(Proc):
    """vmalert evaluating ``rule_files`` against VictoriaMetrics every ``interval``, writing the recorded
    series back into it with ``ruler="vmalert"`` and sending alerts to ``alertmanager_url``."""

    def __init__(self, vm: VictoriaMetrics, rule_files: list, alertmanager_url: str, interval: str = "2s"):
        workdir = Path(tempfile.mkdtemp(prefix="dbperf-vmalert-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([require_tool("vmalert"), *[f"-rule={path}" for path in rule_files],
                          f"-datasource.url={vm.url}", f"-remoteWrite.url={vm.url}", "-remoteWrite.flushInterval=1s",
                          f"-notifier.url={alertmanager_url}", f"-evaluationInterval={interval}",
                          "-external.label=ruler=vmalert", f"-httpListenAddr=127.0.0.1:{self.port}", "-loggerLevel=WARN"],
                         workdir, self.url + "/health", "vmalert", remove_workdir=True)

    def rules(self) -> list[dict]:
        """Every rule with its group name, health, lastError and lastEvaluation (Prometheus's /api/v1/rules)."""
        groups = requests.get(self.url + "/api/v1/rules", timeout=30).json()["data"]["groups"]
        return [dict(rule, group=g["name"]) for g in groups for rule in g["rules"]]


def exposition_sums(url: str, by: str | None = None) -> dict[str, float]:
    """A /metrics page's samples summed by name (and by the label ``by``: ``name{by="value"}``)."""
    sums: dict[str, float] = {}
    for line in requests.get(url, timeout=30).text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        base, _, labels = name.partition("{")
        kind = next((p.split("=", 1)[1].strip('"') for p in labels.rstrip("}").split(",")
                     if by and p.startswith(f"{by}=")), None)
        key = f'{base}{{{by}="{kind}"}}' if kind else base
        sums[key] = sums.get(key, 0.0) + float(value)
    return sums


def remote_write_to(vm: VictoriaMetrics) -> list[dict]:
    """A Prometheus ``remote_write`` block that delivers within a second (tests read right after)."""
    return [{"url": vm.write_url, "queue_config": {"batch_send_deadline": "1s", "min_backoff": "100ms"}}]


# -- dbperf serve as its own process -----------------------------------------------------------

@dataclass
class Usage:
    at: float       # time.monotonic()
    cpu: float      # user + system seconds
    rss: int        # bytes
    peak: int       # VmHWM: the process's peak RSS, bytes


def usage_of(processes: list[psutil.Process]) -> Usage:
    cpu = rss = peak = 0
    for proc in processes:
        try:
            times = proc.cpu_times()
            cpu += times.user + times.system
            rss += proc.memory_info().rss
            peak += _peak_rss(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return Usage(time.monotonic(), cpu, rss, peak)


def _peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Dbperf(Proc):
    """``dbperf serve --config`` on a free port, in a directory removed by ``stop()``."""

    def __init__(self, config: dict, timeout: float = 60):
        workdir = Path(tempfile.mkdtemp(prefix="dbperf-fleet-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        path = workdir / "dbperf.yaml"
        path.write_text(yaml.safe_dump({**config, "listen": self.address}, sort_keys=False))
        super().__init__([require_tool("dbperf"), "serve", "--config", str(path), "--log-level", "warning"],
                         workdir, self.url + "/healthz", "dbperf", timeout, remove_workdir=True)
        self.process = psutil.Process(self.proc.pid)

    def usage(self) -> Usage:
        return usage_of([self.process])

    def connections_to(self, port: int) -> int:
        """Open TCP connections from this process to ``port`` (its sessions to one PostgreSQL)."""
        return sum(1 for c in self.process.net_connections("tcp") if c.raddr and c.raddr.port == port
                   and c.status == psutil.CONN_ESTABLISHED)


def cluster_processes(cluster: Cluster) -> list[psutil.Process]:
    """The postmaster of ``cluster`` and all its children (backends, background workers)."""
    postmaster = psutil.Process(int((cluster.datadir / "postmaster.pid").read_text().split()[0]))
    return [postmaster, *postmaster.children(recursive=True)]


# -- scraping through /probe -------------------------------------------------------------------

def write_sd(path: Path, names: list[str], **labels) -> None:
    """A file_sd file whose "targets" are dbperf target names; written atomically (Prometheus watches it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps([{"targets": list(names), "labels": labels}]))
    os.replace(tmp, path)


def probe_job(job: str, sd_file: Path, dbperf_address: str, shard: tuple[int, int] | None = None, **extra) -> dict:
    """The scrape job of docs/scaling.md: file_sd gives target names, relabelling sends each to
    ``dbperf_address``/probe?target=NAME; ``shard=(k, n)`` keeps only the names whose hashmod n is k."""
    relabel = []
    if shard is not None:
        k, n = shard
        relabel += [{"source_labels": ["__address__"], "modulus": n, "target_label": "__tmp_shard", "action": "hashmod"},
                    {"source_labels": ["__tmp_shard"], "regex": str(k), "action": "keep"}]
    relabel += [{"source_labels": ["__address__"], "target_label": "__param_target"},
                {"source_labels": ["__param_target"], "target_label": "instance"},
                {"target_label": "__address__", "replacement": dbperf_address}]
    return {"job_name": job, "metrics_path": "/probe",
            "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "1s"}],
            "relabel_configs": relabel, **extra}


def prom_query(url: str, expr: str, at: float | None = None) -> list:
    params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    body = requests.get(url + "/api/v1/query", params=params, timeout=30).json()
    assert body["status"] == "success", (expr, body)
    return body["data"]["result"]


def scalar(url: str, expr: str, default: float = 0.0) -> float:
    result = prom_query(url, expr)
    return float(result[0]["value"][1]) if result else default


def up_count(url: str, job: str) -> int:
    try:
        return int(scalar(url, f'count(up{{job="{job}"}} == 1)'))
    except (requests.RequestException, AssertionError, ValueError):
        return 0


@dataclass
class ScrapeHealth:
    targets: int            # active targets of the job
    errors: list            # (instance, lastError) of the targets whose last scrape failed
    down: int               # targets with up == 0 at least once in the window
    over_timeout: int       # targets with a scrape at or over the scrape timeout in the window
    max_duration: float     # slowest scrape in the window, seconds (Prometheus's scrape_duration_seconds)
    p50_duration: float
    samples: float          # average samples per scrape and target (scrape_samples_scraped)
    dbperf_max: float       # the slowest scrape as dbperf timed it (dbperf_scrape_duration_seconds): the rest of
                            # Prometheus's figure is the network, Prometheus's own work and waiting for a CPU


def scrape_health(url: str, job: str, window: int, timeout: float) -> ScrapeHealth:
    """How the job's scrapes went over the last ``window`` seconds, from Prometheus's own series."""
    active = [t for t in requests.get(url + "/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
              if t["labels"]["job"] == job]
    sel, w = f'{{job="{job}"}}', f"[{window}s]"
    return ScrapeHealth(
        targets=len(active),
        errors=[(t["labels"].get("instance"), t["lastError"]) for t in active if t["lastError"] or t["health"] != "up"],
        down=int(scalar(url, f"count(min_over_time(up{sel}{w}) == 0)")),
        over_timeout=int(scalar(url, f"count(max_over_time(scrape_duration_seconds{sel}{w}) >= {timeout})")),
        max_duration=scalar(url, f"max(max_over_time(scrape_duration_seconds{sel}{w}))"),
        p50_duration=scalar(url, f"quantile(0.5, quantile_over_time(0.5, scrape_duration_seconds{sel}{w}))"),
        samples=scalar(url, f"avg(avg_over_time(scrape_samples_scraped{sel}{w}))"),
        dbperf_max=scalar(url, f"max(max_over_time(dbperf_scrape_duration_seconds{sel}{w}))"))


def machine_busy() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine so far, time.monotonic()): the noise of other work."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0), time.monotonic()


@dataclass
class FleetFigures:
    targets: int
    window: float           # seconds measured
    scrapes: int            # scrapes Prometheus made of the job in the window
    cpu_cores: float        # dbperf's CPU over the window, in cores (CPU seconds per second)
    cpu_per_scrape: float   # dbperf CPU seconds per target scrape
    rss: int                # dbperf RSS at the end, bytes
    rss_base: int           # dbperf RSS before its first scrape, bytes
    peak: int               # dbperf peak RSS so far, bytes
    other_cores: float      # the rest of the machine's busy CPU over the window (the noise), cores
    health: ScrapeHealth

    @property
    def rss_per_target(self) -> float:
        return (self.rss - self.rss_base) / self.targets

    @property
    def targets_per_core(self) -> float:
        """Targets one core holds at this scrape interval, if the cost stays linear."""
        return self.targets / self.cpu_cores if self.cpu_cores else float("inf")

    def line(self) -> str:
        h = self.health
        return (f"{self.targets} targets, {self.scrapes} scrapes in {self.window:.0f} s: dbperf "
                f"{self.cpu_per_scrape * 1000:.1f} ms CPU per target scrape ({self.cpu_cores:.3f} cores, "
                f"{self.targets_per_core:.0f} targets per core at this interval), RSS {self.rss / 1e6:.0f} MB "
                f"(+{self.rss_per_target / 1e6:.2f} MB per target over {self.rss_base / 1e6:.0f} MB), "
                f"scrape p50 {h.p50_duration * 1000:.0f} ms max {h.max_duration * 1000:.0f} ms "
                f"(dbperf's own max {h.dbperf_max * 1000:.0f} ms), "
                f"{h.samples:.0f} samples per scrape; rest of the machine {self.other_cores:.2f} cores busy")


def measure(prom_url: str, job: str, dbperf: Dbperf, targets: int, window: float, timeout: float, rss_base: int,
            ours=lambda: []) -> FleetFigures:
    """dbperf's CPU and memory over the next ``window`` seconds of scraping, with the scrapes' health;
    the processes ``ours()`` lists (Prometheus, PostgreSQL ...) are left out of the machine's noise figure."""
    start, (busy0, _) = dbperf.usage(), machine_busy()
    ours0 = usage_of(ours()).cpu
    time.sleep(window)  # a measurement window: nothing is awaited
    end, (busy1, _) = dbperf.usage(), machine_busy()
    ours1 = usage_of(ours()).cpu
    elapsed = end.at - start.at
    scrapes = int(scalar(prom_url, f'sum(count_over_time(up{{job="{job}"}}[{int(elapsed)}s]))'))
    cpu = end.cpu - start.cpu
    other = (busy1 - busy0) - cpu - (ours1 - ours0)
    return FleetFigures(targets, elapsed, scrapes, cpu / elapsed, cpu / max(scrapes, 1), end.rss, rss_base, end.peak,
                        max(other, 0.0) / elapsed, scrape_health(prom_url, job, int(elapsed), timeout))
