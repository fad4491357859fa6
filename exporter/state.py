"""dbperf's state directory: small files the exporter keeps across restarts (a log reader's
offsets, the plans it has seen), one JSON file per purpose and target.

Where: the config's top-level ``state_dir`` (relative to the config file), else
``$DBPERF_STATE_DIR``, else ``$XDG_STATE_HOME/dbperf``, else ``~/.local/state/dbperf``.
Writes are atomic (a temporary file, fsync, rename): a crash leaves the old file or the new one,
never half of one. A file that cannot be read or parsed is reported once and treated as absent:
state is an optimisation, never a reason for dbperf not to start."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from exporter.atomicfile import write_atomic

LOG = logging.getLogger("dbperf.state")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def state_dir(configured: str = "", env=os.environ) -> Path:
    """The state directory (not created here)."""
    if configured:
        return Path(configured)
    if env.get("DBPERF_STATE_DIR"):
        return Path(env["DBPERF_STATE_DIR"])
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "dbperf"
    return Path(env.get("HOME") or Path.home()) / ".local" / "state" / "dbperf"


def state_file(directory: Path, purpose: str, target: str) -> Path:
    """``DIR/PURPOSE-TARGET.json``; the target's name is made safe for a file name."""
    return Path(directory) / f"{purpose}-{_UNSAFE.sub('_', target)}.json"


def read_json(path: Path, default=None):
    """The file's JSON, or ``default`` when it is absent or unreadable (logged as a warning)."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as exc:
        LOG.warning("state file %s cannot be read (%s): starting without it", path, exc)
        return default


def write_json(path: Path, data) -> None:
    """Write ``data`` as JSON to ``path`` atomically and durably (creating the directory, mode 0700)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(path, json.dumps(data, separators=(",", ":")), durable=True)
