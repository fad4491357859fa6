"""Freeze processes of a throwaway cluster with SIGSTOP (a server that hangs), always resumed."""

from __future__ import annotations

import contextlib
import os
import signal


def postmaster_pid(cluster) -> int:
    return int((cluster.datadir / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def frozen(*pids: int):
    """SIGSTOP ``pids``; SIGCONT them whatever happens."""
    assert pids, "nothing to freeze"
    stopped = []
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        yield
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
