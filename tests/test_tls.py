"""TLS, client certificates and basic auth (issue 13), with real certificates made by openssl and
the real Prometheus scraping dbperf:

- over TLS with basic auth: up, with samples; a wrong password: 401, the target down;
- with a client certificate under RequireAndVerifyClientCert: up; without one: down;
- an expired server certificate: Prometheus refuses it (down, a certificate error);
- plain HTTP to the TLS port: refused.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import tempfile
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml

from certs import make_certs
from conftest import Prometheus, Served, make_config, require_tool, wait_until
from exporter import webconfig
from exporter.config import ConfigError
from exporter.server import Exporter

pytestmark = pytest.mark.prom

USER, PASSWORD = "prometheus", "s3cret-Pa55"


@pytest.fixture(scope="module")
def certs():
    with tempfile.TemporaryDirectory(prefix="dbperf-certs-") as tmp:
        yield make_certs(Path(tmp))


@pytest.fixture(scope="module")
def password_hash():
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(6)).decode()


def web_file(directory: Path, name: str, data: dict) -> str:
    path = directory / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


class TLSServed(Served):
    """A real dbperf behind TLS: ``get`` over HTTPS with the test CA (and a client certificate)."""

    def __init__(self, exporter: Exporter, web: str, certs):
        from exporter.server import serve_in_thread

        self.exporter = exporter
        self.server, self.thread = serve_in_thread(exporter, web_config=web)
        self.port = self.server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.port}"
        self.certs = certs

    def context(self, client: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.certs.path("ca.crt"))
        if client:
            ctx.load_cert_chain(self.certs.path(f"{client}.crt"), self.certs.path(f"{client}.key"))
        return ctx

    def https(self, path: str, auth: tuple | None = None, client: str | None = None, headers: dict | None = None):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(client), timeout=20)
        try:
            headers = dict(headers or {})
            if auth:
                headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read().decode()
        finally:
            conn.close()


@pytest.fixture
def tls_serve(pg, certs):
    started = []

    def start(web: dict, **top) -> TLSServed:
        directory = Path(tempfile.mkdtemp(prefix="dbperf-web-"))
        path = web_file(directory, "web.yml", web)
        served = TLSServed(Exporter(make_config(pg, host_metrics=False, **top)), path, certs)
        started.append(served)
        return served

    yield start
    for served in started:
        served.close()


def tls_config(certs, name: str = "server", **extra) -> dict:
    return {"cert_file": certs.path(f"{name}.crt"), "key_file": certs.path(f"{name}.key"), **extra}


# -- with the real Prometheus ------------------------------------------------------------------

def test_prometheus_scrapes_over_tls_with_basic_auth_and_client_certificates(certs, password_hash, tls_serve):
    auth = tls_serve({"tls_server_config": tls_config(certs), "basic_auth_users": {USER: password_hash},
                      "http_server_config": {"headers": {"Strict-Transport-Security": "max-age=31536000"}}})
    mtls = tls_serve({"tls_server_config": tls_config(certs, client_auth_type="RequireAndVerifyClientCert",
                                                     client_ca_file=certs.path("ca.crt"))})
    expired = tls_serve({"tls_server_config": tls_config(certs, "expired")})
    ca = {"ca_file": certs.path("ca.crt")}
    client = {**ca, "cert_file": certs.path("client.crt"), "key_file": certs.path("client.key")}

    def job(name, served, path="/probe", **extra):
        return {"job_name": name, "scheme": extra.pop("scheme", "https"), "metrics_path": path,
                "params": {"target": ["main"]} if path == "/probe" else {},
                "static_configs": [{"targets": [served.address]}], **extra}

    jobs = [
        job("tls_basic_auth", auth, tls_config=ca, basic_auth={"username": USER, "password": PASSWORD}),
        job("tls_wrong_password", auth, tls_config=ca, basic_auth={"username": USER, "password": "wrong"}),
        job("tls_unknown_user", auth, tls_config=ca, basic_auth={"username": "mallory", "password": PASSWORD}),
        job("plain_http_to_tls", auth, scheme="http", basic_auth={"username": USER, "password": PASSWORD}),
        job("mtls_client_cert", mtls, "/metrics", tls_config=client),
        job("mtls_no_client_cert", mtls, "/metrics", tls_config=ca),
        job("expired_server_cert", expired, tls_config=ca),
    ]
    prom = Prometheus(jobs)
    try:
        def health():
            targets = requests.get(prom.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            found = {t["labels"]["job"]: t for t in targets if t["health"] != "unknown"}
            return found if len(found) == len(jobs) else None

        targets = wait_until(health, timeout=30, interval=0.5, message="every job scraped once")
        summary = {name: (t["health"], t["lastError"]) for name, t in targets.items()}
        print("\n".join(f"{name}: {h} {err}" for name, (h, err) in sorted(summary.items())))
        assert targets["tls_basic_auth"]["health"] == "up", summary
        assert targets["mtls_client_cert"]["health"] == "up", summary
        for name in ("tls_wrong_password", "tls_unknown_user"):
            assert targets[name]["health"] == "down" and "401" in targets[name]["lastError"], summary
        assert targets["plain_http_to_tls"]["health"] == "down", summary
        assert targets["mtls_no_client_cert"]["health"] == "down", summary
        assert "certificate" in targets["expired_server_cert"]["lastError"].lower(), summary
        assert "expired" in targets["expired_server_cert"]["lastError"], summary
        assert targets["expired_server_cert"]["health"] == "down"
        # the data went through: the database's own series from both protected servers
        wait_until(lambda: prom.query('pg_up{job="tls_basic_auth",target="main"} == 1'), timeout=20,
                   message="pg_up 1 through TLS and basic auth")
        wait_until(lambda: prom.query('pg_up{job="mtls_client_cert",target="main"} == 1'), timeout=20,
                   message="pg_up 1 through a client certificate")
        assert prom.query('count(pg_stat_database_xact_commit_total{job="tls_basic_auth"}) > 0')
        # bcrypt once per successful (user, password) per minute, not per scrape
        assert auth.server.web.auth.bcrypt_checks < auth.exporter.scrapers["main"].scrapes + 5
    finally:
        prom.stop()


# -- the same rules, checked from Python ---------------------------------------------------------

@pytest.mark.pg
def test_basic_auth_over_tls(certs, password_hash, tls_serve):
    served = tls_serve({"tls_server_config": tls_config(certs), "basic_auth_users": {USER: password_hash},
                        "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}}},
                       web_unauthenticated_paths=["/healthz"])
    status, headers, body = served.https("/probe?target=main", auth=(USER, PASSWORD))
    assert status == 200 and "pg_up{target=\"main\"} 1" in body
    assert headers["X-Content-Type-Options"] == "nosniff"
    for path in ("/metrics", "/probe?target=main", "/readyz", "/", "/nope", "/probe?target=unknown"):
        for auth in (None, (USER, "wrong"), ("nobody", PASSWORD), (USER, PASSWORD + "x")):
            status, headers, body = served.https(path, auth=auth)
            assert status == 401, (path, auth, status)
            assert headers["WWW-Authenticate"].startswith("Basic ") and "unknown" not in body
            assert headers["X-Content-Type-Options"] == "nosniff"  # on every answer
    # /healthz was allowed without auth in the config; nothing else was
    assert served.https("/healthz")[0] == 200


@pytest.mark.pg
def test_healthz_needs_auth_unless_allowed(certs, password_hash, tls_serve):
    served = tls_serve({"tls_server_config": tls_config(certs), "basic_auth_users": {USER: password_hash}})
    assert served.https("/healthz")[0] == 401
    assert served.https("/healthz", auth=(USER, PASSWORD))[0] == 200


@pytest.mark.pg
def test_plain_http_to_the_tls_port_is_refused(certs, tls_serve):
    served = tls_serve({"tls_server_config": tls_config(certs)})
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
    assert b"pg_up" not in answer and not answer.startswith(b"HTTP/1.1 200")
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{served.port}/metrics", timeout=10)
    assert served.https("/healthz")[0] == 200  # and the port still serves TLS


@pytest.mark.pg
def test_client_certificates(certs, tls_serve):
    served = tls_serve({"tls_server_config": tls_config(certs, client_auth_type="RequireAndVerifyClientCert",
                                                       client_ca_file=certs.path("ca.crt"),
                                                       client_allowed_sans=["prometheus"])})
    assert served.https("/healthz", client="client")[0] == 200
    for client in (None, "rogue-client", "other-client"):  # none, another CA's, a SAN not allowed
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.RemoteDisconnected, OSError)):
            served.https("/healthz", client=client)
    optional = tls_serve({"tls_server_config": tls_config(certs, client_auth_type="VerifyClientCertIfGiven",
                                                         client_ca_file=certs.path("ca.crt"))})
    assert optional.https("/healthz")[0] == 200
    assert optional.https("/healthz", client="client")[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        optional.https("/healthz", client="rogue-client")


@pytest.mark.pg
def test_min_version_and_cipher_suites(certs, tls_serve):
    tls13 = tls_serve({"tls_server_config": tls_config(certs, min_version="TLS13")})
    ctx = tls13.context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", tls13.port), timeout=10) as raw:
            ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    one = tls_serve({"tls_server_config": tls_config(certs, max_version="TLS12",
                                                     cipher_suites=["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"])})
    with socket.create_connection(("127.0.0.1", one.port), timeout=10) as raw:
        with one.context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            assert tls.version() == "TLSv1.2"
            assert tls.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"


@pytest.mark.pg
def test_reload_keeps_the_old_file_when_the_new_one_is_bad(certs, password_hash, tls_serve, caplog):
    served = tls_serve({"tls_server_config": tls_config(certs, "expired"), "basic_auth_users": {USER: password_hash}})
    with pytest.raises(ssl.SSLCertVerificationError):
        served.https("/healthz", auth=(USER, PASSWORD))
    path = Path(served.server.web_path)
    other = bcrypt.hashpw(b"new-password", bcrypt.gensalt(4)).decode()
    path.write_text(yaml.safe_dump({"tls_server_config": tls_config(certs), "basic_auth_users": {USER: other}}))
    assert served.server.reload_web_config()
    assert served.https("/healthz", auth=(USER, "new-password"))[0] == 200
    assert served.https("/healthz", auth=(USER, PASSWORD))[0] == 401
    path.write_text("tls_server_config:\n  cert_file: /nonexistent.crt\n  key_file: /nonexistent.key\n")
    caplog.clear()
    assert not served.server.reload_web_config()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "/nonexistent.crt" in errors[0].getMessage() and "\n" not in errors[0].getMessage()
    assert served.https("/healthz", auth=(USER, "new-password"))[0] == 200  # the old one still applies


def test_tls_file_mistakes_are_one_line(certs, tmp_path):
    def error(tls: dict) -> str:
        with pytest.raises(ConfigError) as exc:
            webconfig.load(web_file(tmp_path, "w.yml", {"tls_server_config": tls}))
        text = str(exc.value)
        assert "\n" not in text and text.startswith(str(tmp_path)), text
        return text

    assert "cert_file: is required" in error({"key_file": certs.path("server.key")})
    assert "cannot read" in error(tls_config(certs, cert_file="/nonexistent.crt"))
    assert "cannot load the certificate and key" in error(tls_config(certs, key_file=certs.path("client.key")))
    assert "client_ca_file: is required" in error(tls_config(certs, client_auth_type="RequireAndVerifyClientCert"))
    assert "client_auth_type is NoClientCert" in error(tls_config(certs, client_ca_file=certs.path("ca.crt")))
    assert "must be one of NoClientCert" in error(tls_config(certs, client_auth_type="Sometimes"))
    assert "unknown cipher suite 'TLS_FANCY'" in error(tls_config(certs, cipher_suites=["TLS_FANCY"]))
    assert "none of these cipher suites is available" in error(tls_config(certs, cipher_suites=["TLS_RSA_WITH_RC4_128_SHA"]))
    assert "max_version: is below min_version" in error(tls_config(certs, min_version="TLS13", max_version="TLS12"))
    assert "must be one of TLS10" in error(tls_config(certs, min_version="SSL3"))
    assert "client_allowed_sans: needs client_auth_type" in error(tls_config(certs, client_allowed_sans=["x"]))
    # a passphrase-protected key is refused, never prompted for
    encrypted = tmp_path / "encrypted.key"
    import subprocess

    subprocess.run([require_tool("openssl"), "ec", "-in", certs.path("server.key"), "-out", str(encrypted), "-aes256",
                    "-passout", "pass:pw"], check=True, capture_output=True)
    assert "encrypted with a passphrase" in error(tls_config(certs, key_file=str(encrypted)))
    # inline PEM works as the files do; relative paths are beside the web config file
    inline = {"cert": Path(certs.path("server.crt")).read_text(), "key": Path(certs.path("server.key")).read_text()}
    assert webconfig.load(web_file(tmp_path, "inline.yml", {"tls_server_config": inline})).tls
    relative = {"cert_file": "server.crt", "key_file": "server.key"}
    assert webconfig.load(web_file(certs.dir, "relative.yml", {"tls_server_config": relative})).tls
