"""Replacing a file whole: a temporary file beside it, then a rename, so a reader (or a crash)
sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile


def write_atomic(path, text: str, *, mode: int | None = None, durable: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path``. ``mode``: the file's permissions (default: what
    ``mkstemp`` gives, 0600); ``durable``: fsync before the rename (state that must survive a
    power cut). Raises OSError; the temporary file never stays behind."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
