"""``dbperf top``'s live screen for real: the command in a detached tmux session of a fixed size
(its own server: ``tmux -L``), against a real lock chain, read with capture-pane and driven with
send-keys (s, d, p, a resize, q). The tmux server is killed even when a test fails."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from conftest import SECOND_DB, wait_until
from topkit import lock_chain, monitor_dsn

pytestmark = pytest.mark.pg

TMUX = shutil.which("tmux") or "/usr/bin/tmux"
WIDTH, HEIGHT = 150, 45
ROOT = Path(__file__).resolve().parent.parent


class Pane:
    def __init__(self, socket: str):
        self.socket = socket

    def tmux(self, *args: str) -> str:
        return subprocess.run([TMUX, "-L", self.socket, "-f", "/dev/null", *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout

    def screen(self, history: bool = False) -> list[str]:
        """The visible screen; ``history``: with the lines scrolled off above it (tmux's "Pane is
        dead" line scrolls the screen once the command has ended)."""
        return self.tmux("capture-pane", "-p", "-t", "top", *(("-S", "-100") if history else ())).splitlines()

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "top", *keys)

    def show(self, predicate, message: str, history: bool = False) -> list[str]:
        def check():
            lines = self.screen(history)
            return lines if predicate(lines) else None

        try:
            return wait_until(check, timeout=20, interval=0.1, message=message)
        except AssertionError:
            raise AssertionError(f"{message}; the screen:\n" + "\n".join(self.screen())) from None

    def value(self, name: str) -> str:
        return self.tmux("display-message", "-p", "-t", "top", "#{" + name + "}").strip()


@pytest.fixture
def pane():
    socket = f"dbperf-top-{uuid.uuid4().hex[:10]}"
    p = Pane(socket)
    yield p
    subprocess.run([TMUX, "-L", socket, "kill-server"], capture_output=True, timeout=10)
    # tmux leaves its socket file behind
    (Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}" / socket).unlink(missing_ok=True)


def start(pane: Pane, tmp_path: Path, dsn: str) -> None:
    script = tmp_path / "top.sh"
    script.write_text(
        f"export PYTHONPATH={shlex.quote(str(ROOT))}\n"
        f"{shlex.quote(sys.executable)} -m exporter top --dsn {shlex.quote(dsn)} --interval 0.3s\n"
        "echo \"top exited $?\"\n"  # bash, not sh: a non-interactive sh dies of the Ctrl-C itself
        "stty -a | tr ' ;' '\\n\\n' | grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ' '\n"
        "echo '(stty)'\n")
    pane.tmux("new-session", "-d", "-s", "top", "-x", str(WIDTH), "-y", str(HEIGHT), "bash " + shlex.quote(str(script)),
              ";", "set-option", "-t", "top", "remain-on-exit", "on")


def footer(lines: list[str]) -> str:
    return next((line for line in reversed(lines) if line.strip()), "")


