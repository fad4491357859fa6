"""gzip for ``/metrics`` and ``/probe`` (``Accept-Encoding: gzip``, which Prometheus sends).

The answer is a sequence of gzip members, which RFC 1952 allows and every gzip reader (Go's,
Python's, zlib's) reads as one stream. A large body (:class:`exporter.metrics.Chunk`) is a member
of its own, compressed once and kept on the text itself: a collector served from its cache costs
no compression until its text is collected again. The small pieces between (``# HELP``/``# TYPE``
lines, small bodies) are compressed together per scrape. Level 1: most of the ratio of level 6
(the text is repetitive) at a third of the CPU.
"""

from __future__ import annotations

import zlib

from exporter.metrics import GZIP_MEMBER_MIN

LEVEL = 1


def _compressor():
    return zlib.compressobj(LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer


def member(data: bytes) -> bytes:
    """One complete gzip member of ``data``."""
    comp = _compressor()
    return comp.compress(data) + comp.flush()


def gzip_chunks(chunks) -> list[bytes]:
    """The gzip encoding of the concatenated ``chunks``, as a list of byte strings."""
    out, comp = [], None
    for chunk in chunks:
        if len(chunk) >= GZIP_MEMBER_MIN:
            packed = getattr(chunk, "gz", None)
            if packed is None:
                packed = member(chunk)
                try:
                    chunk.gz = packed  # a Chunk keeps it; plain bytes cannot
                except AttributeError:
                    pass
            if comp is not None:
                out.append(comp.flush())
                comp = None
            out.append(packed)
            continue
        if comp is None:
            comp = _compressor()
        piece = comp.compress(chunk)
        if piece:
            out.append(piece)
    if comp is not None:
        out.append(comp.flush())
    return out or [member(b"")]


def count_members(data: bytes) -> int:
    """The gzip members in ``data`` (tests and the benchmark)."""
    count = 0
    while data:
        reader = zlib.decompressobj(31)
        reader.decompress(data)
        data = reader.unused_data
        count += 1
    return count


def accepts_gzip(header: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``gzip``, ``x-gzip`` or ``*`` with a
    q-value above 0, unless gzip itself is given q=0)."""
    if not header or len(header) > 1024:
        return False
    star = None
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if name in ("gzip", "x-gzip"):
            return q > 0
        if name == "*":
            star = q > 0
    return bool(star)
