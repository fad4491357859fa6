"""The web configuration file without certificates (those are in test_tls.py): one-line errors,
basic auth (bcrypt, the dummy hash for unknown users, the cache of successful checks), the config
keys of the HTTP layer, the timeout header's clamp, gzip's encoding, and SIGHUP on a real
``dbperf serve``."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import bcrypt
import pytest
import yaml

from exporter import webconfig
from exporter.compress import accepts_gzip, gzip_chunks
from exporter.config import ConfigError, parse
from exporter.metrics import GZIP_MEMBER_MIN, Chunk, Family, Rendered
from exporter.pgcluster import free_port
from exporter.server import MIN_BUDGET, parse_budget
from exporter.webconfig import AUTH_CACHE_SIZE, AUTH_CACHE_TTL, BasicAuth, parse_basic

pytestmark = pytest.mark.fast

ROOT = Path(__file__).resolve().parent.parent
COST = 4  # the cheapest bcrypt: the tests check logic, not cost


def hashed(password: str, cost: int = COST) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def web_error(tmp_path, data, text: str | None = None) -> str:
    path = tmp_path / "web.yml"
    path.write_text(text if text is not None else yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        webconfig.load(path)
    message = str(exc.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert len(message) < 700
    return message


# -- the file ---------------------------------------------------------------------------------

def test_mistakes_are_one_line_naming_the_key(tmp_path):
    good = hashed("pw")
    assert "tls_config: unknown key" in web_error(tmp_path, {"tls_config": {}})
    assert "rate_limit: is not supported" in web_error(tmp_path, {"rate_limit": {"interval": "1s", "burst": 2}})
    assert "curve_preferences: is not supported" in web_error(tmp_path, {"tls_server_config": {"curve_preferences": ["X25519"]}})
    assert "tls_server_config.cert_file: is required" in web_error(tmp_path, {"tls_server_config": {"min_version": "TLS12"}})
    assert "basic_auth_users: must be a mapping" in web_error(tmp_path, {"basic_auth_users": ["alice"]})
    assert "basic_auth_users.bob: must be a bcrypt hash" in web_error(tmp_path, {"basic_auth_users": {"bob": "plain"}})
    assert "without ':'" in web_error(tmp_path, {"basic_auth_users": {"a:b": good}})
    assert "http_server_config.headers.X-Bad: must be a one-line" in web_error(
        tmp_path, {"http_server_config": {"headers": {"X-Bad": "a\r\nSet-Cookie: x"}}})
    assert "written by dbperf itself" in web_error(tmp_path, {"http_server_config": {"headers": {"Content-Type": "x"}}})
    assert "not a valid HTTP header name" in web_error(tmp_path, {"http_server_config": {"headers": {"Bad Name": "x"}}})
    assert "http2: must be true or false" in web_error(tmp_path, {"http_server_config": {"http2": "yes"}})
    assert "invalid YAML" in web_error(tmp_path, None, "basic_auth_users: [\n")
    with pytest.raises(ConfigError, match="cannot read web config file: .*(No such file|not found)"):
        webconfig.load(tmp_path / "missing.yml")
    with pytest.raises(ConfigError, match="not a regular file"):
        webconfig.load(tmp_path)


def test_a_hash_is_never_quoted_in_an_error(tmp_path):
    secret_like = "$2y$10$" + "S3cretS3cret" * 4  # the wrong length: refused without being shown
    message = web_error(tmp_path, {"basic_auth_users": {"alice": secret_like}})
    assert "S3cret" not in message


def test_a_good_file(tmp_path):
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": hashed("pw")},
                                    "http_server_config": {"http2": False, "headers": {
                                        "X-Frame-Options": "deny", "Content-Security-Policy": ""}}}))
    web = webconfig.load(path)
    assert web.tls is None and web.scheme == "http" and web.auth is not None
    assert web.headers == (("X-Frame-Options", "deny"),)  # blank: unset, as in the exporter-toolkit
    assert webconfig.load(_write(tmp_path, "empty.yml", "")).auth is None  # an empty file protects nothing


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path


# -- basic auth ---------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_basic_auth_checks_and_caches_only_successes():
    clock = Clock()
    auth = BasicAuth({"alice": hashed("right").encode(), "bob": hashed("other").encode()}, clock=clock)
    assert auth.check(basic("alice", "right")) is True
    assert auth.bcrypt_checks == 1
    assert auth.check(basic("alice", "right")) is True  # remembered: no second bcrypt
    assert auth.bcrypt_checks == 1
    for _ in range(3):  # failures are never remembered: every guess pays bcrypt
        assert auth.check(basic("alice", "wrong")) is False
    assert auth.bcrypt_checks == 4
    assert auth.check(basic("bob", "right")) is False  # alice's password is not bob's
    clock.now += AUTH_CACHE_TTL + 1
    assert auth.check(basic("alice", "right")) is True  # expired: checked again
    assert auth.bcrypt_checks == 6


def test_unknown_user_costs_one_bcrypt_of_the_same_cost():
    auth = BasicAuth({"alice": hashed("right", 5).encode()})
    assert auth._dummy[4:6] == b"05"  # the dummy hash has the users' cost
    before = auth.bcrypt_checks
    assert auth.check(basic("mallory", "right")) is False
    assert auth.check(basic("", "right")) is False
    assert auth.bcrypt_checks == before + 2  # a wrong user runs bcrypt as a wrong password does
    assert auth.check(basic("mallory", "right")) is False
    assert auth.bcrypt_checks == before + 3  # and is never cached either


def test_cache_is_bounded_and_keyed_by_a_keyed_hash():
    stored = hashed("pw").encode()
    auth = BasicAuth({"alice": stored})
    for i in range(AUTH_CACHE_SIZE + 20):
        auth._cache[os.urandom(32)] = time.monotonic()
    assert auth.verify("alice", "pw") is True
    assert len(auth._cache) == AUTH_CACHE_SIZE
    pair = b"\0".join((b"alice", b"pw", stored))
    assert hmac.new(auth._key, pair, hashlib.sha256).digest() in auth._cache  # needs this process's key
    assert hashlib.sha256(pair).digest() not in auth._cache


def test_long_and_odd_passwords():
    long_password = "x" * 100
    auth = BasicAuth({"alice": bcrypt.hashpw(long_password[:72].encode(), bcrypt.gensalt(COST))})
    assert auth.verify("alice", long_password) is True  # bcrypt (and htpasswd) read 72 bytes
    auth = BasicAuth({"alice": hashed("pw").encode(), "名前": hashed("pässwörd").encode()})
    assert auth.verify("名前", "pässwörd") is True
    assert auth.verify("alice", "pw\0more") is False
    assert auth.verify("alice", "\udcff") is False  # a lone surrogate from a bad header


def test_too_busy_is_none_not_a_pass():
    auth = BasicAuth({"alice": hashed("pw").encode()}, busy_wait=0.05)
    taken = 0
    while auth._slots.acquire(blocking=False):
        taken += 1
    try:
        assert auth.verify("alice", "pw") is None
    finally:
        for _ in range(taken):
            auth._slots.release()
    assert auth.verify("alice", "pw") is True


@pytest.mark.parametrize("header", [None, "", "Bearer abc", "Basic", "Basic !!!", "Basic " + "QQ" * 3000,
                                    "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Basic " + base64.b64encode(b"\xff\xfe:x").decode()])
def test_malformed_authorization_headers(header):
    assert parse_basic(header) == (None, "")
    assert BasicAuth({"alice": hashed("pw").encode()}).check(header) is False


def test_parse_basic():
    assert parse_basic(basic("alice", "a:b:c")) == ("alice", "a:b:c")
    assert parse_basic("basic " + base64.b64encode(b"u:").decode()) == ("u", "")


# -- the config keys of the HTTP layer ----------------------------------------------------------

def config(**top):
    return parse({"listen": "127.0.0.1:0", "targets": [{"name": "main", "dsn": "host=x dbname=y"}], **top},
                 source="/etc/dbperf/dbperf.yml")


def test_http_config_keys():
    c = config()
    assert (c.max_scrape_timeout, c.web_config, c.web_unauthenticated_paths) == (120.0, "", ())
    c = config(max_scrape_timeout="30s", web_config="web.yml", web_unauthenticated_paths=["/healthz"])
    assert c.max_scrape_timeout == 30.0 and c.web_config == "/etc/dbperf/web.yml"
    assert c.web_unauthenticated_paths == ("/healthz",)
    assert config(web_config="/abs/web.yml").web_config == "/abs/web.yml"
    for top, needle in [({"max_scrape_timeout": float("inf")}, "max_scrape_timeout: must be at most"),
                        ({"max_scrape_timeout": "0.5s"}, "max_scrape_timeout: must be at least"),
                        ({"max_scrape_timeout": "5s"}, "scrape_timeout: must be at most max_scrape_timeout (5s)"),
                        ({"web_unauthenticated_paths": ["/metrics"]}, "web_unauthenticated_paths: must be a list of /healthz"),
                        ({"web_unauthenticated_paths": "/healthz"}, "web_unauthenticated_paths: must be a list"),
                        ({"web_config": 3}, "web_config: must be a non-empty string")]:
        with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            config(**top)


MAX = 30.0


@pytest.mark.parametrize("header, budget", [
    ("inf", 10.0), ("-inf", 10.0), ("nan", 10.0), ("1e400", 10.0), ("-1", 10.0), ("garbage", 10.0),
    ("", 10.0), ("0x10", 10.0), ("1" * 65, 10.0),
    ("99999999999999999999", MAX), ("1e300", MAX), ("31", MAX), ("30.5", MAX),
    ("5", 4.5), ("0.2", MIN_BUDGET),
])
def test_budget_is_clamped_to_the_configured_maximum(header, budget):
    assert parse_budget(header, 0.5, 10.0, MAX) == pytest.approx(budget)
    assert parse_budget(header, 0.5, 100.0, MAX) <= MAX  # the default too


# -- gzip ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("header, accepted", [
    ("gzip", True), ("gzip, deflate, br", True), ("deflate, gzip;q=0.5", True), ("GZIP", True),
    ("x-gzip", True), ("*", True), ("identity", False), (None, False), ("", False),
    ("gzip;q=0", False), ("gzip;q=0.0, *", False), ("*;q=0", False), ("br", False), ("gzip;q=abc", False),
])
def test_accept_encoding(header, accepted):
    assert accepts_gzip(header) is accepted


def large_rendered(tables: int = 3000) -> Rendered:
    rendered = Rendered()
    families = []
    for name in ("seq_scan_total", "n_live_tup", "size_bytes"):
        family = Family(f"pg_stat_user_tables_{name}", "counter", "help", ("datname", "relname"))
        for i in range(tables):
            family.add(("db", f"table_{i}"), i * 7 % 1000)
        families.append(family)
    small = Family("pg_up", "gauge", "up")
    small.add((), 1)
    rendered.add_families(families + [small], 'target="main"')
    return rendered


def test_gzip_members_decode_to_the_plain_text_and_large_bodies_are_compressed_once():
    rendered = large_rendered()
    plain = rendered.encode()
    chunks = list(rendered.chunks())
    large = [c for c in chunks if len(c) >= GZIP_MEMBER_MIN]
    assert len(large) == 3 and all(isinstance(c, Chunk) for c in large)
    first = gzip_chunks(rendered.chunks())
    assert gzip.decompress(b"".join(first)) == plain
    assert zlib.decompress(b"".join(first)[:20_000], 31)  # a plain zlib reader reads the first member
    members = [c.gz for c in large]
    merged = Rendered()  # a cached collector's text merged into the next scrape
    merged.merge(rendered)
    second = gzip_chunks(merged.chunks())
    assert all(any(m is piece for piece in second) for m in members)  # reused, not compressed again
    assert gzip.decompress(b"".join(second)) == plain
    assert len(b"".join(second)) * 10 < len(plain)
    assert gzip.decompress(b"".join(gzip_chunks([]))) == b""


# -- SIGHUP on a real dbperf serve ---------------------------------------------------------------

class Dbperf:
    def __init__(self, tmp_path: Path, web: dict, extra: tuple = ()):
        self.web_path = tmp_path / "web.yml"
        self.web_path.write_text(yaml.safe_dump(web))
        self.port = free_port()
        cfg = tmp_path / "dbperf.yml"
        cfg.write_text(yaml.safe_dump({"listen": f"127.0.0.1:{self.port}", "web_config": "web.yml",
                                       "web_unauthenticated_paths": ["/healthz"], "host_metrics": False,
                                       "targets": [{"name": "main", "dsn": "host=127.0.0.1 port=1 dbname=x"}]}))
        self.log = tmp_path / "dbperf.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "exporter.cli", "serve", "--config", str(cfg), *extra],
                                     cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))

    def status(self, path: str, auth: tuple | None = None) -> int:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}")
        if auth:
            request.add_header("Authorization", basic(*auth))
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def wait(self, predicate, what: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if predicate():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}: {self.log.read_text()}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=15)


def test_sighup_reloads_the_web_config_and_keeps_the_old_one_when_bad(tmp_path):
    dbperf = Dbperf(tmp_path, {"basic_auth_users": {"alice": hashed("one")}})
    try:
        dbperf.wait(lambda: dbperf.status("/healthz") == 200, "dbperf up (/healthz needs no auth here)")
        assert dbperf.status("/readyz") == 401
        assert dbperf.status("/readyz", ("alice", "one")) == 200
        dbperf.web_path.write_text(yaml.safe_dump({"basic_auth_users": {"alice": hashed("two")}}))
        dbperf.proc.send_signal(signal.SIGHUP)
        dbperf.wait(lambda: dbperf.status("/readyz", ("alice", "two")) == 200, "the new password after SIGHUP")
        assert dbperf.status("/readyz", ("alice", "one")) == 401
        dbperf.web_path.write_text("basic_auth_users:\n  alice: not-a-hash\n")
        dbperf.proc.send_signal(signal.SIGHUP)
        dbperf.wait(lambda: "not reloaded" in dbperf.log.read_text(), "the reload error in the log")
        assert dbperf.status("/readyz", ("alice", "two")) == 200  # the old file still applies
        lines = [line for line in dbperf.log.read_text().splitlines() if "not reloaded" in line]
        assert len(lines) == 1 and "basic_auth_users.alice: must be a bcrypt hash" in lines[0]
        assert dbperf.proc.poll() is None
    finally:
        dbperf.stop()


def test_a_bad_web_config_at_start_is_one_line_and_exit_2(tmp_path):
    for web, needle in [({"basic_auth_users": {"alice": "x"}}, "basic_auth_users.alice: must be a bcrypt hash"),
                        ({"tls_server_config": {"cert_file": "nope.crt", "key_file": "nope.key"}}, "cannot read")]:
        dbperf = Dbperf(tmp_path, web)
        assert dbperf.proc.wait(timeout=30) == 2  # a bad file is bad input (docs/exit-codes.md)
        lines = dbperf.log.read_text().strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and str(tmp_path / "web.yml") in lines[0], lines
    flag = Dbperf(tmp_path, {}, extra=("--web.config.file", str(tmp_path / "missing.yml")))
    assert flag.proc.wait(timeout=30) == 2
    assert "missing.yml: cannot read web config file" in flag.log.read_text()
