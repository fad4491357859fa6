"""A throwaway PostgreSQL cluster built from the machine's PostgreSQL binaries.

Used by ``dbperf demo``, the test suite and the benchmarks. When run as root the cluster runs as
the unprivileged user ``nobody`` (PostgreSQL refuses to run as root). It listens on 127.0.0.1 on a
free port with trust authentication and has pg_stat_statements preloaded.
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class ClusterError(RuntimeError):
    pass


def find_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` holding ``postgres``, or the ``PATH``'s."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres") or shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    raise ClusterError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install them with: apt-get install postgresql"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Throwaway:
    """A throwaway server as a context manager: ``init()`` and ``start()`` on entry (``cleanup()``
    when either fails), ``cleanup()`` on exit (:class:`Cluster`, exporter.mysqlcluster's MariaDB)."""

    def __enter__(self):
        try:
            self.init().start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


class Cluster(Throwaway):
    """``with Cluster() as c: c.dsn("postgres")``; ``stop()``/``start()`` simulate an outage."""

    def __init__(self, settings: dict[str, str] | None = None, port: int | None = None,
                 base_dir: str | None = None, bindir: str | Path | None = None, initdb_args: tuple = ()):
        # ``bindir``: the server binaries to use (another major's, e.g. tests/pgdist.py's);
        # default the machine's newest (find_bindir)
        self.bindir = Path(bindir) if bindir is not None else find_bindir()
        if not (self.bindir / "postgres").exists():
            raise ClusterError(f"no PostgreSQL server binaries in {self.bindir} (postgres missing)")
        self.initdb_args = tuple(initdb_args)  # extra initdb options, e.g. ("--data-checksums",)
        self._free_port = port is None  # chosen here: may be chosen again when taken meanwhile
        self._started = False
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="dbperf-pg-", dir=base_dir))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self.settings = {
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
            "max_connections": "200",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "128MB",
            "track_io_timing": "on",
            "listen_addresses": "'127.0.0.1'",
            "log_min_messages": "warning",
        }
        self.settings.update(settings or {})
        self._user = None
        if os.geteuid() == 0:
            self._user = pwd.getpwnam("nobody")

    # -- process helpers -------------------------------------------------------------------
    def _run(self, args: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs = {}
        if self._user is not None:
            uid, gid = self._user.pw_uid, self._user.pw_gid

            def demote():  # runs in the child before exec
                os.setgid(gid)
                os.setuid(uid)

            kwargs["preexec_fn"] = demote
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={**os.environ, "LC_ALL": "C", "LANG": "C"}, **kwargs)
        if check and proc.returncode != 0:
            raise ClusterError(f"{Path(args[0]).name} failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return proc

    def _make_dirs(self) -> None:
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if self._user is not None:
            os.chmod(self.root, 0o755)
            for path in (self.root, self.sockdir):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)

    def _configure(self) -> None:
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.port}\nunix_socket_directories = '{self.sockdir}'\n")
            for key, value in self.settings.items():
                conf.write(f"{key} = {value}\n")

    def init(self) -> "Cluster":
        self._make_dirs()
        self._run([str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                   "-A", "trust", "-E", "UTF8", "--no-sync", *self.initdb_args])
        self._configure()
        return self

    def init_standby(self, primary: "Cluster", slot: str | None = None) -> "Cluster":
        """Instead of ``init()``: a streaming standby of the running ``primary``, copied by
        ``pg_basebackup -R`` (standby.signal and primary_conninfo written), replicating through the
        physical ``slot`` (pg_basebackup creates it when missing), with this cluster's port and
        settings (``cluster_name`` is its application_name on the primary). Then ``start()``."""
        if slot is not None and not slot.replace("_", "").isalnum():
            raise ClusterError(f"slot name {slot!r}: only letters, digits and _")
        self._make_dirs()
        args = [str(self.bindir / "pg_basebackup"), "-D", str(self.datadir), "-d", primary.dsn(), "-R",
                "-X", "stream", "-c", "fast", "--no-sync"]
        if slot is not None:
            exists = primary.psql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}'").strip()
            args += ["-S", slot] + ([] if exists else ["-C"])
        self._run(args)
        self._configure()
        return self

    def start(self) -> "Cluster":
        for attempt in range(3):
            seen = self.logfile.stat().st_size if self.logfile.exists() else 0
            try:
                self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-l", str(self.logfile),
                           "-w", "-t", "60", "start"])
                self._started = True
                return self
            except ClusterError as exc:  # pg_ctl says "examine the log output": the log's last lines
                log = self.logfile.read_bytes()[seen:].decode(errors="replace") if self.logfile.exists() else ""
                if self._free_port and not self._started and "already in use" in log and attempt < 2:
                    # another process took the free port between free_port() and the first start
                    # (no DSN handed out yet: a restart keeps its port)
                    self.port = free_port()
                    with open(self.datadir / "postgresql.conf", "a") as conf:
                        conf.write(f"port = {self.port}\n")
                    continue
                tail = log.strip().splitlines()[-5:]
                raise ClusterError(f"{exc}; {self.logfile}: {' | '.join(tail) or 'empty'}") from None
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.datadir.exists():
            self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "stop"],
                      check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


    def require_password(self, user: str) -> None:
        """Make ``user`` authenticate with scram-sha-256 over TCP (others keep trust)."""
        hba = self.datadir / "pg_hba.conf"
        rules = f"host all {user} 127.0.0.1/32 scram-sha-256\n"
        hba.write_text(rules + hba.read_text())
        self.psql("SELECT pg_reload_conf()")

    def major(self) -> int:
        """The major version of the server binaries (15 for ``postgres (PostgreSQL) 15.20``)."""
        out = self._run([str(self.bindir / "postgres"), "--version"]).stdout
        found = re.search(r"\(PostgreSQL\) (\d+)", out)
        if not found:
            raise ClusterError(f"postgres --version: unexpected answer {out.strip()[:100]!r}")
        return int(found.group(1))

    # -- connection strings ----------------------------------------------------------------
    def dsn(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} dbname={dbname} user={user}"

    def psql_path(self) -> str:
        """The cluster's own ``psql``, else the machine's (server-only builds ship none)."""
        own = self.bindir / "psql"
        found = str(own) if own.exists() else shutil.which("psql")
        if found is None:
            raise ClusterError(f"psql not found in {self.bindir} or PATH: apt-get install postgresql-client")
        return found

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        proc = subprocess.run([self.psql_path(), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                               "-d", self.dsn(dbname), "-c", sql], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise ClusterError(f"psql failed: {proc.stderr.strip()}")
        return proc.stdout

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise ClusterError(f"PostgreSQL on port {self.port} did not become ready")
