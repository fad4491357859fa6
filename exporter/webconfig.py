"""The web configuration file (``--web.config.file``, or ``web_config:`` in the config): TLS, client
certificates, basic authentication and extra response headers, in the format of the Prometheus
exporter-toolkit, which every official exporter reads.

    tls_server_config:
      cert_file: server.crt          # or cert: (PEM text); relative paths: beside this file
      key_file: server.key           # or key:
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt         # or client_ca:
      client_allowed_sans: [prometheus.example.org]
      min_version: TLS12             # TLS10 .. TLS13; max_version too
      cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]   # Go's names, up to TLS 1.2
      prefer_server_cipher_suites: true
    http_server_config:
      headers: {Strict-Transport-Security: max-age=31536000}
    basic_auth_users:
      prometheus: $2y$10$...         # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

Every mistake is one :class:`~exporter.config.ConfigError` line naming the file and the key; a
password hash is never quoted. Python's ``ssl`` verifies every client certificate it accepts, so
``RequireAnyClientCert`` verifies against ``client_ca_file`` too and ``RequestClientCert`` lets every
client in as ``NoClientCert`` does (dbperf uses a certificate only to let a client in).
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import os
import re
import secrets
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from exporter.configfile import FileProblem, _Reader, read_text, read_yaml_file, show

MAX_WEB_CONFIG_BYTES = 256 * 1024
MAX_PEM_BYTES = 1024 * 1024

TLS_KEYS = ("cert_file", "key_file", "cert", "key", "client_auth_type", "client_ca_file", "client_ca",
            "client_allowed_sans", "min_version", "max_version", "cipher_suites",
            "prefer_server_cipher_suites", "curve_preferences")
TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")

# client_auth_type -> (ssl verify mode, a CA is needed, a certificate is required)
CLIENT_AUTH = {
    "NoClientCert": (ssl.CERT_NONE, False, False),
    "RequestClientCert": (ssl.CERT_NONE, False, False),
    "RequireAnyClientCert": (ssl.CERT_REQUIRED, True, True),
    "VerifyClientCertIfGiven": (ssl.CERT_OPTIONAL, True, False),
    "RequireAndVerifyClientCert": (ssl.CERT_REQUIRED, True, True),
}
VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
            "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}

# Go's cipher suite names (crypto/tls) -> OpenSSL's, for TLS 1.0-1.2; TLS 1.3 suites are not
# configurable (in Go either), so they are accepted and change nothing.
GO_CIPHERS = {
    "TLS_RSA_WITH_RC4_128_SHA": "RC4-SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": "DES-CBC3-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256": "AES128-SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": "ECDHE-ECDSA-RC4-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": "ECDHE-RSA-RC4-SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": "ECDHE-RSA-DES-CBC3-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": "ECDHE-ECDSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": "ECDHE-RSA-AES128-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305": "ECDHE-RSA-CHACHA20-POLY1305",      # Go's older aliases
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305": "ECDHE-ECDSA-CHACHA20-POLY1305",
}
TLS13_SUITES = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")

BCRYPT_RE = re.compile(r"\$2[aby]\$([0-9]{2})\$[./A-Za-z0-9]{53}", re.ASCII)
HEADER_NAME_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}", re.ASCII)
# headers dbperf writes itself: a web config may not replace them
OWN_HEADERS = {"content-type", "content-length", "content-encoding", "transfer-encoding", "connection",
               "vary", "www-authenticate", "server", "date", "keep-alive"}
MAX_USERS = 1000

AUTH_CACHE_TTL = 60.0    # seconds a successful (user, password) check is remembered
AUTH_CACHE_SIZE = 256    # (user, password) pairs remembered at most
MAX_AUTH_HEADER = 4096   # bytes of an Authorization header; a longer one is refused unread


class _Refused(Exception):
    """A key file that asks for a passphrase (dbperf never prompts)."""


@dataclass(frozen=True)
class TLSSettings:
    context: ssl.SSLContext = field(repr=False)
    client_auth_type: str = "NoClientCert"
    allowed_sans: frozenset = frozenset()  # empty: any verified client


@dataclass
class WebConfig:
    """What one web configuration file says; ``source`` is its path ("" for none)."""

    source: str = ""
    tls: TLSSettings | None = None
    auth: "BasicAuth | None" = None
    headers: tuple = ()  # ((name, value), ...) added to every response

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"


NONE = WebConfig()


def load(path: str | os.PathLike) -> WebConfig:
    """The web configuration file ``path``; :class:`ConfigError` (one line) when it is wrong."""
    return parse(read_yaml_file(path, MAX_WEB_CONFIG_BYTES, "web config file"), str(path))


def parse(data, source: str) -> WebConfig:
    top = _Reader(source, data, "")
    top.allow(*TOP_KEYS)
    if top.data.get("rate_limit") is not None:
        top.fail("rate_limit", "is not supported by dbperf (limit scrapes on the Prometheus side)")
    base = Path(source).parent
    tls = _tls(top.sub("tls_server_config"), base) if top.data.get("tls_server_config") is not None else None
    http = top.sub("http_server_config")
    http.allow("headers", "http2")
    http.get("http2", bool)  # dbperf speaks HTTP/1.1 only: true and false are the same
    return WebConfig(source=source, tls=tls, auth=_users(top.sub("basic_auth_users")),
                     headers=_headers(http.sub("headers")))


def _headers(reader: _Reader) -> tuple:
    out = []
    for name, value in reader.data.items():
        if not isinstance(name, str) or not HEADER_NAME_RE.fullmatch(name):
            reader.fail(show(name, 60), "is not a valid HTTP header name")
        if name.lower() in OWN_HEADERS:
            reader.fail(name, "is written by dbperf itself and cannot be set here")
        if not isinstance(value, str) or len(value) > 4096 or any(c in value for c in "\r\n\0"):
            reader.fail(name, "must be a one-line string of at most 4096 characters")
        if value:  # blank: unset, as in the exporter-toolkit
            out.append((name, value))
    return tuple(out)


def _users(reader: _Reader) -> "BasicAuth | None":
    if not reader.data:
        return None
    if len(reader.data) > MAX_USERS:
        reader.fail("", f"more than {MAX_USERS} users (use client certificates or a proxy for many)")
    users = {}
    for user, hashed in reader.data.items():
        if not isinstance(user, str) or not user or ":" in user or len(user) > 256:
            reader.fail(show(user, 60), "user names are non-empty strings of at most 256 characters without ':'")
        if not isinstance(hashed, str) or not BCRYPT_RE.fullmatch(hashed):
            reader.fail(user, "must be a bcrypt hash ($2y$10$ and 53 characters; e.g. htpasswd -nBC 10 \"\" | tr -d ':\\n')")
        cost = int(BCRYPT_RE.fullmatch(hashed).group(1))
        if not 4 <= cost <= 31:
            reader.fail(user, f"bcrypt cost must be 4 .. 31, got {cost}")
        users[user] = hashed.encode()
    return BasicAuth(users)


def _tls(reader: _Reader, base: Path) -> TLSSettings:
    reader.allow(*TLS_KEYS)
    if reader.data.get("curve_preferences"):
        reader.fail("curve_preferences", "is not supported by dbperf (Python's ssl takes OpenSSL's curve list)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert, key = _pem_source(reader, "cert", base), _pem_source(reader, "key", base)
    if cert is None or key is None:
        reader.fail("cert_file" if cert is None else "key_file",
                    "is required (cert_file and key_file, or cert and key inline)")
    _load_pair(reader, context, cert, key)

    mode_name = reader.get("client_auth_type", str, "NoClientCert")
    if mode_name not in CLIENT_AUTH:
        reader.fail("client_auth_type", f"must be one of {', '.join(CLIENT_AUTH)}, got {show(mode_name)}")
    mode, needs_ca, requires_cert = CLIENT_AUTH[mode_name]
    ca = _pem_source(reader, "client_ca", base)
    if ca is not None and not needs_ca:
        reader.fail("client_ca_file", f"a client CA is set but client_auth_type is {mode_name}: "
                    "use RequireAndVerifyClientCert (or VerifyClientCertIfGiven)")
    if needs_ca and ca is None:
        reader.fail("client_ca_file", f"is required with client_auth_type {mode_name} "
                    "(dbperf verifies every client certificate it accepts)")
    if ca is not None:
        kind, value = ca
        try:
            if kind == "file":
                context.load_verify_locations(cafile=str(value))
            else:
                context.load_verify_locations(cadata=value)
        except (ssl.SSLError, OSError, ValueError) as exc:
            reader.fail("client_ca_file" if kind == "file" else "client_ca",
                        f"cannot load the client CA: {_ssl_reason(exc)}")
    context.verify_mode = mode

    sans = reader.data.get("client_allowed_sans") or []
    if not isinstance(sans, list) or not all(isinstance(s, str) and s for s in sans):
        reader.fail("client_allowed_sans", "must be a list of non-empty strings")
    if sans and not requires_cert:
        reader.fail("client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert (or RequireAnyClientCert)")

    low = _version(reader, "min_version", "TLS12")
    high = _version(reader, "max_version", "TLS13")
    if low > high:
        reader.fail("max_version", "is below min_version")
    try:
        context.minimum_version, context.maximum_version = low, high
    except (ValueError, ssl.SSLError) as exc:
        reader.fail("min_version", f"not available with this OpenSSL: {_ssl_reason(exc)}")

    suites = reader.data.get("cipher_suites")
    if suites is not None:
        if not isinstance(suites, list) or not all(isinstance(s, str) for s in suites):
            reader.fail("cipher_suites", "must be a list of Go cipher suite names")
        names = []
        for suite in suites:
            if suite in TLS13_SUITES:
                continue
            if suite not in GO_CIPHERS:
                reader.fail("cipher_suites", f"unknown cipher suite {show(suite, 60)} (Go's names, such as "
                            "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")
            names.append(GO_CIPHERS[suite])
        if names:
            try:
                context.set_ciphers(":".join(names))
            except ssl.SSLError:
                reader.fail("cipher_suites", "none of these cipher suites is available in this OpenSSL")
    if reader.get("prefer_server_cipher_suites", bool, True):
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    return TLSSettings(context=context, client_auth_type=mode_name, allowed_sans=frozenset(sans))


def _version(reader: _Reader, key: str, default: str):
    name = reader.get(key, str, default)
    if name not in VERSIONS:
        reader.fail(key, f"must be one of {', '.join(VERSIONS)}, got {show(name)}")
    return VERSIONS[name]


def _pem_source(reader: _Reader, name: str, base: Path):
    """``("file", path)``, ``("inline", text)`` or None for ``name_file`` / ``name``."""
    path, inline = reader.get(f"{name}_file", str), reader.get(name, str)
    if path and inline:
        reader.fail(name, f"give {name}_file or {name}, not both")
    if path:
        full = Path(path) if Path(path).is_absolute() else base / path
        try:
            read_text(full, MAX_PEM_BYTES)  # a FIFO or a huge file is an error, never a wait
        except FileProblem as exc:
            reader.fail(f"{name}_file", f"cannot read {full}: {exc}")
        return "file", full
    if inline:
        return "inline", inline
    return None


def _no_passphrase():
    raise _Refused()


def _load_pair(reader: _Reader, context: ssl.SSLContext, cert, key) -> None:
    with tempfile.TemporaryDirectory(prefix="dbperf-tls-") as tmp:
        paths = []
        for (kind, value), name in ((cert, "cert"), (key, "key")):
            if kind == "file":
                paths.append(str(value))
                continue
            path = Path(tmp) / name  # inline PEM: a private file for the moment OpenSSL reads it
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(value)
            paths.append(str(path))
        where = "cert_file" if cert[0] == "file" else "cert"
        try:
            context.load_cert_chain(paths[0], paths[1], password=_no_passphrase)
        except _Refused:
            reader.fail("key_file" if key[0] == "file" else "key",
                        "the key is encrypted with a passphrase: dbperf needs an unencrypted key (mode 0600)")
        except (ssl.SSLError, OSError, ValueError) as exc:
            reader.fail(where, f"cannot load the certificate and key: {_ssl_reason(exc)}")


def _ssl_reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())[:200]


def peer_allowed(tls: TLSSettings, peercert: dict | None) -> bool:
    """With ``client_allowed_sans``: whether the verified client certificate has one of them."""
    if not tls.allowed_sans:
        return True
    if not peercert:
        return False
    return any(value in tls.allowed_sans for _, value in peercert.get("subjectAltName", ()))


# -- basic authentication ---------------------------------------------------------------------

class BasicAuth:
    """``check(header)`` for an ``Authorization`` header against the users' bcrypt hashes.

    - bcrypt's own comparison is constant-time; an unknown user is checked against a dummy hash
      of the users' cost, so a wrong user costs what a wrong password costs, and user names are
      compared with :func:`hmac.compare_digest` over every user (no early exit).
    - A successful check is remembered for :data:`AUTH_CACHE_TTL` seconds (at most
      :data:`AUTH_CACHE_SIZE` pairs), keyed by an HMAC of (user, password, hash) under a key made
      for this process: a scrape every 15 s pays bcrypt (~70-100 ms of CPU at cost 10) once a
      minute, not on every scrape. Failures are not remembered (each guess pays bcrypt); a reload
      makes a new cache.
    - At most one bcrypt computation per CPU at a time; a request that waits more than
      ``busy_wait`` seconds for one is answered 503, so guesses cannot occupy every worker.
    """

    def __init__(self, users: dict[str, bytes], clock=time.monotonic, busy_wait: float = 5.0):
        self.users = users
        self.clock = clock
        self.busy_wait = busy_wait
        costs = collections.Counter(int(h[4:6]) for h in users.values())
        import bcrypt

        self._bcrypt = bcrypt
        self._dummy = bcrypt.hashpw(secrets.token_bytes(18), bcrypt.gensalt(costs.most_common(1)[0][0]))
        self._key = secrets.token_bytes(32)
        self._cache: collections.OrderedDict[bytes, float] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))
        self.bcrypt_checks = 0  # bcrypt computations run (tests, and to tell the cache works)

    def check(self, header: str | None) -> bool | None:
        """True: a configured user with the right password; False: not; None: too busy to tell."""
        user, password = parse_basic(header)
        if user is None:
            return False
        return self.verify(user, password)

    def verify(self, user: str, password: str) -> bool | None:
        user_b, password_b = user.encode("utf-8", "surrogatepass"), password.encode("utf-8", "surrogatepass")
        stored = None
        for name, hashed in self.users.items():  # every name compared: no early exit
            if hmac.compare_digest(name.encode(), user_b):
                stored = hashed
        key = hmac.new(self._key, b"\0".join((user_b, password_b, stored or b"")), hashlib.sha256).digest()
        now = self.clock()
        if stored is not None:
            with self._lock:
                at = self._cache.get(key)
                if at is not None and now - at < AUTH_CACHE_TTL:
                    self._cache.move_to_end(key)
                    return True
        if not self._slots.acquire(timeout=self.busy_wait):
            return None
        try:
            self.bcrypt_checks += 1
            # bcrypt reads at most 72 bytes (htpasswd and Go cut there too); a NUL ends the match
            ok = self._checkpw(password_b[:72], stored or self._dummy) and stored is not None
        finally:
            self._slots.release()
        if ok:
            with self._lock:
                self._cache[key] = now
                self._cache.move_to_end(key)
                while len(self._cache) > AUTH_CACHE_SIZE:
                    self._cache.popitem(last=False)
        return ok

    def _checkpw(self, password: bytes, hashed: bytes) -> bool:
        try:
            return self._bcrypt.checkpw(password, hashed)
        except ValueError:
            return False


def parse_basic(header: str | None) -> tuple[str | None, str]:
    """``(user, password)`` of a ``Basic`` Authorization header, ``(None, "")`` when it is none."""
    if not header or len(header) > MAX_AUTH_HEADER:
        return None, ""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None, ""
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None, ""
    user, sep, password = decoded.partition(":")
    if not sep:
        return None, ""
    return user, password
