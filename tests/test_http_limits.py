"""Open ports cost no thread and cannot starve scrapes (issue 13, item 4).

Before: a thread per open socket, without limit (2,000 idle TCP connections held 2,006 threads and
106 MB, none closed after 60 s) and slow-header clients were never timed out. Now idle sockets wait
in one selector thread, request heads have a total deadline, connections are bounded (the longest
waiting goes first), and workers are bounded. The timeouts are short here so the tests are quick.
"""

from __future__ import annotations

import socket
import threading
import time

import psutil
import pytest

from conftest import SleepCollector, Samples, make_config, wait_until
from exporter.httpconn import Limits, raise_open_file_limit
from exporter.registry import all_collectors
from exporter.server import Exporter, serve_in_thread

pytestmark = pytest.mark.pg

IDLE, SLOW = 2000, 10


class Running:
    """dbperf's real server in this process with the given limits."""

    def __init__(self, exporter: Exporter, limits: Limits):
        self.exporter = exporter
        self.server, self.thread = serve_in_thread(exporter, limits=limits)
        self.port = self.server.server_address[1]

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> tuple[int, str, float]:
        import urllib.request

        start = time.monotonic()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode(), time.monotonic() - start
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), time.monotonic() - start

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.exporter.close()


@pytest.fixture
def running(pg):
    started = []

    def start(limits: Limits, collectors=None, **target) -> Running:
        config = make_config(pg, target, host_metrics=False)
        exporter = Exporter(config, collectors=collectors)
        r = Running(exporter, limits)
        started.append(r)
        return r

    yield start
    for r in started:
        r.close()


