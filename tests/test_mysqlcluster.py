"""exporter.mysqlcluster: a throwaway MariaDB of its own (datadir, port, socket, performance_schema),
as an unprivileged user when the suite runs as root, stopped and removed without a trace."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from conftest import processes_using
from exporter.mysqlcluster import MariaDB

pytestmark = pytest.mark.pg


def test_its_own_server_restarted_and_removed_without_a_trace():
    server = MariaDB()
    busy = socket.socket()  # another process takes the chosen port before the first start
    busy.bind(("127.0.0.1", server.port))
    busy.listen(1)
    taken = server.port
    try:
        server.init().start()
        assert server.port != taken
        (datadir, socket_path, port, ps, user), = server.execute(
            "SELECT @@datadir, @@socket, @@port, @@performance_schema, USER()")
        assert datadir.rstrip("/") == str(server.datadir) and socket_path == str(server.socket)
        assert (port, ps) == (server.port, 1)
        if os.geteuid() == 0:  # the server does not run as root
            status = Path(f"/proc/{server._proc.pid}/status").read_text()
            uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
            assert uid != "0"
        server.stop()
        with pytest.raises(Exception):
            server.execute("SELECT 1")
        server.start()
        assert server.port != taken and server.execute("SELECT 2") == [(2,)]  # the same port after a restart
    finally:
        busy.close()
        server.cleanup()
    assert not server.root.exists()
    assert not processes_using(server.root)
