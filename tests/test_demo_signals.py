"""``dbperf demo`` stopped the ways a demo is stopped: Ctrl-C, ``kill``, an SSH connection that drops
(its terminal hangs up), the death of its parent, a signal while it is still starting. Each time the
demo exits, every process it started (PostgreSQL and its backends, Prometheus, Alertmanager) is gone,
and so are its temporary directories. The whole stack (application, PgBouncer) is stopped with
``kill -HUP`` in test_demo_stack.py."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import subprocess
import termios
import threading

import pytest
import requests

from conftest import wait_until
from demorun import DemoRun, names, running

pytestmark = pytest.mark.e2e

NAMES = {"postgres", "prometheus", "prometheus-alertmanager"}


def test_ctrl_c_stops_the_demo_and_removes_everything():
    with DemoRun("--no-app", "--no-mysql") as demo:
        processes = demo.wait_running()
        assert names(processes) >= NAMES, names(processes)
        demo.proc.send_signal(signal.SIGINT)
        assert demo.proc.wait(timeout=30) == 0, demo.output()
        demo.assert_cleaned_up(processes)


def test_sigterm_stops_the_demo_and_nohup_keeps_it_through_a_hangup():
    """Started under nohup (SIGHUP ignored), the demo outlives a hangup; SIGTERM still stops it."""
    with DemoRun("--no-app", "--no-mysql", preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN)) as demo:
        processes = demo.wait_running()
        demo.proc.send_signal(signal.SIGHUP)
        with pytest.raises(subprocess.TimeoutExpired):
            demo.proc.wait(timeout=3)
        assert requests.get(f"http://127.0.0.1:{demo.port}/metrics", timeout=10).status_code == 200
        assert "dbperf demo: stopping" not in demo.output()
        demo.proc.send_signal(signal.SIGTERM)
        assert demo.proc.wait(timeout=30) == 0, demo.output()
        demo.assert_cleaned_up(processes)


def test_terminal_hangup_stops_the_demo_and_removes_everything():
    """What an SSH drop does: the demo's terminal goes away (the kernel sends SIGHUP, and every
    later write to the terminal fails); the demo still stops everything and exits 0."""
    master, slave = pty.openpty()

    def controlling_terminal():  # in the child, a session leader: the pty becomes its terminal, as sshd's does
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    demo = DemoRun("--no-app", "--no-mysql", stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
                   preexec_fn=controlling_terminal)
    os.close(slave)
    reading = threading.Event()
    reading.set()

    def read():
        while reading.is_set():
            if select.select([master], [], [], 0.2)[0]:
                try:
                    demo.lines.append(os.read(master, 65536).decode(errors="replace").replace("\r", ""))
                except OSError:
                    return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        processes = demo.wait_running()
        reading.clear()
        reader.join(5)
        os.close(master)  # the connection drops
        master = None
        assert demo.proc.wait(timeout=30) == 0
        demo.assert_cleaned_up(processes)
    finally:
        reading.clear()
        if master is not None:
            os.close(master)
        demo.close()


def test_parent_death_stops_the_demo_and_removes_everything():
    with DemoRun("--no-app", "--no-mysql", via_parent=True) as demo:
        processes = demo.wait_running()
        the_demo = demo.demo
        demo.proc.kill()
        demo.proc.wait(timeout=10)
        wait_until(lambda: not running(the_demo), timeout=30,
                   message="the demo to exit after its parent died")
        demo.assert_cleaned_up([the_demo, *processes])
        demo.reader.join(10)
        assert f"dbperf demo: removed {demo.workdir}" in demo.output(), demo.output()


def test_signal_while_starting_stops_the_demo_and_removes_everything():
    with DemoRun("--no-app", "--no-mysql") as demo:
        wait_until(lambda: "PostgreSQL in" in demo.output() or demo.proc.poll() is not None, timeout=30,
                   message="the demo to start PostgreSQL")
        demo.proc.send_signal(signal.SIGTERM)
        assert demo.proc.wait(timeout=60) == 128 + signal.SIGTERM, demo.output()
        demo.reader.join(5)
        assert "interrupted while starting" in demo.output(), demo.output()
        demo.cluster_dir, demo.workdir = demo.dirs()
        demo.assert_cleaned_up([])
