"""A small client for Prometheus's HTTP API (instant and range queries) with clear, one-line errors.

Secrets (bearer token, basic-auth password) are read from files and never appear in messages. A
reply is trusted in nothing: each query has one deadline for all of it (connecting, waiting,
reading: a server that accepts and never answers, or trickles a reply that never ends, is a timeout),
a reply is read up to :data:`MAX_REPLY_BYTES`, and its JSON is checked against the API's shapes
(vector, scalar, matrix; samples ``[time, "value"]``; times within the query) before the report reads
it. Anything else is a :class:`PromError` (exit code 1); a bad option (URL, secret file) an
:class:`OptionError` (exit code 2): exporter/errors.py."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import requests

from exporter.configfile import FileProblem, read_text
from exporter.errors import UnavailableError, UsageError
from exporter.secrets import one_line, scrub_url

MAX_REPLY_BYTES = 64 * 1024 * 1024  # the most one reply may be (decompressed)
MAX_SECRET_BYTES = 64 * 1024
MAX_TIME = 253402300799.0           # 9999-12-31T23:59:59Z: a sample time beyond is no time
TIMEOUT_MIN, TIMEOUT_MAX = 1.0, 3600.0


class PromError(UnavailableError):
    """A failure talking to Prometheus (exit code 1); ``str()`` is a one-line message fit for the terminal."""


class OptionError(UsageError):
    """A refused option of the Prometheus client (URL, secret file, basic auth): bad arguments (exit code 2)."""


class _Shape(Exception):
    """What is wrong with a reply's JSON, in words."""


def read_secret(option: str, path: str) -> str:
    try:
        value = read_text(path, MAX_SECRET_BYTES).strip()
    except FileProblem as exc:
        raise OptionError(f"{option} {one_line(path, 200)}: cannot read: {exc}") from None
    if not value:
        raise OptionError(f"{option} {one_line(path, 200)}: the file is empty")
    if any(ch in value for ch in "\r\n\0"):
        raise OptionError(f"{option} {one_line(path, 200)}: the secret spans several lines")
    return value


