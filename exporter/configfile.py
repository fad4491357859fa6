"""Reading dbperf's YAML files safely, and the key reader their parsers share.

Every mistake is a :class:`ConfigError` of one line naming the file, the key and the reason. A file
is read only when it is a regular file of at most a given size (a FIFO or device is an error, never
a wait), it must be UTF-8, YAML anchors and aliases are bounded (:data:`MAX_NODES` values after
expansion, no recursion), nesting is at most :data:`MAX_DEPTH` levels, tags other than ``!!str``
are refused, and every number has a range (:data:`RANGES`). The config (:mod:`exporter.config`),
collector files (:mod:`exporter.postgres.catalog_schema`) and the web config read files with it."""

from __future__ import annotations

import math
import os
import re
import stat

import yaml

from exporter.durations import DAY, HOUR, DurationError, format_duration, parse_duration
from exporter.errors import UsageError
from exporter.secrets import one_line

class ConfigError(UsageError):
    """A configuration mistake (bad input: exit code 2); ``str()`` is one line: ``file: key: reason``.

    A key starting with ``--`` is a command-line option; its source is then the command
    (``dbperf serve``) or empty, and the CLI prints ``dbperf COMMAND: --key: reason``; a file's
    mistake is printed ``dbperf COMMAND: config error: file: key: reason``."""

    def __init__(self, source: str, key: str, reason: str):
        # one line of bounded length whatever the file holds (a key or value may be megabytes)
        self.source, self.key, self.reason = one_line(source, 300), one_line(key, 200), one_line(reason, 500)
        super().__init__(": ".join(part for part in (self.source, self.key, self.reason) if part))

    @property
    def on_command_line(self) -> bool:
        return self.key.startswith("--")

    def describe(self) -> str:
        return f"{self.key}: {self.reason}" if self.on_command_line else f"config error: {self}"


MAX_INT = 2**31 - 1  # what PostgreSQL's integer takes; no count in the config needs more
MAX_PATTERN = 1000   # characters of a regular expression (databases.include, exclude)

# The range of every number in the file: key -> (minimum, maximum); durations in seconds.
# A number without an entry here takes 0 .. MAX_INT (integers) or 0 .. 366d (durations).
RANGES = {
    "scrape_timeout": (0.001, HOUR),
    "scrape_timeout_offset": (0.0, 60.0),
    "max_scrape_timeout": (1.0, HOUR),
    "connect_timeout": (0.001, HOUR),
    "max_connections": (1, 100),
    "table_limit": (1, 100_000),
    "max_series": (100, 100_000_000),
    "collectors.timeout": (0.001, HOUR),
    "collectors.ttl": (0.0, DAY),
    "statements.limit": (0, 10_000),
    "statements.sticky": (0.0, DAY),
    "statements.query_text_length": (1, 10_000),
    "statements.query_text_ttl": (0.0, DAY),
    "statements.slow_threshold": (0.0, DAY),
    "wait_events.interval": (0.1, 60.0),
    "plans.per_database": (1, 100),
    "plans.interval": (1.0, DAY),
    "plans.timeout": (0.01, 60.0),
    "wait_events.max_routes": (1, 10_000),
    "wait_events.max_route_statements": (1, 100_000),
    "samples.limit": (0, 10_000),
    "samples.max_age": (1.0, DAY),
}


