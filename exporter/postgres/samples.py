"""Real query samples: the slowest recent run of each statement the session sampler saw, with its
literals, as ``pg_stat_activity`` showed it (:mod:`exporter.postgres.sampler` feeds the store).

- :class:`Sample`: one active backend's statement at one sample: the raw text (unredacted: it
  never leaves the process as is unless ``samples.redact`` is false; :meth:`Sample.shown` is what
  may), whether it looks truncated (``track_activity_query_size``, or the sampler's own bound
  :data:`MAX_TEXT`), its duration so far (``now() - query_start``), wait event, application,
  client, user, database, ``queryid`` (PostgreSQL 14+ with ``compute_query_id``) and when it was
  seen (epoch seconds).
- :class:`SampleStore`: per ``(datname, queryid)`` (a statement without a queryid is keyed by its
  normalised text's digest, ``"text:<digest>"``) the slowest sample seen within ``max_age``; at
  most ``limit`` statements, the statements collector's shown ones first; a statement not seen
  for ``max_age`` expires. Thread-safe: the sampler's thread writes, the endpoint and the advisor
  read. Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

MAX_TEXT = 8192  # characters of a statement's text the sampler reads at most


@dataclass(frozen=True)
class Sample:
    text: str                 # raw, with its literals
    truncated: bool           # the text looks cut (track_activity_query_size, or MAX_TEXT)
    duration: float           # seconds since query_start when seen
    wait_event_type: str      # "CPU" when waiting on nothing
    wait_event: str
    application: str
    client: str               # client address ("" for a Unix socket)
    user: str
    datname: str
    queryid: str | None       # pg_stat_activity.query_id (None: PostgreSQL 13, or not computed)
    seen_at: float            # epoch seconds
    route: str | None = None  # the sqlcommenter route tag (exporter.instrument.sqltags)
    pid: int = 0

    @property
    def key(self) -> str:
        """The statement's key within its database: the queryid, or ``text:<digest>`` without one."""
        return self.queryid if self.queryid is not None else _text_key(self.text)

    def shown(self, redact: bool = True) -> str:
        """The text as it may leave the process: literals as placeholders of their shape
        (:func:`exporter.instrument.redact.redact_literals`); with ``redact`` False the raw text,
        except a statement that carries a secret (a password ...), which is always redacted wholesale."""
        return _redacted(self.text) if redact else _secrets_redacted(self.text)

    def as_dict(self, redact: bool = True) -> dict:
        return {"datname": self.datname, "queryid": self.queryid, "text": self.shown(redact), "redacted": redact,
                "truncated": self.truncated, "duration_seconds": round(self.duration, 6),
                "wait_event_type": self.wait_event_type, "wait_event": self.wait_event,
                "application": self.application, "client": self.client, "user": self.user,
                "route": self.route, "seen_at": self.seen_at}


@functools.lru_cache(maxsize=256)
def _text_key(text: str) -> str:
    from exporter.instrument.fingerprint import digest, normalise

    return "text:" + digest(normalise(text))


@functools.lru_cache(maxsize=256)
def _redacted(text: str) -> str:
    from exporter.instrument.redact import redact_literals

    return redact_literals(text)


@functools.lru_cache(maxsize=256)
def _secrets_redacted(text: str) -> str:
    from exporter.instrument.redact import redact

    return redact(text)


