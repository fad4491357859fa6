"""exporter.memory: glibc's arenas limited, and the heap's free pages handed back by trim()."""

from __future__ import annotations

import pytest

from exporter import memory

pytestmark = pytest.mark.fast


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_limit_arenas_is_accepted():
    assert memory.limit_arenas() is True


def test_trim_hands_back_freed_memory_held_between_live_blocks():
    """Blocks of 64 KiB (under the mmap threshold: from the heap), written to, then every other one
    freed: the holes between live blocks stay mapped until trim() hands them back."""
    import ctypes

    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 64 * 1024
    blocks = []
    for _ in range(1600):
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        blocks.append(block)
    held = rss_mb()
    for block in blocks[::2]:
        libc.free(block)
    before = rss_mb()
    assert before > held - 10, (held, before)  # still mapped: the holes sit between live blocks
    assert memory.trim() is True
    assert rss_mb() < before - 30, (before, rss_mb())
    for block in blocks[1::2]:
        libc.free(block)


def test_serve_does_not_load_what_it_does_not_use():
    """``dbperf serve``'s modules and its collectors load no client library, no psutil (host_metrics
    off by default) and no SQL parser: memory the scrapes keep instead."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    code = ("import json, sys\n"
            "import exporter.cli, exporter.server\n"
            "from exporter.postgres.kind import builtin_collectors\n"
            "builtin_collectors()\n"
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    loaded = {m.split(".")[0] for m in json.loads(proc.stdout)}
    assert loaded & {"prometheus_client", "psutil", "pglast"} == set()