def show(value, limit: int = 80) -> str:
    """A value quoted for an error message: ``repr`` of at most ``limit`` characters."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**60:
        return f"a number of about {int(value.bit_length() * math.log10(2)) + 1} digits"
    if isinstance(value, (str, bytes)) and len(value) > limit * 4:
        value = value[: limit * 4]  # no repr of megabytes
    elif isinstance(value, (dict, list, tuple, set)):
        return f"a {type(value).__name__}"  # nested values may be huge or shared (aliases)
    return one_line(repr(value), limit)


def _range_text(minimum, maximum, duration: bool) -> str:
    fmt = format_duration if duration else str
    return f"{fmt(minimum)} .. {fmt(maximum)}"


class _Reader:
    """Walks one YAML mapping, checking keys, types and ranges, and remembering the key path."""

    def __init__(self, source: str, data, path: str):
        self.source, self.path = source, path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail("", f"must be a mapping, got {type(data).__name__}")
        self.data = data

    def key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def fail(self, key: str, reason: str):
        raise ConfigError(self.source, self.key(key) if key else self.path, reason)

    def allow(self, *keys: str) -> None:
        for key in self.data:
            if key not in keys:
                self.fail(str(key), f"unknown key (allowed: {', '.join(keys)})")

    def get(self, key, kind, default=None, minimum=None, maximum=None):
        """The value of ``key`` checked as ``kind`` (float means a duration in seconds);
        numbers within ``minimum`` .. ``maximum`` (default 0 .. :data:`MAX_INT` or 0 .. 366d)."""
        if key not in self.data or self.data[key] is None:
            return default
        value = self.data[key]
        if kind is float:
            return self.duration(key, value, 0.0 if minimum is None else minimum,
                                 366 * DAY if maximum is None else maximum)
        if kind is int:
            low = 0 if minimum is None else minimum
            high = MAX_INT if maximum is None else maximum
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                self.fail(key, f"must be an integer in {_range_text(low, high, False)}, got {show(value)}")
            return value
        if kind is bool:
            if not isinstance(value, bool):
                self.fail(key, f"must be true or false, got {show(value)}")
            return value
        if kind is str:
            if not isinstance(value, str) or not value:
                self.fail(key, f"must be a non-empty string, got {type(value).__name__}")
            return value
        if kind is re.Pattern:
            if not isinstance(value, str):
                self.fail(key, f"must be a regular expression string, got {type(value).__name__}")
            if len(value) > MAX_PATTERN:
                self.fail(key, f"regular expression longer than {MAX_PATTERN} characters")
            try:
                return re.compile(value)
            except re.error as exc:
                self.fail(key, f"bad regular expression {show(value)}: {exc}")
            except (RecursionError, OverflowError, MemoryError, ValueError) as exc:
                self.fail(key, f"bad regular expression {show(value)}: {type(exc).__name__}, too deep or too large")
        return value

    def ranged(self, key, kind, default, range_key: str):
        """:meth:`get` with the range of :data:`RANGES` ``[range_key]``."""
        minimum, maximum = RANGES[range_key]
        return self.get(key, kind, default, minimum, maximum)

    def duration(self, key, value, minimum: float = 0.0, maximum: float = 366 * DAY) -> float:
        try:
            seconds = parse_duration(value, minimum=minimum, maximum=maximum, bare_seconds=True)
        except DurationError as exc:
            self.fail(key, f"{exc}, got {show(value)}")
        return seconds

    def sub(self, key: str) -> "_Reader":
        return _Reader(self.source, self.data.get(key), self.key(key))


MAX_CONFIG_BYTES = 1024 * 1024  # a config file of more is refused
MAX_DSN_BYTES = 64 * 1024       # and a dsn_file of more
MAX_DEPTH = 32                  # levels of nesting in the YAML document
MAX_NODES = 100_000             # values in the YAML document, aliases expanded


class FileProblem(Exception):
    """Why a file cannot be read; ``str()`` is a short reason (no contents)."""


def read_text(path, limit: int) -> str:
    """The UTF-8 text of the regular file ``path``, at most ``limit`` bytes. Opened without
    blocking and checked before reading: a FIFO, device or directory is a :class:`FileProblem`
    at once, never a wait; so is a file that is larger or not UTF-8 (naming the byte offset)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise FileProblem(exc.strerror or type(exc).__name__) from None
    except ValueError:  # a NUL in the path
        raise FileProblem("the path holds a NUL character") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
                    else "a socket" if stat.S_ISSOCK(mode) else "a device")
            raise FileProblem(f"not a regular file ({kind})")
        chunks, size = [], 0
        while size <= limit:
            try:
                chunk = os.read(fd, min(65536, limit + 1 - size))
            except OSError as exc:
                raise FileProblem(exc.strerror or type(exc).__name__) from None
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileProblem(f"larger than {limit // 1024} KiB")
    finally:
        os.close(fd)
    data = b"".join(chunks)
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileProblem(f"not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (line {line})") from None


