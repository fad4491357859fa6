"""GTID positions and sets, and how many transactions a replica received but has not applied yet.

- MariaDB: a position is ``domain-server-seq`` per replication domain, comma-separated
  (``0-1-42,1-2-7``); within a domain the sequence number grows by one per transaction, so the
  transactions received (``Gtid_IO_Pos`` of the connection) but not applied (``@@gtid_slave_pos``)
  are the difference of the two sequence numbers.
- MySQL: a set is ``uuid:1-5:7,uuid2:1-3`` (MySQL 8.3+ also ``uuid:tag:1-5``); the transactions
  received (``Retrieved_Gtid_Set``) but not applied (``Executed_Gtid_Set``) are counted interval by
  interval, per source ``uuid`` (``uuid:tag`` for tagged ones).
"""

from __future__ import annotations


def mariadb_position(text: str | None) -> dict[str, int]:
    """``{domain: seq_no}`` of a MariaDB GTID position (``""`` or None: no domain)."""
    position = {}
    for item in (text or "").replace("\n", "").split(","):
        parts = item.strip().split("-")
        if len(parts) == 3 and all(p.isdigit() for p in parts):
            position[parts[0]] = max(int(parts[2]), position.get(parts[0], 0))
    return position


def mariadb_behind(received: str | None, applied: str | None) -> dict[str, int]:
    """``{domain: transactions}`` received but not applied, for each domain of ``received`` that
    ``applied`` knows (a domain it does not know has no known base: left out)."""
    done = mariadb_position(applied)
    return {domain: max(0, seq - done[domain]) for domain, seq in mariadb_position(received).items()
            if domain in done}


def mysql_set(text: str | None) -> dict[str, list[tuple[int, int]]]:
    """``{uuid or uuid:tag: [(first, last), ...]}`` of a MySQL GTID set, intervals inclusive."""
    gtids: dict[str, list[tuple[int, int]]] = {}
    for item in (text or "").replace("\n", "").split(","):
        parts = [p.strip() for p in item.strip().split(":")]
        if len(parts) < 2 or not parts[0]:
            continue
        source = parts[0].lower()
        for part in parts[1:]:
            first, _, last = part.partition("-")
            if not first.isdigit():  # a tag: the intervals after it are the tag's
                source = f"{parts[0].lower()}:{part}"
                continue
            gtids.setdefault(source, []).append((int(first), int(last) if last.isdigit() else int(first)))
    return gtids


def _count_missing(wanted: list[tuple[int, int]], have: list[tuple[int, int]]) -> int:
    """Numbers in the intervals ``wanted`` that no interval of ``have`` holds."""
    missing = 0
    for first, last in wanted:
        count = last - first + 1
        for low, high in have:
            overlap = min(last, high) - max(first, low) + 1
            if overlap > 0:
                count -= overlap
        missing += max(0, count)
    return missing


def mysql_behind(retrieved: str | None, executed: str | None) -> dict[str, int]:
    """``{source: transactions}`` in ``retrieved`` and not in ``executed``, per source of ``retrieved``
    (the intervals of one set do not overlap: MySQL writes them merged)."""
    have = mysql_set(executed)
    return {source: _count_missing(intervals, have.get(source, []))
            for source, intervals in mysql_set(retrieved).items()}
