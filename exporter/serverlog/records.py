"""Where a log entry ends (framing) and what it says (parsing), for PostgreSQL's three log formats.

- ``jsonlog`` (PostgreSQL 15+): one JSON object per line.
- ``csvlog``: one CSV record per entry; a quoted field may hold newlines (a statement, a plan), so
  an entry ends at a newline outside quotes.
- ``stderr``: a line that starts with ``log_line_prefix``; the lines after it that start with a tab
  continue it (a multi-line message, a plan); ``DETAIL:``, ``HINT:``, ``STATEMENT:``,
  ``CONTEXT:`` ... lines carry the prefix too and are attached to the entry before them.

:class:`Framer` cuts bytes into records: it never holds more than the bytes it was given, and a
record longer than ``max_line_bytes`` is cut to that length (:attr:`Framer.cut` counts them; the
rest of the record is skipped, even across reads). :class:`Parser` turns records into
:class:`Entry` objects; a record it cannot read is counted in :attr:`Parser.errors`, never raised.
"""

from __future__ import annotations

import csv
import json
import re

from exporter.serverlog.prefix import PREFIX_WINDOW, compile_prefix

FORMATS = ("jsonlog", "csvlog", "stderr")
AUXILIARY = frozenset({"DETAIL", "HINT", "QUERY", "CONTEXT", "STATEMENT", "LOCATION"})
_SEVERITY_ORDER = ("DEBUG5", "DEBUG4", "DEBUG3", "DEBUG2", "DEBUG1", "LOG", "INFO", "NOTICE", "WARNING",
                   "ERROR", "FATAL", "PANIC")
SEVERITIES = frozenset(_SEVERITY_ORDER)


class Entry:
    """One log entry; text fields are "" when the log does not say."""

    __slots__ = ("time", "user", "database", "pid", "client", "session", "severity", "sqlstate", "message",
                 "detail", "hint", "context", "statement", "query_id", "application", "backend_type")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name) or "")

    def __repr__(self) -> str:
        return f"Entry({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__ if getattr(self, n))})"


class Framer:
    """Cuts a stream of bytes of one format into records (one :meth:`split` per read)."""

    def __init__(self, fmt: str, max_line_bytes: int):
        if fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}")
        self.fmt, self.max = fmt, max_line_bytes
        self.cut = 0          # records longer than max_line_bytes, cut to it
        self.skipping = False  # the end of a cut record is still to be skipped
        self._quotes = 0       # csvlog: quotes seen in the record being skipped

    def reset(self) -> None:
        """A new file: nothing is being skipped."""
        self.skipping, self._quotes = False, 0

    def split(self, data: bytes, at_eof: bool) -> tuple[list[bytes], int]:
        """``(records, consumed)``: the complete records at the start of ``data`` and how many
        bytes they (and skipped bytes) took; the rest is read again with what follows.
        ``at_eof``: ``data`` ends where the file ends and the file is not growing (stderr only: its
        last line is then complete, no continuation line can follow). When
        ``data`` holds no record end at all and is at least ``max_line_bytes`` long, its start is
        returned as a cut record and the rest of that record is skipped."""
        records: list[bytes] = []
        pos, n = 0, len(data)
        if self.skipping:
            end = self._record_end(data, 0, carry=self._quotes)
            if end < 0:
                if self.fmt == "csvlog":
                    self._quotes += data.count(b'"')
                return [], n
            self.skipping, self._quotes = False, 0
            pos = end
        while pos < n:
            end = self._record_end(data, pos)
            if end < 0:
                if self.fmt == "stderr" and at_eof and data.endswith(b"\n"):
                    end = n  # the last entry of a file that is not growing now: complete
                else:
                    break
            record = data[pos:end]
            pos = end
            if len(record) > self.max:
                self.cut += 1
                record = record[:self.max]
            records.append(record.rstrip(b"\r\n"))
        rest = n - pos
        if rest >= self.max and not records:  # one record longer than the limit: keep its start, skip the rest
            self.cut += 1
            records.append(data[pos:pos + self.max])
            if self.fmt == "csvlog":
                self._quotes = data.count(b'"', pos)
            self.skipping = True
            return records, n
        return records, pos

    def _record_end(self, data: bytes, pos: int, carry: int = 0) -> int:
        """The offset just after the record starting at ``pos`` (-1: not in ``data``)."""
        if self.fmt == "jsonlog":
            end = data.find(b"\n", pos)
            return -1 if end < 0 else end + 1
        if self.fmt == "csvlog":
            quotes = carry
            while True:
                end = data.find(b"\n", pos)
                if end < 0:
                    return -1
                quotes += data.count(b'"', pos, end)
                pos = end + 1
                if quotes % 2 == 0:
                    return pos
        # stderr: the line, and the lines after it that start with a tab
        end = data.find(b"\n", pos)
        while end >= 0:
            if end + 1 >= len(data):
                return -1  # the next line (a continuation?) is not here yet
            if data[end + 1:end + 2] != b"\t":
                return end + 1
            end = data.find(b"\n", end + 1)
        return -1


