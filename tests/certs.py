"""Real certificates for the TLS tests, made with the openssl command: a CA, a server certificate
for 127.0.0.1/localhost, a client certificate, an expired server certificate and one from a CA
nobody trusts. EC P-256 keys (quick to make); ``openssl ca`` for exact validity dates."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import require_tool

CA_CONFIG = """[ ca ]
default_ca = test
[ test ]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = any
copy_extensions = copy
unique_subject = no
[ any ]
commonName = supplied
"""


@dataclass
class Certs:
    dir: Path

    def path(self, name: str) -> str:
        return str(self.dir / name)


def _run(*args: str, cwd: Path) -> None:
    proc = subprocess.run([require_tool("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"openssl {' '.join(args[:2])}: {proc.stderr.strip()}"


def _ca(workdir: Path, name: str) -> None:
    _run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=dbperf test {name}",
         "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
         cwd=workdir)
    db = workdir / f"{name}-db"
    db.mkdir()
    (db / "index.txt").write_text("")
    (db / "serial").write_text("1000\n")
    (workdir / f"{name}.cnf").write_text(CA_CONFIG.format(dir=db))


def _issue(workdir: Path, ca: str, name: str, cn: str, san: str, usage: str,
           start: str | None = None, end: str | None = None) -> None:
    _run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", f"{name}.key",
         "-out", f"{name}.csr", "-subj", f"/CN={cn}", "-addext", f"subjectAltName={san}",
         "-addext", f"extendedKeyUsage={usage}", "-addext", "basicConstraints=CA:FALSE", cwd=workdir)
    dates = ["-startdate", start, "-enddate", end] if start else ["-days", "2"]
    _run("ca", "-batch", "-notext", "-config", f"{ca}.cnf", "-cert", f"{ca}.crt", "-keyfile", f"{ca}.key",
         "-in", f"{name}.csr", "-out", f"{name}.crt", *dates, cwd=workdir)


def make_certs(workdir: Path) -> Certs:
    """``ca.crt``; ``server.crt/key`` (127.0.0.1, localhost); ``client.crt/key`` (DNS:prometheus,
    client auth); ``expired.crt/key`` (a server certificate of 2020); ``rogue-client.crt/key``
    (a client certificate of another CA, ``rogue.crt``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    _ca(workdir, "ca")
    _ca(workdir, "rogue")
    server_san = "IP:127.0.0.1,DNS:localhost"
    _issue(workdir, "ca", "server", "localhost", server_san, "serverAuth")
    _issue(workdir, "ca", "client", "prometheus", "DNS:prometheus", "clientAuth")
    _issue(workdir, "ca", "other-client", "someone", "DNS:someone.example", "clientAuth")
    _issue(workdir, "ca", "expired", "localhost", server_san, "serverAuth", "20200101000000Z", "20200102000000Z")
    _issue(workdir, "rogue", "rogue-client", "prometheus", "DNS:prometheus", "clientAuth")
    return Certs(workdir)
