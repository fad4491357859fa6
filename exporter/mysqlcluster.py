"""A throwaway MariaDB server built from the machine's MariaDB binaries (Debian's ``mariadb-server``).

The MariaDB twin of :mod:`exporter.pgcluster`, for the test suite (and later the demo and the
benchmarks): its own data directory in a temporary directory, its own port on 127.0.0.1 and its own
Unix socket, ``performance_schema`` on, never the system service (``--no-defaults``: no
``/etc/mysql`` file is read). Run as root, the server runs as the unprivileged user ``nobody``.
``root`` connects over TCP without a password (the server is reachable from loopback only, and
lives as long as the test session).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from exporter.pgcluster import Throwaway, free_port

__all__ = ["MariaDB", "MariaDBError", "find_server", "replicate", "SOURCE_SETTINGS", "REPLICA_SETTINGS"]

SOURCE_SETTINGS = {"server-id": "1", "log-bin": "mariadb-bin"}  # a source writes a binary log
REPLICA_SETTINGS = {"server-id": "2"}


class MariaDBError(RuntimeError):
    pass


def find_server() -> tuple[Path, Path]:
    """``(server, install_db)``: the paths of ``mariadbd`` (or ``mysqld``) and ``mariadb-install-db``
    (or ``mysql_install_db``); :class:`MariaDBError` naming the package when they are missing."""
    def first(*names: str) -> Path | None:
        for name in names:
            for folder in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
                if os.access(Path(folder) / name, os.X_OK):
                    return Path(folder) / name
            found = shutil.which(name)
            if found:
                return Path(found)
        return None

    server, install = first("mariadbd", "mysqld"), first("mariadb-install-db", "mysql_install_db")
    if server is None or install is None:
        raise MariaDBError("MariaDB server binaries not found (mariadbd, mariadb-install-db): "
                           "install them with: apt-get install mariadb-server")
    return server, install


class MariaDB(Throwaway):
    """``with MariaDB() as m: m.dsn()``; ``stop()``/``start()`` simulate an outage."""

    def __init__(self, settings: dict[str, str] | None = None, base_dir: str | None = None):
        self.server, self.install_db = find_server()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="dbperf-mariadb-", dir=base_dir))
        self.datadir = self.root / "data"
        self.socket = self.root / "mysqld.sock"
        self.logfile = self.root / "mariadb.log"
        self.pidfile = self.root / "mariadb.pid"
        self.settings = {
            "performance-schema": "ON",
            "performance-schema-instrument": "'stage/%=ON'",
            "performance-schema-consumer-events-statements-history": "ON",
            "innodb-buffer-pool-size": "32M",
            "innodb-log-file-size": "16M",
            "innodb-flush-log-at-trx-commit": "0",
            "sync-binlog": "0",
            "skip-name-resolve": "ON",
            "max-connections": "100",
            "log-warnings": "1",
        }
        self.settings.update(settings or {})
        self._proc: subprocess.Popen | None = None
        self._started = False  # started once: its port is handed out and kept
        self._user = pwd.getpwnam("nobody") if os.geteuid() == 0 else None

    # -- process helpers -------------------------------------------------------------------
    def _demote(self):
        if self._user is None:
            return None
        uid, gid = self._user.pw_uid, self._user.pw_gid

        def demote():  # runs in the child before exec
            os.setgid(gid)
            os.setuid(uid)

        return demote

    def _user_args(self) -> list[str]:
        return [f"--user={self._user.pw_name}"] if self._user is not None else []

    def init(self) -> "MariaDB":
        if self._user is not None:
            os.chmod(self.root, 0o755)
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        proc = subprocess.run(
            [str(self.install_db), "--no-defaults", f"--datadir={self.datadir}", "--auth-root-authentication-method=normal",
             "--skip-test-db", "--skip-name-resolve", *self._user_args()],
            capture_output=True, text=True, timeout=180, cwd=self.root, preexec_fn=self._demote(),
            env={**os.environ, "LC_ALL": "C", "LANG": "C"})
        if proc.returncode != 0:
            raise MariaDBError(f"mariadb-install-db failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
        return self

    def _args(self) -> list[str]:
        args = [str(self.server), "--no-defaults", f"--datadir={self.datadir}", f"--port={self.port}",
                "--bind-address=127.0.0.1", f"--socket={self.socket}", f"--pid-file={self.pidfile}",
                f"--log-error={self.logfile}", *self._user_args()]
        return args + [f"--{key}={value.strip(chr(39))}" for key, value in self.settings.items()]

    def start(self, timeout: float = 60.0) -> "MariaDB":
        """Start the server and wait until root can log in. On the first start, a port another
        process took since :func:`free_port` chose it is replaced (no DSN was handed out yet)."""
        for attempt in range(3):
            try:
                return self._start(timeout)
            except MariaDBError as exc:
                if self._started or "Address already in use" not in str(exc) or attempt == 2:
                    raise
                self.port = free_port()
        return self

    def _start(self, timeout: float) -> "MariaDB":
        if self._proc is not None and self._proc.poll() is None:
            return self
        seen = self.logfile.stat().st_size if self.logfile.exists() else 0
        self._proc = subprocess.Popen(self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      cwd=self.root, preexec_fn=self._demote(), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if self._answers():
                self._started = True
                return self
            time.sleep(0.1)
        log = self.logfile.read_bytes()[seen:].decode(errors="replace") if self.logfile.exists() else ""
        self.stop()
        tail = " | ".join(log.strip().splitlines()[-8:]) or "empty"
        raise MariaDBError(f"mariadbd did not start on port {self.port}; {self.logfile}: {tail}")

    def _answers(self) -> bool:
        import pymysql

        try:
            pymysql.connect(host="127.0.0.1", port=self.port, user="root", password="", connect_timeout=1,
                            read_timeout=1).close()
        except pymysql.err.MySQLError:
            return False
        return True

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (SIGTERM: a clean shutdown; SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- connecting ------------------------------------------------------------------------
    def dsn(self, user: str = "root", password: str = "", database: str = "") -> str:
        secret = f":{password}" if password else ""
        return f"mysql://{user}{secret}@127.0.0.1:{self.port}/{database}"

    def connect(self, user: str = "root", password: str = "", database: str | None = None, **kw):
        """A PyMySQL connection (autocommit) to the server."""
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=self.port, user=user, password=password,
                               database=database, autocommit=True, connect_timeout=5, **kw)

    def execute(self, sql: str, params=None) -> list[tuple]:
        """Run one statement as root and return its rows (``[]`` for none)."""
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()


def replicate(source: MariaDB, replica: MariaDB, password: str = "repl-pw") -> None:
    """Make the running ``replica`` apply the binary log of the running ``source`` (started with
    SOURCE_SETTINGS, the replica with REPLICA_SETTINGS) through GTIDs, as the user ``repl``."""
    source.execute("CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY %s", (password,))
    source.execute("GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
    replica.execute(f"CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {int(source.port)}, "
                    "MASTER_USER = 'repl', MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos", (password,))
    replica.execute("START SLAVE")
