"""An HTTP/1.1 server whose open sockets cost no thread: one selector thread holds every
connection while it is idle or its request head is arriving, and hands complete requests to a
small pool of worker threads.

- A new connection has :attr:`Limits.header_timeout` seconds (in total, TLS handshake included,
  not per byte: a client that sends a byte every second is closed all the same) to send a whole
  request head; a kept-alive connection may stay idle :attr:`Limits.idle_timeout` seconds between
  requests, then has ``header_timeout`` from its first byte.
- At most :attr:`Limits.max_connections` connections are open; a new one beyond that closes the
  connection that has waited longest for a request (never one being answered), so a scrape gets in
  whatever idle sockets hold. When the process runs out of file descriptors the same happens.
- Request heads are at most :attr:`Limits.max_header_bytes`; a longer one is answered 431.
- Requests are answered by at most :attr:`Limits.workers` threads; when
  :attr:`Limits.queue` more wait for one, a new request is answered 503 at once. Writing a response
  has :attr:`Limits.write_timeout` seconds in total (a client that does not read is dropped).

The module knows nothing about dbperf: ``handle(conn, head)`` is called in a worker with the
request head and returns True to keep the connection open for another request.
"""

from __future__ import annotations

import errno
import logging
import queue
import resource
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from exporter.log import RateLimiter

LOG = logging.getLogger("dbperf.http")