def closed_by_peer(sock: socket.socket, wait: float = 0.0) -> bool:
    """True when the server closed ``sock`` (EOF or a reset), without sending anything."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except (TimeoutError, BlockingIOError):
        return False
    except (ConnectionResetError, BrokenPipeError):
        return True


class SlowHeaders(threading.Thread):
    """A slowloris client: a request head one byte at a time, never finished."""

    def __init__(self, port: int, every: float):
        super().__init__(name="test-slow-client", daemon=True)
        self.port, self.every = port, every
        self.stop = threading.Event()
        self.closed_after: float | None = None

    def run(self):
        start = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while not self.stop.wait(self.every):
                try:
                    sock.sendall(b"a")
                except OSError:
                    break
                if closed_by_peer(sock):
                    break
            else:
                return
            self.closed_after = time.monotonic() - start


def own_threads() -> int:
    return sum(1 for t in threading.enumerate() if not t.name.startswith("test-"))


def test_idle_and_slow_clients_do_not_starve_a_scrape(running):
    soft = raise_open_file_limit(2 * (IDLE + SLOW) + 512)  # both ends of every socket are in this process
    assert soft >= 2 * (IDLE + SLOW) + 256, f"ulimit -n is {soft}: the test needs {2 * (IDLE + SLOW) + 256}"
    header_timeout = 4.0
    r = running(Limits(header_timeout=header_timeout, idle_timeout=4.0, max_connections=4096))
    assert r.get("/probe?target=main")[0] == 200  # connected and warm
    process = psutil.Process()
    threads_before, rss_before = own_threads(), process.memory_info().rss

    idle = [r.connect() for _ in range(IDLE)]
    slow = [SlowHeaders(r.port, every=0.2) for _ in range(SLOW)]
    for client in slow:
        client.start()
    opened = time.monotonic()
    wait_until(lambda: r.server.open_connections >= IDLE + SLOW, timeout=20, interval=0.1,
               message=f"{IDLE + SLOW} connections accepted")
    threads, rss = own_threads(), process.memory_info().rss
    status, text, took = r.get("/probe?target=main", headers={"X-Prometheus-Scrape-Timeout-Seconds": "3"})
    print(f"{IDLE} idle + {SLOW} slow sockets open: {threads - threads_before:+d} threads, "
          f"{(rss - rss_before) / 2**20:+.1f} MB RSS (both ends of the sockets); a scrape answered in {took:.2f}s")
    assert status == 200 and Samples(text).value("pg_up", target="main") == 1
    assert took < 3.0, f"the scrape took {took:.2f}s under load against a 3 s deadline"
    assert threads - threads_before <= 4, f"{threads - threads_before} more threads for idle sockets"
    assert rss - rss_before < 40 * 2**20, f"RSS grew {(rss - rss_before) / 2**20:.1f} MB"

    # every idle socket and every slow client is closed once the head timeout has passed
    wait_until(lambda: r.server.open_connections == 0, timeout=header_timeout + 10, interval=0.2,
               message="the idle and slow connections closed by the server")
    closed_in = time.monotonic() - opened
    assert all(closed_by_peer(s, wait=2.0) for s in idle)
    for client in slow:
        client.join(timeout=10)
        assert client.closed_after is not None and client.closed_after < header_timeout + 3, client.closed_after
    print(f"closed by the server after {closed_in:.1f}s (head timeout {header_timeout:g}s); slow clients after "
          f"{max(c.closed_after for c in slow):.1f}s at most although they kept sending")
    assert r.server.closed_slow >= IDLE + SLOW
    for s in idle:
        s.close()
    assert r.get("/healthz")[0] == 200


def test_connections_beyond_the_limit_close_the_longest_waiting(running):
    r = running(Limits(max_connections=50, header_timeout=30))
    first = [r.connect() for _ in range(50)]
    wait_until(lambda: r.server.open_connections == 50, timeout=10, message="50 connections accepted")
    later = [r.connect() for _ in range(30)]
    wait_until(lambda: r.server.evicted >= 30, timeout=10, message="30 evictions")
    assert r.server.open_connections <= 50
    assert all(closed_by_peer(s, wait=2.0) for s in first[:30])   # the oldest went
    assert not any(closed_by_peer(s, wait=0.05) for s in later)  # the newest stay
    status, _, _ = r.get("/probe?target=main")  # and a scrape gets in at once
    assert status == 200
    for s in first + later:
        s.close()


def test_keep_alive_idle_timeout_never_cuts_a_long_scrape(running):
    r = running(Limits(header_timeout=0.5, idle_timeout=1.0),
                collectors=all_collectors() + (SleepCollector("sleepy", 1.5),))
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=20)
    start = time.monotonic()
    conn.request("GET", "/probe?target=main", headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"})
    response = conn.getresponse()
    body = response.read().decode()
    assert response.status == 200 and time.monotonic() - start > 1.5  # longer than both timeouts
    assert Samples(body).value("test_sleepy_value", target="main") == 42
    conn.request("GET", "/healthz")  # the same connection, kept alive
    assert conn.getresponse().read() == b"ok\n"
    sock = conn.sock
    wait_until(lambda: closed_by_peer(sock, wait=0.1), timeout=5, message="the idle keep-alive connection closed")
    assert r.server.closed_idle >= 1
    conn.close()


def test_busy_workers_answer_503_at_once_and_recover(running):
    r = running(Limits(workers=2, queue=1), collectors=all_collectors() + (SleepCollector("sleepy", 2.0),))
    results = []

    def scrape():
        results.append(r.get("/probe?target=main", headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"}))

    threads = [threading.Thread(target=scrape, name="test-scrape") for _ in range(3)]  # 2 answered, 1 queued
    for t in threads:
        t.start()
    wait_until(lambda: r.server.busy >= 3, timeout=10, message="three requests in the server")
    status, body, took = r.get("/healthz")
    assert status == 503 and took < 1.0 and "retry later" in body
    for t in threads:
        t.join()
    assert sorted(s for s, _, _ in results) == [200, 200, 200]
    assert r.get("/healthz")[0] == 200


def test_oversized_request_head_is_431(running):
    r = running(Limits(max_header_bytes=4096))
    status, body, _ = r.get("/healthz", headers={"X-Big": "a" * 8000})
    assert status == 431
    assert r.get("/healthz")[0] == 200


@pytest.mark.fast
def test_a_low_open_file_limit_lowers_the_connection_bound_and_scrapes_still_get_in(tmp_path):
    """``dbperf serve`` with ``ulimit -n 64`` and 100 idle sockets: the bound is fitted below the
    limit (the longest waiting sockets are closed), so the process never runs out of descriptors
    and /healthz still answers (the thread-per-socket server stopped accepting)."""
    import resource
    import subprocess
    import sys
    import urllib.request

    from exporter.pgcluster import free_port

    port = free_port()
    config = tmp_path / "dbperf.yml"
    config.write_text(f"listen: 127.0.0.1:{port}\nhost_metrics: false\n"
                      "targets: [{name: main, dsn: 'host=127.0.0.1 port=1 dbname=x'}]\n")
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    log = tmp_path / "dbperf.log"
    proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", "--config", str(config)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"),
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard)))

    def healthz() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
            return response.status

    try:
        wait_until(lambda: proc.poll() is None and _ok(healthz), timeout=20, message=f"dbperf up ({log})")
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]
        for _ in range(3):
            assert healthz() == 200
        closed = sum(closed_by_peer(s, wait=0.5) for s in idle[:50])
        assert closed >= 40, f"only {closed} of the 50 oldest idle sockets were closed"
        assert proc.poll() is None
        assert "Too many open files" not in log.read_text()
        for s in idle:
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _ok(call) -> bool:
    try:
        return call() == 200
    except OSError:
        return False


@pytest.mark.fast
def test_a_client_that_does_not_read_is_dropped_by_the_write_deadline():
    from exporter.httpconn import DeadlineWriter

    server_end, client_end = socket.socketpair()
    try:
        writer = DeadlineWriter(server_end, 0.5)
        time.sleep(0.6)  # the deadline counts from the first write, not from the writer's making
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            for _ in range(200):  # 50 MB into a socket nobody reads
                writer.write(b"x" * 256 * 1024)
        took = time.monotonic() - start
        assert 0.4 < took < 3.0, took
    finally:
        server_end.close()
        client_end.close()