class SampleStore:
    """The slowest recent sample per statement, bounded (see the module's docstring)."""

    def __init__(self, limit: int = 100, max_age: float = 600.0):
        self.limit = limit
        self.max_age = max_age
        self._samples: dict[tuple, Sample] = {}
        self._shown: set = set()  # the slots of statements the statements collector shows
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._samples)

    def offer(self, sample: Sample, shown: bool = False) -> bool:
        """Keep ``sample`` if it is its statement's slowest within ``max_age`` (or the kept one is
        older than that); ``shown``: the statements collector shows the statement (kept before the
        others when the store is full). True when kept."""
        if self.limit <= 0:
            return False
        slot = (sample.datname, sample.key)
        with self._lock:
            kept = self._samples.get(slot)
            if kept is not None:
                if sample.duration < kept.duration and kept.seen_at >= sample.seen_at - self.max_age:
                    return False
            elif len(self._samples) >= self.limit and not self._evict(sample.seen_at, shown):
                return False
            self._samples[slot] = sample
            if shown:
                self._shown.add(slot)
            else:
                self._shown.discard(slot)
            return True

    def _evict(self, now: float, shown: bool) -> bool:
        """Room for one more: the expired go first, then the least recently seen of the statements
        not shown (of any, for a shown one); False when only shown ones would make room for one
        that is not."""
        self._expire(now)
        if len(self._samples) < self.limit:
            return True
        victims = [slot for slot in self._samples if slot not in self._shown] or (
            list(self._samples) if shown else [])
        if not victims:
            return False
        self._drop(min(victims, key=lambda slot: self._samples[slot].seen_at))
        return True

    def _drop(self, slot) -> None:
        del self._samples[slot]
        self._shown.discard(slot)

    def expire(self, now: float) -> None:
        """Forget the statements not seen for ``max_age`` (epoch seconds ``now``)."""
        with self._lock:
            self._expire(now)

    def _expire(self, now: float) -> None:
        for slot in [slot for slot, s in self._samples.items() if s.seen_at < now - self.max_age]:
            self._drop(slot)

    def slowest(self, datname: str, queryid: str) -> Sample | None:
        """The slowest recent sample of statement ``queryid`` in ``datname`` (None: none kept)."""
        return self._samples.get((datname, str(queryid)))

    def recent(self, limit: int) -> list[Sample]:
        """At most ``limit`` kept samples, the most recently seen first."""
        with self._lock:
            samples = list(self._samples.values())
        samples.sort(key=lambda s: (-s.seen_at, s.datname, s.key))
        return samples[:max(0, limit)]


DEFAULT_LIMIT = 50


def sampler_of(scraper):
    """The session sampler of a target's scraper (None before its first scrape, or with every
    sampler collector off)."""
    for collector in scraper.collectors:
        shared = getattr(collector, "shared", None)
        if shared is not None and getattr(shared, "sampler", None) is not None:
            return shared.sampler
    return None


def endpoint(exporter, target: str, params: dict) -> dict:
    """``/samples?target=NAME[&limit=N]`` (exporter.private): the kept samples, the most recently
    seen first, redacted unless the target's ``samples.redact`` is false; each with a ``plans``
    list (the stored plans of its statement, newest first, when ``plans:`` is on: exporter.postgres.plan_history)."""
    from exporter.private import MAX_BODY_ITEMS

    values = params.get("limit", [str(DEFAULT_LIMIT)])
    if len(values) != 1 or not values[0].isdigit() or not 1 <= int(values[0]) <= MAX_BODY_ITEMS:
        raise ValueError(f"limit must be a whole number from 1 to {MAX_BODY_ITEMS}")
    scraper = exporter.scrapers[target]
    options = scraper.target.samples
    sampler = sampler_of(scraper)
    body = {"target": target, "redacted": options.redact, "limit": options.limit, "max_age_seconds": options.max_age}
    if sampler is None:
        body.update(sampler="not running (it starts at the target's first scrape with a wait_events collector on)",
                    samples=[])
        return body
    body["sampler"] = "running" if sampler.running else "stopped"
    from exporter.postgres.plan_history import plans_by_statement

    known = plans_by_statement(getattr(exporter.config, "state_dir", ""), target)  # the plans collector's, if on
    body["samples"] = [dict(s.as_dict(options.redact), plans=known.get((s.datname, str(s.queryid)), []))
                       for s in sampler.store.recent(int(values[0]))]
    return body