@dataclass(frozen=True)
class Limits:
    header_timeout: float = 10.0     # seconds for a request head (and the TLS handshake) in total
    idle_timeout: float = 90.0       # seconds a kept-alive connection may wait for its next request
    write_timeout: float = 60.0      # seconds to write one response in total
    max_connections: int = 1024      # open connections at most (lowered to fit the file limit)
    max_header_bytes: int = 64 * 1024
    workers: int = 128               # threads answering requests at most (started when needed)
    queue: int = 256                 # requests waiting for a worker at most; more: 503

    def fitted(self) -> "Limits":
        """These limits with ``max_connections`` below the process's open-file limit (a
        database session and a log file need descriptors too)."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self
        room = max(16, soft - 128)
        if self.max_connections <= room:
            return self
        return Limits(**{**self.__dict__, "max_connections": room})


class Conn:
    """One client connection."""

    __slots__ = ("sock", "addr", "buf", "deadline", "since", "handshaking", "want_write", "busy",
                 "requests", "__weakref__")

    def __init__(self, sock, addr, now: float, deadline: float, handshaking: bool):
        self.sock, self.addr = sock, addr
        self.buf = b""
        self.since = now             # when it began to wait (eviction: the longest waiting first)
        self.deadline = deadline     # when it is closed unless a whole request head has arrived
        self.handshaking = handshaking
        self.want_write = False
        self.busy = False            # a worker answers it
        self.requests = 0


def _head_end(buf: bytes) -> int:
    """The length of the request head at the start of ``buf`` (0 while incomplete)."""
    crlf, lf = buf.find(b"\r\n\r\n"), buf.find(b"\n\n")
    ends = [i + 4 for i in (crlf,) if i >= 0] + [i + 2 for i in (lf,) if i >= 0]
    return min(ends) if ends else 0


def _close(sock) -> None:
    try:
        sock.close()
    except OSError:
        pass


class Workers:
    """At most ``size`` threads answering queued calls; ``submit`` is False when every thread is
    busy and ``limit`` calls already wait for one. Threads start when needed and end after a
    minute without work."""

    LINGER = 60.0

    def __init__(self, size: int, limit: int, name: str = "http-worker"):
        self.size, self.limit, self.name = size, limit, name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self.threads = self.idle = self.waiting = self.running = 0
        self._seq = 0
        self._closed = False

    def submit(self, fn, *args) -> bool:
        with self._lock:
            if self._closed or self.running + self.waiting >= self.size + self.limit:
                return False
            self.waiting += 1
            if self.idle < self.waiting and self.threads < self.size:
                self.threads += 1
                self._seq += 1
                threading.Thread(target=self._run, name=f"{self.name}-{self._seq}", daemon=True).start()
        self._queue.put((fn, args))
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                self.idle += 1
            try:
                item = self._queue.get(timeout=self.LINGER)
            except queue.Empty:
                item = None
            with self._lock:
                self.idle -= 1
                if item is None:
                    if self._closed or self.waiting == 0:
                        self.threads -= 1
                        return
                    continue
                self.waiting -= 1
                self.running += 1
            fn, args = item
            try:
                fn(*args)
            except Exception:  # pragma: no cover - the handler logs its own errors
                LOG.exception("error in an HTTP worker")
            finally:
                with self._lock:
                    self.running -= 1

    def close(self) -> None:
        with self._lock:
            self._closed = True
            count = self.threads
        for _ in range(count):
            self._queue.put(None)


class SelectorServer:
    """``serve_forever()`` in one thread; ``shutdown()`` from another; ``server_close()``.
    ``tls()`` returns the :class:`ssl.SSLContext` for a new connection (None: plain HTTP) and
    ``allow(sslsock)`` decides after the handshake; both are read per connection, so a reload
    applies to the next connection."""

    def __init__(self, address: tuple[str, int], handle, limits: Limits = Limits(), tls=None, allow=None):
        self.limits = limits.fitted()
        self.handle = handle
        self.tls = tls or (lambda: None)
        self.allow = allow or (lambda sock: True)
        host, port = address
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            self.socket.bind((host, port))
            self.socket.listen(min(socket.SOMAXCONN, 4096))
        except OSError:
            self.socket.close()
            raise
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()[:2]
        self.workers = Workers(self.limits.workers, self.limits.queue)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._returned: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: dict[int, Conn] = {}   # fd -> connection in the selector
        self.busy = 0                          # connections a worker answers
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self._stopped.set()
        self._accept_paused_until = 0.0
        self._log_limit = RateLimiter(60.0)
        # figures for tests and logs
        self.closed_idle = self.closed_slow = self.evicted = self.rejected = 0

    # -- public -----------------------------------------------------------------------------
    @property
    def open_connections(self) -> int:
        return len(self._waiting) + self.busy

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        self._stop.clear()
        sel = self._selector
        sel.register(self.socket, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._accept_paused_until and now >= self._accept_paused_until:
                    self._accept_paused_until = 0.0
                    sel.register(self.socket, selectors.EVENT_READ, "accept")
                wake_at = self._next_deadline()
                if self._accept_paused_until:
                    wake_at = min(wake_at, self._accept_paused_until)
                timeout = min(poll_interval, max(0.0, wake_at - now))
                for key, mask in sel.select(timeout):
                    try:
                        if key.data == "accept":
                            self._accept()
                        elif key.data == "wake":
                            self._drain_wake()
                        else:
                            self._on_ready(key.data)
                    except Exception:  # noqa: BLE001 - one connection's trouble never stops the server
                        LOG.exception("error handling a connection")
                        if isinstance(key.data, Conn):
                            self._drop(key.data)
                self._take_returned()
                self._expire(time.monotonic())
        finally:
            for fileobj in (self.socket, self._wake_r):
                try:
                    sel.unregister(fileobj)
                except (KeyError, ValueError):
                    pass
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._wake()
        self._stopped.wait()

    def server_close(self) -> None:
        self._stop.set()
        self._stopped.wait(5)
        for conn in list(self._waiting.values()):
            self._drop(conn)
        self.workers.close()
        for sock in (self.socket, self._wake_r, self._wake_w):
            _close(sock)
        try:
            self._selector.close()
        except (OSError, RuntimeError):
            pass

    # -- the selector thread --------------------------------------------------------------------
    def _next_deadline(self) -> float:
        # a scan of a few thousand numbers; cheaper than keeping a heap in step with keep-alive
        return min((c.deadline for c in self._waiting.values()), default=time.monotonic() + 3600)

    def _accept(self) -> None:
        limits = self.limits
        for _ in range(256):  # a burst at a time, then the others get their turn
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: free the longest waiting and pause accepting briefly
                    if self._log_limit.allow("accept"):
                        LOG.warning("cannot accept a connection: %s (%d open); closing the longest waiting "
                                    "(repeats are logged at most once a minute)", exc.strerror, self.open_connections)
                    self._evict_one()
                    self._accept_paused_until = time.monotonic() + 0.05
                    self._selector.unregister(self.socket)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue
                if self._log_limit.allow("accept"):
                    LOG.warning("cannot accept a connection: %s", exc)
                return
            if self.open_connections >= limits.max_connections and not self._evict_one():
                self.rejected += 1
                _close(sock)
                continue
            now = time.monotonic()
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            context = self.tls()
            handshaking = False
            if context is not None:
                try:
                    sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (OSError, ValueError):
                    _close(sock)
                    continue
                handshaking = True
            conn = Conn(sock, addr, now, now + limits.header_timeout, handshaking)
            self._watch(conn)
            if handshaking:
                self._on_ready(conn)

    def _watch(self, conn: Conn) -> None:
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.want_write else 0)
        fd = conn.sock.fileno()
        if fd in self._waiting:
            self._selector.modify(conn.sock, events, conn)
        else:
            self._selector.register(conn.sock, events, conn)
            self._waiting[fd] = conn

    def _unwatch(self, conn: Conn) -> None:
        fd = conn.sock.fileno()
        if self._waiting.pop(fd, None) is not None:
            try:
                self._selector.unregister(conn.sock)
            except (KeyError, ValueError):
                pass

    def _drop(self, conn: Conn) -> None:
        self._unwatch(conn)
        _close(conn.sock)

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request; False when none waits."""
        if not self._waiting:
            return False
        oldest = min(self._waiting.values(), key=lambda c: c.since)
        self.evicted += 1
        self._drop(oldest)
        return True

    def _expire(self, now: float) -> None:
        late = [c for c in self._waiting.values() if c.deadline <= now]
        for conn in late:
            if conn.buf or conn.handshaking or conn.requests == 0:
                self.closed_slow += 1  # never sent a whole request head in time
            else:
                self.closed_idle += 1
            self._drop(conn)

    def _on_ready(self, conn: Conn) -> None:
        sock = conn.sock
        if conn.handshaking:
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                self._set_want_write(conn, False)
                return
            except ssl.SSLWantWriteError:
                self._set_want_write(conn, True)
                return
            except (ssl.SSLError, OSError) as exc:
                LOG.debug("TLS handshake with %s failed: %s", conn.addr[0], exc)
                self._drop(conn)
                return
            conn.handshaking = False
            self._set_want_write(conn, False)
            try:
                allowed = self.allow(sock)
            except Exception:  # noqa: BLE001 - a bad certificate is no crash
                allowed = False
            if not allowed:
                LOG.debug("TLS client %s not allowed (client_allowed_sans)", conn.addr[0])
                self._drop(conn)
                return
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                break
            except ssl.SSLWantWriteError:
                self._set_want_write(conn, True)
                return
            except (ssl.SSLError, OSError):
                self._drop(conn)
                return
            if not data:
                self._drop(conn)
                return
            if not conn.buf and conn.requests:  # a kept-alive connection's next request begins
                conn.deadline = time.monotonic() + self.limits.header_timeout
            conn.buf += data
            if len(conn.buf) > self.limits.max_header_bytes and not _head_end(conn.buf):
                break
            if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                break
        self._set_want_write(conn, False)
        self._dispatch(conn)

    def _set_want_write(self, conn: Conn, want: bool) -> None:
        if conn.want_write != want:
            conn.want_write = want
            self._watch(conn)

    def _dispatch(self, conn: Conn) -> None:
        end = _head_end(conn.buf)
        if (end or len(conn.buf)) > self.limits.max_header_bytes:
            self._reply_and_close(conn, b"431 Request Header Fields Too Large",
                                  b"request head larger than %d bytes\n" % self.limits.max_header_bytes)
            return
        if not end:
            return
        head, conn.buf = conn.buf[:end], conn.buf[end:]
        self._unwatch(conn)
        conn.busy = True
        self.busy += 1
        if not self.workers.submit(self._work, conn, head):
            self.busy -= 1
            conn.busy = False
            self._reply_and_close(conn, b"503 Service Unavailable", b"too many requests in progress, retry later\n")

    def _reply_and_close(self, conn: Conn, status: bytes, body: bytes) -> None:
        """A short answer written without waiting (best effort), then the connection is closed."""
        self.rejected += 1
        response = (b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
        try:
            conn.sock.send(response)
        except (OSError, ssl.SSLError):
            pass
        self._drop(conn)

    def _take_returned(self) -> None:
        while True:
            try:
                conn, keep = self._returned.get_nowait()
            except queue.Empty:
                return
            self.busy -= 1
            conn.busy = False
            if not keep or self._stop.is_set():
                _close(conn.sock)
                continue
            try:
                conn.sock.setblocking(False)
            except OSError:
                _close(conn.sock)
                continue
            now = time.monotonic()
            conn.requests += 1
            conn.since = now
            conn.deadline = now + (self.limits.header_timeout if conn.buf else self.limits.idle_timeout)
            if self.open_connections >= self.limits.max_connections and not self._evict_one():
                _close(conn.sock)
                continue
            self._watch(conn)
            if conn.buf and _head_end(conn.buf):
                self._dispatch(conn)  # a pipelined request already here
            elif isinstance(conn.sock, ssl.SSLSocket) and conn.sock.pending():
                self._on_ready(conn)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass  # a wake is pending already (or the server is closed)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    # -- a worker -------------------------------------------------------------------------------
    def _work(self, conn: Conn, head: bytes) -> None:
        keep = False
        try:
            conn.sock.setblocking(True)
            keep = bool(self.handle(conn, head))
        except Exception as exc:  # noqa: BLE001 - a client that went away, a timeout
            LOG.debug("connection from %s ended: %s", conn.addr[0] if conn.addr else "?", exc)
            keep = False
        self._returned.put((conn, keep))
        self._wake()


class DeadlineWriter:
    """A file-like writer of a socket: every write finishes by one deadline for the response
    (``sendall`` of an SSL socket would restart its timeout for every record)."""

    PIECE = 256 * 1024

    def __init__(self, sock, seconds: float):
        self.sock, self.seconds = sock, seconds
        self.deadline = None  # from the first write: a scrape may take its time before it
        self.written = 0

    def write(self, data) -> int:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        view = memoryview(data)
        for start in range(0, len(view), self.PIECE):
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the client did not read the response in time")
            self.sock.settimeout(remaining)
            self.sock.sendall(view[start:start + self.PIECE])
        self.written += len(view)
        return len(view)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def raise_open_file_limit(wanted: int) -> int:
    """Raise the soft open-file limit towards ``wanted`` (at most the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft

