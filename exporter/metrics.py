"""A small, fast metric-family model and the Prometheus text exposition format (0.0.4).

Collectors return lists of :class:`Family`. A family holds its samples as plain tuples, not one
Python object per sample, and :func:`render` turns families into exposition text in one pass.
Rendered text is what the scrape engine caches, so a cached collector costs a string join.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

TYPES = ("gauge", "counter", "histogram", "untyped")
_PLAIN = (int, float, Decimal, str)  # str() is exact and Prometheus parses it (inf, nan, 1E+3 too)


def _escape_label(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if value is None:
        return "NaN"
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


@dataclass(slots=True)
class Family:
    """One metric family: name, type, help, label names and its samples.

    ``samples`` holds ``(suffix, labelvalues, value)`` tuples; ``suffix`` is ``""`` except for
    histogram parts (``_bucket``, ``_sum``, ``_count``). For ``_bucket`` samples the last label
    value is the ``le`` bound. Label values are converted with ``str()`` when rendered.

    ``columns`` is the fast path for many samples: ``(pairs, values)`` lists of equal length,
    ``pairs`` made by :func:`label_pairs`; a ``None`` value means no sample.
    """

    name: str
    type: str
    help: str
    labelnames: tuple[str, ...] = ()
    samples: list = field(default_factory=list)
    columns: list = field(default_factory=list)

    def add(self, labelvalues, value) -> None:
        self.samples.append(("", labelvalues, value))

    def add_histogram(self, labelvalues, buckets, total_sum: float) -> None:
        """Add one histogram series; ``buckets`` is a list of ``(upper_bound, cumulative_count)``
        ending with ``(inf, count)``."""
        labelvalues = tuple(labelvalues)
        count = 0
        for bound, cumulative in buckets:
            le = "+Inf" if math.isinf(bound) else repr(float(bound))  # "1.0", as client libraries write it
            self.samples.append(("_bucket", labelvalues + (le,), cumulative))
            count = cumulative
        self.samples.append(("_sum", labelvalues, total_sum))
        self.samples.append(("_count", labelvalues, count))


def label_pairs(labelnames, labelvalues) -> str:
    """``,a="x",b="y"``: rendered label pairs with a leading comma (``""`` without labels).

    Producers with many samples per label set (a table's 25 metrics) render the pairs once with
    this and pass the string as a sample's labels instead of a tuple."""
    return pairs_formatter(tuple(labelnames))(labelvalues)


@functools.lru_cache(maxsize=1024)
def pairs_formatter(labelnames: tuple):
    """A function from label values to :func:`label_pairs` text, for one tuple of label names."""
    template = "".join(f',{k}="%s"' for k in labelnames)

    def render(labelvalues) -> str:
        values = [v if type(v) is str else str(v) for v in labelvalues]
        joined = "".join(values)
        if "\\" in joined or '"' in joined or "\n" in joined:
            values = [_escape_label(v) for v in values]
        return template % tuple(values)

    return render


def render_family(family: Family, const_labels: str = "") -> tuple[str, str]:
    """Return ``(header, body)`` text for one family.

    ``const_labels`` is an already rendered label prefix such as ``target="main"`` that is put in
    front of every sample's own labels. A sample's labels are a tuple of values (matching
    ``labelnames``) or a string made by :func:`label_pairs`. Values that are ``int``, ``float``
    or ``Decimal`` are written with ``str()``, which Prometheus parses (``inf``, ``NaN``, ``1E+3``).
    """
    name = family.name
    header = f"# HELP {name} {_escape_help(family.help)}\n# TYPE {name} {family.type}\n"
    labelnames = family.labelnames
    bucket_names = labelnames + ("le",)
    lines = []
    append = lines.append
    for suffix, labels, value in family.samples:
        if type(labels) is not str:
            labels = label_pairs(bucket_names if suffix == "_bucket" else labelnames, labels)
        if type(value) not in _PLAIN:
            value = format_value(value)
        if const_labels:
            append(f"{name}{suffix}{{{const_labels}{labels}}} {value}\n")
        elif labels:
            append(f"{name}{suffix}{{{labels[1:]}}} {value}\n")
        else:
            append(f"{name}{suffix} {value}\n")
    if family.columns:
        if const_labels:
            prefix, first = f"{name}{{{const_labels}", 0
        else:
            prefix, first = f"{name}{{", 1  # drop the pairs' leading comma
        for pairs, values in family.columns:
            if first and pairs and not pairs[0]:  # no labels at all
                lines += [f"{name} {v if type(v) in _PLAIN else format_value(v)}\n"
                          for v in values if v is not None]
                continue
            lines += [f"{prefix}{p[first:]}}} {v if type(v) in _PLAIN else format_value(v)}\n"
                      for p, v in zip(pairs, values) if v is not None]
    return header, "".join(lines)


def const_label_prefix(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())


GZIP_MEMBER_MIN = 32 * 1024  # bytes: a body this large is compressed on its own (exporter.compress)


class Chunk(bytes):
    """A large body of exposition text; :mod:`exporter.compress` keeps its gzip member on it
    (attribute ``gz``), so a cached collector's text is compressed once, not on every scrape, and
    the member is freed with the text."""


@dataclass(slots=True)
class Rendered:
    """Exposition text of a set of families, keyed by family name so that several sources
    (targets, collectors) can be merged under one ``# HELP``/``# TYPE`` header each.

    The text is held encoded (UTF-8 bytes): a cached collector's text is encoded once when it is
    collected, not on every scrape that serves it."""

    headers: dict[str, bytes] = field(default_factory=dict)
    bodies: dict[str, list[bytes]] = field(default_factory=dict)
    tail: list[bytes] = field(default_factory=list)  # complete families rendered elsewhere, appended as is
    samples: int = 0  # sample lines added by add_families and merge (not those of the tail)

    def add_families(self, families, const_labels: str = "") -> None:
        for family in families:
            header, body = render_family(family, const_labels)
            encoded = body.encode()
            self.samples += encoded.count(b"\n")
            self.add_text(family.name, header.encode(),
                          Chunk(encoded) if len(encoded) >= GZIP_MEMBER_MIN else encoded)

    def add_text(self, name: str, header: bytes, body: bytes) -> None:
        if name not in self.headers:
            self.headers[name] = header
            self.bodies[name] = [body]
        else:
            self.bodies[name].append(body)

    def merge(self, other: "Rendered") -> None:
        for name, header in other.headers.items():
            for body in other.bodies[name]:
                self.add_text(name, header, body)
        self.samples += other.samples

    def chunks(self):
        """The exposition text piece by piece (no copy of the whole), for streaming."""
        for name, header in self.headers.items():
            yield header
            yield from self.bodies[name]
        yield from self.tail

    def size(self) -> int:
        return sum(len(chunk) for chunk in self.chunks())

    def encode(self) -> bytes:
        return b"".join(self.chunks())

    def text(self) -> str:
        return self.encode().decode()