def test_the_live_screen_shows_the_chain_and_answers_its_keys(pg, pane, tmp_path):
    with psycopg.connect(pg.dsn(SECOND_DB, application_name="top-other"), autocommit=True) as other, \
            lock_chain(pg) as (a, b, c):
        other.execute("BEGIN")
        other.execute("SELECT 1")  # idle in a transaction in another database
        other_pid = other.info.backend_pid
        start(pane, tmp_path, monitor_dsn(pg))

        def has_chain(lines):
            text = "\n".join(lines)
            return (f"\n  {a} idle-tx " in text and f"  +- {b} Lock:transactionid " in text
                    and f"     +- {c} Lock:" in text and "\n  Lock " in text)

        lines = pane.show(has_chain, "the blocking chain A <- B <- C and the Lock load")
        assert lines[0].startswith("dbperf top - dsn - PostgreSQL ") and lines[0].rstrip().endswith("every 300ms")
        assert "2 waiting on locks" in lines[1] and all(len(line) <= WIDTH for line in lines)
        assert pane.value("alternate_on") == "1"

        pane.keys("s")
        pane.show(lambda ls: "s sort: database |" in footer(ls), "the sort by database")
        pane.keys("s")
        lines = pane.show(lambda ls: "s sort: wait |" in footer(ls), "the sort by wait")
        rows = [line.split()[0] for line in lines[lines.index(next(x for x in lines if x.startswith("PID"))) + 1:]
                if line.split() and line.split()[0].isdigit()]
        assert rows.index(str(a)) < rows.index(str(b))  # Client:ClientRead before Lock:...
        pane.keys("s")
        pane.show(lambda ls: "s sort: duration |" in footer(ls), "the sort back to duration")

        pane.keys("d")
        lines = pane.show(lambda ls: f"d database: {SECOND_DB} |" in footer(ls), "the filter on the second database")
        assert not any("BLOCKING CHAINS" in line for line in lines)
        assert any(line.startswith(f"{other_pid} ") for line in lines)
        pane.keys("d")
        lines = pane.show(lambda ls: "d database: postgres |" in footer(ls) and has_chain(ls), "the filter on postgres")
        assert not any(line.startswith(f"{other_pid} ") for line in lines)
        pane.keys("d")
        pane.show(lambda ls: "d database: all |" in footer(ls), "no filter")

        pane.tmux("resize-window", "-t", "top", "-x", "28", "-y", "5")
        pane.show(lambda ls: ls and ls[0].startswith("terminal too small (28x5)"), "the too-small message")
        pane.tmux("resize-window", "-t", "top", "-x", "60", "-y", "14")
        pane.show(lambda ls: ls[0].startswith("dbperf top") and footer(ls).startswith("s sort"), "a small screen")
        pane.tmux("resize-window", "-t", "top", "-x", str(WIDTH), "-y", str(HEIGHT))
        pane.show(has_chain, "the chain again at full size")

        pane.keys("p")
        frozen = pane.show(lambda ls: "PAUSED (p resumes)" in ls[0], "the pause")
        other.execute("ROLLBACK")
    # the chain is gone (lock_chain rolled A back and the waiters finished): paused, the screen keeps it
    wait_until(lambda: not pg.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'"),
               message="no session waiting on a lock")
    until = time.monotonic() + 1.5  # five refreshes: none of them may reach the paused screen
    while time.monotonic() < until:
        assert pane.screen() == frozen
        time.sleep(0.1)
    pane.keys("p")
    lines = pane.show(lambda ls: "PAUSED" not in ls[0] and not any("BLOCKING" in x for x in ls), "the resumed screen")
    assert "0 waiting on locks" in lines[1]

    pane.keys("q")
    lines = pane.show(lambda ls: any(x.startswith("top exited") for x in ls) and any("(stty)" in x for x in ls),
                      "the exit", history=True)
    assert "top exited 0" in lines and not any(x.startswith("dbperf top") for x in lines)
    assert next(x for x in lines if "(stty)" in x).split() == ["icanon", "echo", "(stty)"]  # the terminal restored
    assert pane.value("alternate_on") == "0"


def test_ctrl_c_exits_cleanly_and_restores_the_terminal(pg, pane, tmp_path):
    start(pane, tmp_path, pg.dsn())
    pane.show(lambda ls: ls and ls[0].startswith("dbperf top - dsn - ") and footer(ls).startswith("s sort"),
              "the screen")
    pane.keys("C-c")
    lines = pane.show(lambda ls: any("(stty)" in x for x in ls), "the exit", history=True)
    assert "top exited 0" in lines and next(x for x in lines if "(stty)" in x).split() == ["icanon", "echo", "(stty)"]
    assert pane.value("alternate_on") == "0"


def test_sigterm_exits_cleanly_and_restores_the_terminal(pg, pane, tmp_path):
    start(pane, tmp_path, pg.dsn())
    pane.show(lambda ls: ls and ls[0].startswith("dbperf top - dsn - ") and footer(ls).startswith("s sort"),
              "the screen")
    shell = int(pane.value("pane_pid"))
    (child,) = [int(p) for p in subprocess.run(["ps", "-o", "pid=", "--ppid", str(shell)], capture_output=True,
                                                text=True, check=True).stdout.split()]
    os.kill(child, signal.SIGTERM)
    lines = pane.show(lambda ls: any("(stty)" in x for x in ls), "the exit", history=True)
    assert "top exited 0" in lines and next(x for x in lines if "(stty)" in x).split() == ["icanon", "echo", "(stty)"]
    assert pane.value("alternate_on") == "0"
