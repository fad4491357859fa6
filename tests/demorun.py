"""``dbperf demo`` run as a user runs it, for the demo tests: its output, its temporary directories
and every process it started, and the check that a stopped demo left none of them behind."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil

from conftest import ROOT, processes_using, wait_until
from exporter.pgcluster import free_port

DEMO = [sys.executable, "-m", "exporter", "demo"]
# an intermediate parent: runs the demo as its child and waits for it (the test SIGKILLs it)
PARENT = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def running(process: psutil.Process) -> bool:
    """Still running (a zombie has ended: only its parent has not read its exit status yet)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def names(processes: list[psutil.Process]) -> set[str]:
    """The processes' names, the example application's as ``shop_app``."""
    found = set()
    for process in processes:
        try:
            found.add("shop_app" if "examples.shop_app" in process.cmdline() else process.name())
        except psutil.NoSuchProcess:
            pass
    return found


class DemoRun:
    """``DemoRun("--no-app")``: the demo on free ports; ``via_parent`` starts it under PARENT."""

    def __init__(self, *args: str, via_parent: bool = False, **popen):
        self.port = free_port()
        command = [*DEMO, "--listen", f"127.0.0.1:{self.port}", "--any-ports", *args]
        if via_parent:
            command = [sys.executable, "-c", PARENT, *command]
        self.lines: list[str] = []
        if "stdout" in popen:  # the caller reads the output (a terminal)
            self.proc = subprocess.Popen(command, cwd=ROOT, **popen)
            self.reader = None
        else:
            self.proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, **popen)
            self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
            self.reader.start()
        self.via_parent = via_parent
        self.cluster_dir = self.workdir = None
        self.processes: list[psutil.Process] = []
        self.demo: psutil.Process | None = None

    def output(self) -> str:
        return "".join(self.lines)

    def dirs(self) -> tuple[Path, Path]:
        """The directories of PostgreSQL and of the other parts, as the demo printed them."""
        found = [re.search(pattern, self.output()) for pattern in (r"PostgreSQL in (\S+)", r"other parts in (\S+)")]
        assert all(found), self.output()
        return Path(found[0].group(1)), Path(found[1].group(1))

    def demo_process(self) -> psutil.Process:
        if not self.via_parent:
            return psutil.Process(self.proc.pid)
        return wait_until(lambda: psutil.Process(self.proc.pid).children(), timeout=10,
                          message="the demo under its parent")[0]

    def wait_running(self, timeout: float = 90) -> list[psutil.Process]:
        """Waits for "running"; returns every process of the demo: its children and PostgreSQL's."""
        wait_until(lambda: "dbperf demo: running" in self.output() or self.proc.poll() is not None,
                   timeout=timeout, message="the demo to start")
        assert self.proc.poll() is None, self.output()
        self.cluster_dir, self.workdir = self.dirs()
        assert self.cluster_dir.is_dir() and self.workdir.is_dir()
        self.demo = self.demo_process()
        postmaster = int((self.cluster_dir / "data" / "postmaster.pid").read_text().split()[0])
        found = [psutil.Process(postmaster), *psutil.Process(postmaster).children(recursive=True),
                 *self.demo.children(recursive=True)]
        self.processes = found
        return found

    def assert_cleaned_up(self, processes: list[psutil.Process]) -> None:
        """No process of ``processes`` runs, no process names a directory of the demo, both are gone."""
        # the demo waits for every one of them before it exits: the wait is a margin for a loaded machine
        wait_until(lambda: not [p for p in processes if running(p)], timeout=10,
                   message=f"every process of the demo to end: {names(processes)}")
        for path in (self.cluster_dir, self.workdir):
            assert not path.exists(), f"{path} left behind\n{self.output()}"
            assert not processes_using(path), processes_using(path)

    def close(self) -> None:
        """After a failed test: Ctrl-C, so the demo cleans up, then SIGKILL when it does not."""
        if self.via_parent and self.demo is not None and running(self.demo):  # its parent may be gone
            self.demo.send_signal(signal.SIGINT)
            try:
                self.demo.wait(45)
            except psutil.TimeoutExpired:
                self.demo.kill()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        if self.reader is not None:
            self.reader.join(5)
        for process in self.processes:  # what a failed demo left behind, so the next test starts clean
            try:
                process.kill()
            except psutil.Error:
                pass
        for path in (self.cluster_dir, self.workdir):
            if path is not None:
                shutil.rmtree(path, ignore_errors=True)

    def __enter__(self) -> "DemoRun":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