def check_url(url: str) -> str:
    """``url`` without a trailing ``/``, when it is an http(s) URL with a host; OptionError otherwise."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or not url.isprintable():
        raise OptionError(f"--prometheus: must be an http:// or https:// URL with a host, got "
                          f"{one_line(repr(scrub_url(url[:400])), 120)}")
    return url.rstrip("/")


class Prometheus:
    def __init__(self, url: str, bearer_token_file: str | None = None, basic_auth: str | None = None,
                 timeout: float = 60.0, max_reply_bytes: int = MAX_REPLY_BYTES):
        self.url = check_url(url)
        self.shown = scrub_url(self.url)  # in messages: no user:password@, no tokens
        if not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:  # also NaN
            raise OptionError(f"--timeout: must be from {TIMEOUT_MIN:g}s to {TIMEOUT_MAX:g}s")
        self.timeout = timeout
        self.max_reply_bytes = max_reply_bytes
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "dbperf-report"
        if bearer_token_file:
            self.session.headers["Authorization"] = "Bearer " + read_secret("--bearer-token-file", bearer_token_file)
        if basic_auth:
            user, sep, password_file = basic_auth.partition(":")
            if not sep or not user or not password_file:
                raise OptionError("--basic-auth: expected USER:PASSWORD_FILE")
            self.session.auth = (user, read_secret("--basic-auth", password_file))
        self.queries = 0

    # -- transport ---------------------------------------------------------------------------------
    def _get(self, path: str, params: dict) -> dict:
        """The ``data`` of a successful reply to ``GET path?params``, within one deadline."""
        self.queries += 1
        box: dict = {}
        done = threading.Event()

        def fetch():
            try:
                box["reply"] = self._fetch(path, params, box)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc
            finally:
                done.set()

        # a worker, so that nothing (DNS, a connect, headers sent a byte a minute) outlasts the deadline
        worker = threading.Thread(target=fetch, name="dbperf-report-query", daemon=True)
        worker.start()
        if not done.wait(self.timeout):
            box["abandoned"] = True
            _hang_up(box.get("response"))
            raise self._timed_out()
        if "error" in box:
            raise box["error"]
        status, content_type, body = box["reply"]
        return self._data(path, params, status, content_type, body)

    def _timed_out(self) -> PromError:
        return PromError(f"Prometheus at {self.shown} did not answer within {self.timeout:g}s (--timeout)")

    def _fetch(self, path: str, params: dict, box: dict) -> tuple[int, str, bytes]:
        deadline = time.monotonic() + self.timeout
        try:
            response = self.session.get(self.url + path, params=params, timeout=self.timeout, stream=True)
        except requests.Timeout:
            raise self._timed_out() from None
        except Exception as exc:  # requests' own, and what it lets through (a host name IDNA refuses ...)
            raise PromError(f"Prometheus unreachable at {self.shown}: {_reason(exc)}") from None
        box["response"] = response
        with response:
            if response.status_code in (401, 403):
                raise PromError(f"Prometheus at {self.shown} refused the request (HTTP {response.status_code}): "
                                "check --bearer-token-file or --basic-auth")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > self.max_reply_bytes:
                raise self._too_large(path)
            chunks, size = [], 0
            try:
                for chunk in response.iter_content(256 * 1024):
                    size += len(chunk)
                    if size > self.max_reply_bytes:
                        raise self._too_large(path)
                    if time.monotonic() > deadline or box.get("abandoned"):
                        raise self._timed_out()
                    chunks.append(chunk)
            except requests.Timeout:
                raise self._timed_out() from None
            except PromError:
                raise
            except Exception as exc:  # a connection reset, a chunk or gzip stream that is no such thing
                raise PromError(f"Prometheus at {self.shown}{path} broke off its reply: {_reason(exc)}") from None
        content_type = one_line(response.headers.get("Content-Type", "no Content-Type").split(";")[0], 60)
        return response.status_code, content_type, b"".join(chunks)

    def _too_large(self, path: str) -> PromError:
        return PromError(f"Prometheus at {self.shown}{path} sent a reply of more than "
                         f"{self.max_reply_bytes // (1024 * 1024)} MiB, the most the report reads "
                         "(a shorter --period or a --target makes smaller replies)")

    def _data(self, path: str, params: dict, status: int, content_type: str, body: bytes) -> dict:
        try:
            reply = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
            reply = None
        if not isinstance(reply, dict) or reply.get("status") not in ("success", "error"):
            raise PromError(f"Prometheus at {self.shown}{path} answered HTTP {status} ({content_type}) "
                            "with something that is not the Prometheus API (wrong URL?)")
        if reply["status"] == "error":
            error = reply.get("error")
            error = one_line(error.strip().splitlines()[0], 300) if isinstance(error, str) and error.strip() else "unknown error"
            raise PromError(f"Prometheus at {self.shown} rejected a query (HTTP {status}): {error} "
                            f"(query: {one_line(params.get('query', path), 200)})")
        data = reply.get("data")
        if not isinstance(data, dict):
            raise self._malformed(path, "no data object")
        return data

    def _malformed(self, path: str, what: str) -> PromError:
        return PromError(f"Prometheus at {self.shown}{path} answered JSON that is not a Prometheus API reply: "
                         f"{what} (wrong URL, or not Prometheus?)")

    # -- queries -----------------------------------------------------------------------------------
    def check(self) -> str:
        """The Prometheus version; raises PromError when it cannot be reached."""
        version = self._get("/api/v1/status/buildinfo", {}).get("version")
        return one_line(version, 60) if isinstance(version, str) and version else "?"

    def instant(self, expr: str, at: float) -> list[tuple[dict, float]]:
        path = "/api/v1/query"
        data = self._get(path, {"query": expr, "time": f"{at:.3f}"})
        try:
            kind, result = data.get("resultType"), data.get("result")
            if kind == "scalar":
                return [({}, _sample(result, 0.0, MAX_TIME)[1])]
            if kind != "vector":
                raise _Shape(f"resultType {_what(kind)} where a vector or scalar belongs")
            return [(_labels(item), _sample(item.get("value"), 0.0, MAX_TIME)[1])
                    for item in _items(result) if "histogram" not in item]  # native histograms: not read
        except _Shape as exc:
            raise self._malformed(path, str(exc)) from None

    def range(self, expr: str, start: float, end: float, step: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        path = "/api/v1/query_range"
        data = self._get(path, {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"})
        try:
            if data.get("resultType") != "matrix":
                raise _Shape(f"resultType {_what(data.get('resultType'))} where a matrix belongs")
            out = []
            for item in _items(data.get("result")):
                values = item.get("values", [])
                if not isinstance(values, list):
                    raise _Shape("values that are not a list")
                # VictoriaMetrics aligns the times to the step: one step of slack either side
                points = sorted(_sample(v, start - step, end + step) for v in values)
                out.append((_labels(item), points))
            return out
        except _Shape as exc:
            raise self._malformed(path, str(exc)) from None


def _hang_up(response) -> None:
    """Shut the socket of a reply still being read by a worker, which then ends at once (closing
    the reply instead would wait for the worker's read). Before the reply, the worker is left to
    its socket timeout: a daemon thread, it never holds up the end of the command."""
    try:
        response.raw.connection.sock.shutdown(socket.SHUT_RDWR)
    except (AttributeError, OSError):
        pass


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "No route to host",
                   "Temporary failure in name resolution", "certificate verify failed", "Connection reset"):
        if marker in text:
            return marker
    return type(exc).__name__


def _what(value) -> str:
    if value is None:
        return "missing"
    return one_line(repr(value), 40) if isinstance(value, (str, int, float)) else f"a {type(value).__name__}"


def _items(result) -> list[dict]:
    if not isinstance(result, list):
        raise _Shape(f"a result that is {_what(result)}, not a list")
    for item in result:
        if not isinstance(item, dict):
            raise _Shape(f"a result item that is {_what(item)}, not an object")
    return result


def _labels(item: dict) -> dict:
    labels = item.get("metric")
    if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise _Shape("a series whose metric is not an object of text labels")
    return labels


def _sample(pair, earliest: float, latest: float) -> tuple[float, float]:
    """``[time, "value"]`` -> (time, value): the time a number from ``earliest`` to ``latest``,
    the value a number in text (``NaN``, ``+Inf`` included) or a JSON number."""
    if not isinstance(pair, list) or len(pair) != 2:
        raise _Shape(f"a sample that is {_what(pair)}, not [time, value]")
    ts, value = pair
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not earliest <= ts <= latest:
        raise _Shape(f"a sample at time {_what(ts)}, outside the query's times")
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _Shape(f"a sample value that is {_what(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise _Shape(f"a sample value {_what(value)} that is no number") from None
    return float(ts), number
