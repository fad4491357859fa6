"""A small client for Prometheus's HTTP API (instant and range queries) with clear, one-line errors.

Secrets (bearer token, basic-auth password) are read from files and never appear in messages."""

from __future__ import annotations

import math
from pathlib import Path

import requests

from exporter.secrets import scrub_url


class PromError(Exception):
    """A failure talking to Prometheus; ``str()`` is a one-line message fit for the terminal."""


def read_secret(option: str, path: str) -> str:
    try:
        value = Path(path).read_text().strip()
    except OSError as exc:
        raise PromError(f"{option} {path}: cannot read: {exc.strerror}") from None
    if not value:
        raise PromError(f"{option} {path}: the file is empty")
    return value


class Prometheus:
    def __init__(self, url: str, bearer_token_file: str | None = None, basic_auth: str | None = None,
                 timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.shown = scrub_url(self.url)  # in messages: no user:password@, no tokens
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "dbperf-report"
        if bearer_token_file:
            self.session.headers["Authorization"] = "Bearer " + read_secret("--bearer-token-file", bearer_token_file)
        if basic_auth:
            user, sep, password_file = basic_auth.partition(":")
            if not sep or not user or not password_file:
                raise PromError("--basic-auth: expected USER:PASSWORD_FILE")
            self.session.auth = (user, read_secret("--basic-auth", password_file))
        self.queries = 0

    def _get(self, path: str, params: dict) -> dict:
        self.queries += 1
        try:
            response = self.session.get(self.url + path, params=params, timeout=self.timeout)
        except requests.Timeout:
            raise PromError(f"Prometheus at {self.shown} did not answer within {self.timeout:g}s") from None
        except requests.RequestException as exc:
            reason = type(exc).__name__
            text = str(exc)
            for marker in ("Connection refused", "Name or service not known", "No route to host",
                           "Temporary failure in name resolution", "certificate verify failed"):
                if marker in text:
                    reason = marker
                    break
            raise PromError(f"Prometheus unreachable at {self.shown}: {reason}") from None
        if response.status_code in (401, 403):
            raise PromError(f"Prometheus at {self.shown} refused the request (HTTP {response.status_code}): "
                            "check --bearer-token-file or --basic-auth")
        try:
            body = response.json()
        except ValueError:
            raise PromError(f"Prometheus at {self.shown}{path} answered HTTP {response.status_code} "
                            "with something that is not the Prometheus API (wrong URL?)") from None
        if body.get("status") != "success":
            error = body.get("error", "unknown error").splitlines()[0]
            raise PromError(f"Prometheus at {self.shown} rejected a query: {error} "
                            f"(query: {params.get('query', '')[:200]})")
        return body["data"]

    def check(self) -> str:
        """The Prometheus version; raises PromError when it cannot be reached."""
        return self._get("/api/v1/status/buildinfo", {}).get("version", "?")

    def instant(self, expr: str, at: float) -> list[tuple[dict, float]]:
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        if data["resultType"] == "scalar":
            return [({}, _num(data["result"][1]))]
        return [(r["metric"], _num(r["value"][1])) for r in data["result"]]

    def range(self, expr: str, start: float, end: float, step: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                                 "step": f"{step:g}"})
        return [(r["metric"], [(float(t), _num(v)) for t, v in r["values"]]) for r in data["result"]]


def _num(value: str) -> float:
    number = float(value)
    return number if math.isfinite(number) or math.isinf(number) else float("nan")
