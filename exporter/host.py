"""Host resources through psutil, under ``host_*``; the exporter's own process under ``process_*``.

Host metrics describe the machine dbperf runs on, so they are only useful when dbperf runs beside
the database server (the usual sidecar set-up); they appear on ``/metrics``, never on ``/probe``.
"""

from __future__ import annotations

import os

import psutil

from exporter.metrics import Family

# Pseudo and container file systems that say nothing about disk space.
SKIP_FSTYPES = {"proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup", "cgroup2", "overlay", "squashfs",
                "nsfs", "securityfs", "pstore", "debugfs", "tracefs", "mqueue", "hugetlbfs", "fusectl",
                "configfs", "binfmt_misc", "autofs", "bpf", "ramfs", "rpc_pipefs", "efivarfs", "fuse.lxcfs"}

# Linux counts the time spent running virtual machines in user and nice as well.
GUEST_MODES = {"guest", "guest_nice"}


def _fam(name, mtype, help_, labels=()):
    return Family(name, mtype, help_, tuple(labels))


def cpu_families() -> list[Family]:
    cpu = _fam("host_cpu_seconds_total", "counter", "CPU time spent in each mode, all CPUs together.", ["mode"])
    for mode, value in psutil.cpu_times()._asdict().items():
        if mode in GUEST_MODES:  # already counted in user and nice: a sum over modes would count them twice
            continue
        cpu.add((mode,), value)
    count = _fam("host_cpus", "gauge", "Logical CPUs.")
    count.add((), psutil.cpu_count() or 0)
    load = _fam("host_load_average", "gauge", "System load average over 1, 5 and 15 minutes.", ["period"])
    for period, value in zip(("1m", "5m", "15m"), os.getloadavg()):
        load.add((period,), value)
    boot = _fam("host_boot_time_seconds", "gauge", "Unix time the host booted.")
    boot.add((), psutil.boot_time())
    return [cpu, count, load, boot]


def memory_families() -> list[Family]:
    vm, sw = psutil.virtual_memory(), psutil.swap_memory()
    out = []
    for name, value, help_ in (
        ("host_memory_total_bytes", vm.total, "Physical memory."),
        ("host_memory_available_bytes", vm.available, "Memory available to new processes without swapping."),
        ("host_memory_used_bytes", vm.used, "Memory in use (total minus free, buffers and cache)."),
        ("host_memory_cached_bytes", getattr(vm, "cached", 0), "Page cache."),
        ("host_swap_total_bytes", sw.total, "Swap space."),
        ("host_swap_used_bytes", sw.used, "Swap space in use."),
    ):
        fam = _fam(name, "gauge", help_)
        fam.add((), value)
        out.append(fam)
    swap_in = _fam("host_swap_in_bytes_total", "counter", "Bytes swapped in from disk.")
    swap_in.add((), sw.sin)
    swap_out = _fam("host_swap_out_bytes_total", "counter", "Bytes swapped out to disk.")
    swap_out.add((), sw.sout)
    return out + [swap_in, swap_out]


def filesystem_families() -> list[Family]:
    labels = ["mountpoint", "device", "fstype"]
    size = _fam("host_filesystem_size_bytes", "gauge", "File system size.", labels)
    free = _fam("host_filesystem_free_bytes", "gauge", "Free space, including space reserved for root.", labels)
    avail = _fam("host_filesystem_avail_bytes", "gauge", "Free space available to unprivileged users.", labels)
    seen = set()
    for part in psutil.disk_partitions(all=False):
        if part.fstype in SKIP_FSTYPES or part.mountpoint in seen:
            continue
        seen.add(part.mountpoint)
        try:
            st = os.statvfs(part.mountpoint)
        except OSError:
            continue
        key = (part.mountpoint, part.device, part.fstype)
        size.add(key, st.f_blocks * st.f_frsize)
        free.add(key, st.f_bfree * st.f_frsize)
        avail.add(key, st.f_bavail * st.f_frsize)
    return [size, free, avail]


def disk_io_families() -> list[Family]:
    counters = psutil.disk_io_counters(perdisk=True) or {}
    specs = (
        ("host_disk_read_bytes_total", "read_bytes", 1, "Bytes read from the device."),
        ("host_disk_written_bytes_total", "write_bytes", 1, "Bytes written to the device."),
        ("host_disk_reads_completed_total", "read_count", 1, "Reads completed."),
        ("host_disk_writes_completed_total", "write_count", 1, "Writes completed."),
        ("host_disk_read_time_seconds_total", "read_time", 0.001, "Time spent reading."),
        ("host_disk_write_time_seconds_total", "write_time", 0.001, "Time spent writing."),
        ("host_disk_io_time_seconds_total", "busy_time", 0.001, "Time the device was busy with I/O."),
    )
    out = []
    for name, attr, scale, help_ in specs:
        fam = _fam(name, "counter", help_, ["device"])
        for device, c in sorted(counters.items()):
            if device.startswith(("loop", "ram")) or not hasattr(c, attr):
                continue
            fam.add((device,), getattr(c, attr) * scale)
        out.append(fam)
    return out


def network_families() -> list[Family]:
    counters = psutil.net_io_counters(pernic=True) or {}
    specs = (
        ("host_network_receive_bytes_total", "bytes_recv", "Bytes received."),
        ("host_network_transmit_bytes_total", "bytes_sent", "Bytes sent."),
        ("host_network_receive_errors_total", "errin", "Receive errors."),
        ("host_network_transmit_errors_total", "errout", "Transmit errors."),
        ("host_network_receive_drop_total", "dropin", "Received packets dropped."),
        ("host_network_transmit_drop_total", "dropout", "Packets to send dropped."),
    )
    out = []
    for name, attr, help_ in specs:
        fam = _fam(name, "counter", help_, ["device"])
        for device, c in sorted(counters.items()):
            fam.add((device,), getattr(c, attr))
        out.append(fam)
    return out


def collect_host() -> list[Family]:
    return cpu_families() + memory_families() + filesystem_families() + disk_io_families() + network_families()
