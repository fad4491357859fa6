"""The exporter's own process (``process_*``) and Python runtime (``python_*``) metrics on
``/metrics``, with the names, help and labels of the Prometheus client libraries' default
collectors, read from ``/proc/self`` and :mod:`gc` (no client library loaded: ``dbperf serve``
keeps its memory for its scrapes). Off Linux only the ``python_*`` families are served."""

from __future__ import annotations

import gc
import os
import platform
import resource

from exporter.metrics import Family

GENERATION = ("generation",)
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _gauge(name: str, help_: str, value: float) -> Family:
    family = Family(name, "gauge", help_)
    family.add((), value)
    return family


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def process_families(proc: str = "/proc/self") -> list[Family]:
    try:
        with open(f"{proc}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # after "pid (comm)": state is fields[0]
        utime, stime, start = int(fields[11]), int(fields[12]), int(fields[19])
        vsize, rss = int(fields[20]), int(fields[21])
        start_time = _boot_time() + start / _TICKS
        open_fds = len(os.listdir(f"{proc}/fd"))
    except OSError:
        return []
    cpu = Family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
    cpu.add((), (utime + stime) / _TICKS)
    return [_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.", vsize),
            _gauge("process_resident_memory_bytes", "Resident memory size in bytes.", rss * _PAGE),
            _gauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.", start_time),
            cpu,
            _gauge("process_open_fds", "Number of open file descriptors.", open_fds),
            _gauge("process_max_fds", "Maximum number of open file descriptors.",
                   resource.getrlimit(resource.RLIMIT_NOFILE)[0])]


def python_families() -> list[Family]:
    major, minor, patch = platform.python_version_tuple()
    info = Family("python_info", "gauge", "Python platform information",
                  ("implementation", "major", "minor", "patchlevel", "version"))
    info.add((platform.python_implementation(), major, minor, patch, platform.python_version()), 1)
    collected = Family("python_gc_objects_collected_total", "counter", "Objects collected during gc", GENERATION)
    uncollectable = Family("python_gc_objects_uncollectable_total", "counter",
                           "Uncollectable objects found during GC", GENERATION)
    collections = Family("python_gc_collections_total", "counter", "Number of times this generation was collected",
                         GENERATION)
    for generation, stats in enumerate(gc.get_stats()):
        collected.add((str(generation),), stats["collected"])
        uncollectable.add((str(generation),), stats["uncollectable"])
        collections.add((str(generation),), stats["collections"])
    return [info, collected, uncollectable, collections]


def own_families() -> list[Family]:
    """Every family of this module, as prometheus_client's default registry orders them."""
    return process_families() + python_families()