_JSON_FIELDS = {"timestamp": "time", "user": "user", "dbname": "database", "pid": "pid",
                "remote_host": "client", "session_id": "session", "error_severity": "severity",
                "state_code": "sqlstate", "message": "message", "detail": "detail", "hint": "hint",
                "context": "context", "statement": "statement", "query_id": "query_id",
                "application_name": "application", "backend_type": "backend_type"}
_JSON_PAIR = re.compile(rb'"(\w+)"\s*:\s*(?:"((?:[^"\\]|\\.)*)(?:"|\Z)|(-?\d+))')
# csvlog columns (PostgreSQL 13: 24, 14+: 26) -> Entry fields
_CSV_FIELDS = ((0, "time"), (1, "user"), (2, "database"), (3, "pid"), (4, "client"), (5, "session"),
               (11, "severity"), (12, "sqlstate"), (13, "message"), (14, "detail"), (15, "hint"), (18, "context"),
               (19, "statement"), (22, "application"), (23, "backend_type"), (25, "query_id"))


class Parser:
    """Records of one format -> entries."""

    def __init__(self, fmt: str, prefix: str = ""):
        if fmt not in FORMATS:
            raise ValueError(f"unknown log format {fmt!r}")
        self.fmt = fmt
        self.prefix = compile_prefix(prefix) if fmt == "stderr" else None
        self.errors = 0  # records that could not be read

    def parse(self, records: list[bytes]) -> list[Entry]:
        out: list[Entry] = []
        one = getattr(self, f"_{self.fmt}")
        for record in records:
            try:
                entry = one(record)
            except (ValueError, TypeError, KeyError, IndexError, csv.Error, RecursionError):
                entry = None
            if entry is None:
                self.errors += 1
                continue
            if entry.severity in AUXILIARY:
                self._attach(out, entry)
            elif entry.severity in SEVERITIES:
                out.append(entry)
            else:
                self.errors += 1
        return out

    @staticmethod
    def _attach(out: list[Entry], aux: Entry) -> None:
        """stderr: a DETAIL/STATEMENT/... line belongs to the entry before it (same process)."""
        if not out or out[-1].pid != aux.pid:
            return  # its entry was in an earlier read or dropped: nothing to attach to
        field = {"DETAIL": "detail", "HINT": "hint", "CONTEXT": "context", "STATEMENT": "statement"}.get(aux.severity)
        if field and not getattr(out[-1], field):
            setattr(out[-1], field, aux.message)

    @staticmethod
    def _jsonlog(record: bytes) -> Entry | None:
        try:
            data = json.loads(record)
        except ValueError:
            data = _salvage_json(record)  # a cut line: the fields before the cut
        if not isinstance(data, dict):
            return None
        fields = {name: data.get(key) for key, name in _JSON_FIELDS.items()}
        for key in ("pid", "query_id"):
            if fields[key] is not None:
                fields[key] = str(fields[key])
        if any(v is not None and not isinstance(v, str) for v in fields.values()):
            return None
        return Entry(**fields)

    @staticmethod
    def _csvlog(record: bytes) -> Entry | None:
        text = record.decode("utf-8", "replace")
        try:
            row = next(csv.reader([text], strict=True))
        except csv.Error:  # a cut record: its last field is open
            row = next(csv.reader([text + '"'], strict=False))
        if len(row) < 14:
            return None
        fields = {name: row[i] for i, name in _CSV_FIELDS if i < len(row)}
        client = fields.get("client", "")
        if client and ":" in client and not client.startswith("["):
            fields["client"] = client.rsplit(":", 1)[0]  # host:port
        return Entry(**fields)

    def _stderr(self, record: bytes) -> Entry | None:
        text = record.decode("utf-8", "replace")
        m = self.prefix.match(text[:PREFIX_WINDOW])
        if m is None:
            return None
        fields = {k: v for k, v in m.groupdict().items() if v and v != "[unknown]"}
        client = fields.get("client", "")
        if client.endswith(")") and "(" in client:
            fields["client"] = client[:client.rindex("(")]
        fields["message"] = text[m.end():].replace("\n\t", "\n")
        return Entry(**fields)


def _salvage_json(record: bytes) -> dict | None:
    """The string and number fields of a cut JSON object, up to where it was cut."""
    if not record.startswith(b"{"):
        return None
    out = {}
    for m in _JSON_PAIR.finditer(record):
        key = m.group(1).decode()
        if m.group(2) is not None:
            text = m.group(2)
            for _ in range(6):  # a string cut inside an escape (\u00e9): shorten to before it
                try:
                    out[key] = json.loads(b'"' + text + b'"')
                    break
                except ValueError:
                    text = text[:-1]
        else:
            out[key] = int(m.group(3))
    return out or None
