"""host_* metrics against psutil and os.statvfs read on the same machine, served by a real dbperf."""

from __future__ import annotations

import os
import time

import psutil
import pytest

from conftest import make_config

pytestmark = pytest.mark.pg


@pytest.fixture
def served(pg, serve):
    return serve(make_config(pg))


def test_memory_and_cpus_match_psutil(served):
    samples = served.metrics()
    assert samples.value("host_memory_total_bytes") == psutil.virtual_memory().total
    assert samples.value("host_swap_total_bytes") == psutil.swap_memory().total
    assert samples.value("host_cpus") == psutil.cpu_count()
    assert samples.value("host_boot_time_seconds") == pytest.approx(psutil.boot_time(), abs=1)
    available = samples.value("host_memory_available_bytes")
    assert 0 < available <= samples.value("host_memory_total_bytes")
    assert samples.value("dbperf_host_collector_success") == 1


def test_root_filesystem_size_matches_statvfs(served):
    samples = served.metrics()
    root = next(p for p in psutil.disk_partitions(all=False) if p.mountpoint == "/")
    st = os.statvfs("/")
    labels = dict(mountpoint="/", device=root.device, fstype=root.fstype)
    assert samples.value("host_filesystem_size_bytes", **labels) == st.f_blocks * st.f_frsize
    free = samples.value("host_filesystem_free_bytes", **labels)
    avail = samples.value("host_filesystem_avail_bytes", **labels)
    assert avail <= free <= st.f_blocks * st.f_frsize
    assert free == pytest.approx(os.statvfs("/").f_bfree * st.f_frsize, rel=0.01)
    # pseudo file systems say nothing about disk space
    assert not [s for s in samples.series("host_filesystem_size_bytes") if s.labels["fstype"] in ("proc", "tmpfs")]


def test_cpu_seconds_are_monotonic_and_load_average_present(served):
    first = served.metrics()
    busy_until = time.monotonic() + 0.3
    while time.monotonic() < busy_until:  # burn some CPU so user time moves
        sum(range(10000))
    second = served.metrics()
    modes = {s.labels["mode"] for s in first.series("host_cpu_seconds_total")}
    assert {"user", "system", "idle"} <= modes
    for mode in modes:
        assert second.value("host_cpu_seconds_total", mode=mode) >= first.value("host_cpu_seconds_total", mode=mode)
    total = lambda s: sum(x.value for x in s.series("host_cpu_seconds_total"))  # noqa: E731
    assert total(second) > total(first)
    assert first.families["host_cpu_seconds"].type == "counter"
    # every mode once (guest time is inside user and nice): all modes add up to wall time per CPU
    assert not modes & {"guest", "guest_nice"}
    now = psutil.cpu_times()._asdict()
    assert total(second) == pytest.approx(sum(v for m, v in now.items() if not m.startswith("guest")), rel=0.01)
    loads = {s.labels["period"]: s.value for s in second.series("host_load_average")}
    assert set(loads) == {"1m", "5m", "15m"}
    assert all(v >= 0 for v in loads.values())
    assert loads["15m"] == pytest.approx(os.getloadavg()[2], abs=0.5)


def test_host_metrics_only_on_metrics_and_can_be_turned_off(pg, serve, served):
    assert served.metrics().has("host_memory_total_bytes")
    probe = served.metrics("/probe?target=main")
    assert probe.value("pg_up", target="main") == 1
    assert not [n for n in probe.names() if n.startswith("host_")]
    off = serve(make_config(pg, host_metrics=False)).metrics()
    assert off.value("pg_up", target="main") == 1
    assert not [n for n in off.names() if n.startswith("host_")]