_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when PyYAML has it: 5 times faster
_PLAIN_TAGS = {None, "!", "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_COLLECTION_START = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_COLLECTION_END = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


class _Loader(_Base):
    """The safe loader, with timestamps kept as text, over-long integers kept as text (so the
    key's own check names them) and duplicate keys refused."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    if (key_node.tag, key_node.value) in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {show(key_node.value)}", key_node.start_mark)
                    seen.add((key_node.tag, key_node.value))
        return super().construct_mapping(node, deep=deep)

    def construct_long_int(self, node):
        text = self.construct_scalar(node)
        return text if len(text) > 40 else self.construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_str)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_long_int)


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""


def _check_events(text: str) -> None:
    """Refuses, before anything is built, what could make building or walking the document blow
    up: more than :data:`MAX_DEPTH` levels, more than :data:`MAX_NODES` values once aliases are
    expanded, an alias inside its own anchor, and explicit tags (``!!python/...``, ``!!int``...)."""
    stack = []  # per open collection: [anchor, values inside, height]
    sizes = {}  # anchor -> (values, height)
    nodes = 0
    for event in yaml.parse(text, Loader=_Base):
        size, height = 0, 0
        if isinstance(event, _COLLECTION_START) or isinstance(event, yaml.ScalarEvent):
            tag = event.tag
            if tag not in _PLAIN_TAGS:
                raise yaml.YAMLError(f"{_where(event.start_mark)}tag {show(tag)} is not allowed "
                                     "(dbperf reads plain YAML)")
        if isinstance(event, _COLLECTION_START):
            if len(stack) >= MAX_DEPTH:
                raise yaml.YAMLError(f"{_where(event.start_mark)}nested deeper than {MAX_DEPTH} levels")
            stack.append([event.anchor, 1, 1])
            nodes += 1
        elif isinstance(event, _COLLECTION_END):
            anchor, size, height = stack.pop()
            if anchor:
                sizes[anchor] = (size, height)
        elif isinstance(event, yaml.ScalarEvent):
            size, height = 1, 0
            nodes += 1
            if event.anchor:
                sizes[event.anchor] = (1, 0)
        elif isinstance(event, yaml.AliasEvent):
            if any(entry[0] == event.anchor for entry in stack):
                raise yaml.YAMLError(f"{_where(event.start_mark)}alias *{one_line(event.anchor, 40)} "
                                     "refers to a value that contains it")
            if event.anchor not in sizes:
                continue  # the loader says "found undefined alias"
            size, height = sizes[event.anchor]
            nodes += size
            if len(stack) + height > MAX_DEPTH:
                raise yaml.YAMLError(f"{_where(event.start_mark)}nested deeper than {MAX_DEPTH} levels "
                                     "once aliases are expanded")
        else:
            continue
        if nodes > MAX_NODES:
            raise yaml.YAMLError(f"{_where(event.start_mark)}more than {MAX_NODES} values"
                                 + (" once aliases are expanded" if sizes else ""))
        if stack and not isinstance(event, _COLLECTION_START):
            stack[-1][1] += size
            stack[-1][2] = max(stack[-1][2], height + 1)


def load_yaml(text: str):
    """The YAML document ``text`` with the limits of :func:`_check_events`; ``yaml.YAMLError``
    (or ValueError from a value) otherwise."""
    _check_events(text)
    return yaml.load(text, Loader=_Loader)


def read_yaml_file(path, limit: int = MAX_CONFIG_BYTES, what: str = "config file"):
    """The YAML document of the file ``path`` (at most ``limit`` bytes, the limits of
    :func:`load_yaml`); :class:`ConfigError` naming the file otherwise. The web config file
    (exporter.webconfig) is read with it too."""
    path = str(path)
    try:
        text = read_text(path, limit)
    except FileProblem as exc:
        raise ConfigError(path, "", f"cannot read {what}: {exc}") from None
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
        raise ConfigError(path, "", f"invalid YAML: {_where(mark)}{problem}") from None
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # from a value's constructor
        raise ConfigError(path, "", f"invalid YAML: a value cannot be read ({type(exc).__name__})") from None
