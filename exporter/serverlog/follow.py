"""Where the log's bytes come from, and the position dbperf has read up to.

A *source* lists the log's files (``files()``: name, size, mtime, identity, oldest first) and reads
bytes of one (``read(name, offset, length)``):

- :class:`LocalSource`: a file, or a directory whose files ending in the format's suffix
  (``.json``, ``.csv``; for stderr every other file) the logging collector writes; identity is ``(device, inode)``
  so a renamed file is still known.
- :class:`RemoteSource`: the server's ``log_directory`` through ``pg_ls_logdir()`` (pg_monitor)
  and ``pg_read_binary_file()`` (superuser, pg_read_server_files, or a GRANT EXECUTE on it).

:class:`Follower` keeps the position (file identity, a hash of its first bytes, offset): it moves
to the next file when the current one is complete and a newer one exists (rotation), starts a
file again from 0 when it shrank (truncation), and stores the position in the state directory
after every read (:mod:`exporter.state`), so a restarted dbperf continues where it stopped:
never a line read twice, none skipped. With no stored position it starts at the end of the
newest file (the past is not counted)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from exporter import state

class Unavailable(RuntimeError):
    """The log cannot be read this way on this server (the collector is unsupported: the kind's
    feature_not_supported SQLSTATE)."""

    sqlstate = "0A000"


HEAD_BYTES = 256  # the first bytes of a file, hashed: its identity beside the inode (inodes are reused)


def wanted(name: str, suffix: str) -> bool:
    """Whether a file of the log directory is of the format (by its name's ``suffix``). stderr
    (suffix ""): the logging collector names its files by log_filename as is; the csvlog and
    jsonlog files beside them end in .csv and .json."""
    if suffix:
        return name.endswith(suffix)
    return not name.endswith((".csv", ".json")) and not name.startswith(".")


class LocalSource:
    def __init__(self, path: str, suffix: str):
        self.path, self.suffix = Path(path), suffix

    def files(self) -> list[tuple]:
        """``(name, size, mtime, identity)`` oldest first; a missing path is an OSError."""
        if self.path.is_dir():
            out = []
            for entry in os.scandir(self.path):
                if wanted(entry.name, self.suffix) and entry.is_file():
                    st = entry.stat()
                    out.append((entry.path, st.st_size, st.st_mtime, f"{st.st_dev}:{st.st_ino}"))
            out.sort(key=lambda f: (f[2], f[0]))
            return out
        st = os.stat(self.path)
        return [(str(self.path), st.st_size, st.st_mtime, f"{st.st_dev}:{st.st_ino}")]

    def size(self, name: str) -> int:
        return os.stat(name).st_size

    def read(self, name: str, offset: int, length: int) -> bytes:
        with open(name, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def close(self) -> None:
        pass


class Follower:
    """The read position in a source's files (one per reader)."""

    def __init__(self, source, state_path: Path | None):
        self.source = source
        self.state_path = state_path
        self.current: dict | None = None  # {"name", "id", "head", "offset", "mtime"}
        self.rotations = 0    # moves to a newer file
        self.truncations = 0  # files that shrank under the position
        self.lag = 0          # bytes not read yet (the current file's rest and newer files)
        self._saved = None
        self._newer = None    # the next file, when the last read saw one

    @property
    def newer_exists(self) -> bool:
        """The last read saw a newer file beside the current one (the server writes there now)."""
        return self._newer is not None

    # -- the position --------------------------------------------------------------------
    def _head(self, name: str) -> str:
        return hashlib.sha1(self.source.read(name, 0, HEAD_BYTES)).hexdigest()

    def _restore(self, files: list[tuple]) -> dict:
        stored = state.read_json(self.state_path) if self.state_path else None
        if isinstance(stored, dict) and isinstance(stored.get("offset"), int):
            for name, size, mtime, ident in files:
                if ident == stored.get("id") and size >= stored["offset"] and self._head_matches(name, stored):
                    return {"name": name, "id": ident, "head": stored.get("head", ""), "offset": stored["offset"],
                            "mtime": mtime}
            # that file is gone or was replaced: the files written since it are new
            after = [f for f in files if (f[2], f[0]) >= (stored.get("mtime", 0), stored.get("name", ""))
                     and f[3] != stored.get("id")] or [f for f in files if f[2] >= stored.get("mtime", 0)]
            if after:
                return self._start(after[0], 0)
        newest = files[-1]
        return self._start(newest, newest[1])  # nothing stored: from now on

    def _head_matches(self, name: str, stored: dict) -> bool:
        if stored.get("offset", 0) < HEAD_BYTES:
            head = hashlib.sha1(self.source.read(name, 0, stored["offset"])).hexdigest()
            return head == stored.get("head_partial", head)
        return self._head(name) == stored.get("head")

    def _start(self, file: tuple, offset: int) -> dict:
        name, size, mtime, ident = file
        return {"name": name, "id": ident, "head": self._head(name) if size >= HEAD_BYTES else "",
                "offset": offset, "mtime": mtime}

    def save(self) -> None:
        if self.state_path is None or self.current is None:
            return
        cur = dict(self.current)
        if cur["offset"] < HEAD_BYTES:  # the file is still short: hash what was read of it
            cur["head_partial"] = hashlib.sha1(self.source.read(cur["name"], 0, cur["offset"])).hexdigest()
        if cur != self._saved:
            state.write_json(self.state_path, cur)
            self._saved = cur

    # -- reading -------------------------------------------------------------------------
    def read(self, limit: int) -> tuple[bytes, bool, bool]:
        """``(data, at_eof, new_file)``: up to ``limit`` bytes at the position; ``new_file`` when
        the position moved to another file (or back to 0) since the last read. Call
        :meth:`consumed` with what was used."""
        files = self.source.files()
        if not files:
            self.lag = 0
            return b"", True, False
        new_file = False
        if self.current is None:
            self.current = self._restore(files)
            new_file = True
        cur = self.current
        mine = next((f for f in files if f[3] == cur["id"]), None)
        if mine is None:  # deleted or replaced under another identity: the next one
            later = [f for f in files if (f[2], f[0]) >= (cur["mtime"], cur["name"])] or files
            self.current = cur = self._start(later[0], 0)
            self.rotations += 1
            mine, new_file = later[0], True
        size = mine[1]
        if size < cur["offset"]:
            cur["offset"] = 0
            cur["head"] = self._head(cur["name"]) if size >= HEAD_BYTES else ""
            self.truncations += 1
            new_file = True
        if not cur["head"] and size >= HEAD_BYTES:
            cur["head"] = self._head(cur["name"])
        cur["mtime"], cur["name"] = mine[2], mine[0]
        newer = [f for f in files if f[3] != cur["id"] and (f[2], f[0]) > (mine[2], mine[0])]
        self.lag = size - cur["offset"] + sum(f[1] for f in newer)
        data = self.source.read(cur["name"], cur["offset"], min(limit, size - cur["offset"])) if size > cur["offset"] else b""
        at_eof = cur["offset"] + len(data) >= size
        self._newer = newer[0] if newer else None
        return data, at_eof, new_file

    def consumed(self, n: int, at_eof: bool, rest: int) -> bool:
        """Move on by ``n`` bytes; at the end of a file with a newer one beside it, move to that one
        (``rest``: bytes left unread at the end, an incomplete last entry, given up). True when
        the position moved to another file."""
        cur = self.current
        if cur is None:  # no file yet
            return False
        cur["offset"] += n
        self.lag = max(0, self.lag - n)
        # the newer file exists, so the server writes there now: this one is complete when its size
        # (read again after the listing that showed the newer file) is where we are
        if at_eof and self._newer is not None and self.source.size(cur["name"]) <= cur["offset"] + rest:
            self.current = self._start(self._newer, 0)
            self._newer = None
            self.rotations += 1
            return True
        return False
