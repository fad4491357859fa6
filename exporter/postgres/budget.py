"""The series budget of one target (``max_series``): which tables the per-relation collectors
(``tables``, ``table_sizes``, ``indexes``) serve on their own, across all of the target's databases.

What it decides
    The target may serve ``max_series`` series in all. The other collectors' series are what they
    served in the target's last scrape (``Context.served``; before the first scrape is counted,
    half of ``max_series`` is set aside for them, and a database whose tables do not all fit in its
    share of the rest keeps none on its own until its next read: no series is made on a guess);
    the relation collectors share the rest. When
    every table fits, nothing changes. Otherwise the busiest tables across the databases are kept,
    each with its indexes (a table's cost is its series in every enabled relation collector: 23
    in ``tables`` (27 on PostgreSQL 18), 2 in ``table_sizes`` and 4 per index), and each
    database's other tables are folded into one ``other`` row per collector
    (:mod:`exporter.postgres.relations`).

Busiest
    A table's activity is ``seq_scan + idx_scan + n_tup_ins + n_tup_upd + n_tup_del``, ranked by
    its increase per second since the previous read of its database (a counter that went down,
    after a statistics reset, ranks on its value since). Ties (idle tables) go to the larger
    (live plus dead rows). A table read for the first time has no rate: it ranks after every table
    that has one, by its activity so far. Without the ``tables`` collector the ranking collector is
    ``table_sizes`` (by size) or else ``indexes`` (by index scans).

Sticky, as for statements
    The busiest tables filling half of the relations' share are always kept, and each is marked a
    member; members keep their place in the other half for :data:`STICKY` seconds after they last
    were among those (or, for a table kept in what was left, after it was first kept), most
    recent first; what is left goes to the next busiest. So a table near the cut does not come and
    go from one read to the next, and an idle table gives its place to a busier one within STICKY.

Rounds and databases
    Each database's collectors run (and are cached) on their own, so the budget is shared out in
    rounds: a round starts when the ranking collector reads a database a second time since the last
    one began, and the round's decision, from the latest known rates of every database, holds for
    every database read until the next round. A database that has no rates yet (read fewer than
    twice when the round began, or a new one) gets a fair share (the relations' share over the
    databases covered) and keeps its own busiest tables within it. Whatever the decision, a
    collector never serves more than the series the others' last results leave it: while another
    database still serves its previous, larger set, a database grows only on its next read.

One :class:`SeriesBudget` per target: the PostgreSQL kind's collector factory makes one and gives
it to that target's relation collectors (``exporter.postgres.kind.builtin_collectors``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from dataclasses import dataclass, field

from exporter.log import RateLimiter

LOG = logging.getLogger("dbperf.budget")

RELATION_COLLECTORS = ("tables", "table_sizes", "indexes")  # also the order of the ranking collector
STICKY = 600.0           # seconds a table stays kept after it last was among the busiest
UNCOUNTED_SHARE = 0.5    # of max_series set aside for the other collectors before they are counted
LOG_EVERY = 3600.0       # seconds between two log lines saying the budget cuts


@dataclass
class Read:
    """What one read of a relation collector in a database holds, for the budget.

    ``tables``: (schemaname, relname) -> (activity, size) of the tables it read, in the order
    read (0, 0 when the collector does not rank); ``indexes``: index count per table when the
    collector reads indexes, else None."""

    tables: dict
    indexes: dict | None = None


@dataclass(frozen=True)
class Cost:
    """Series of one table in each enabled relation collector: ``table[c]`` for the table itself,
    ``index[c]`` per index of it."""

    table: dict
    index: dict

    def __post_init__(self):
        object.__setattr__(self, "per_table", sum(self.table.values()))
        object.__setattr__(self, "per_index", sum(self.index.values()))

    def of(self, indexes: int) -> int:
        """A table with ``indexes`` indexes, in all the enabled collectors."""
        return self.per_table + indexes * self.per_index

    def other(self) -> int:
        """The ``other`` rows of one database in all the enabled collectors (a table-level row and
        an index-level one)."""
        return self.per_table + self.per_index


@dataclass
class Database:
    """What the budget knows of one database."""

    reads: int = 0        # reads of the ranking collector
    at: float = 0.0       # clock time of the last one
    activity: dict = field(default_factory=dict)  # table -> cumulative activity at that read
    keys: dict = field(default_factory=dict)      # table -> sort key (ascending: busiest first)
    order: list | None = None                     # tables sorted by keys (made when needed)
    indexes: dict | None = None  # table -> index count, as last read (None: not read yet, 1 assumed)
    index_total: int | None = None                # indexes of the tables in keys (made when needed)
    kept: frozenset | None = None                 # tables kept on their own (None: all)
    rendered: dict = field(default_factory=dict)  # collector -> samples its last result serves

    def sorted(self) -> list:
        if self.order is None:
            self.order = sorted(self.keys, key=self.keys.__getitem__)
        return self.order

    def index_count(self):
        """table -> its index count: as last read, 1 while the indexes were not read."""
        if self.indexes is None:
            return lambda table: 1
        get = self.indexes.get
        return lambda table: get(table, 0)

    def full(self, cost: Cost) -> int:
        """The series of all its tables, none folded."""
        if self.index_total is None:
            count = self.index_count()
            self.index_total = sum(map(count, self.keys))
        return cost.per_table * len(self.keys) + cost.per_index * self.index_total


@dataclass
class Decision:
    """One round's decision: the tables kept per database that had rates then, and the share of a
    database that had none."""

    kept: dict            # datname -> frozenset of tables, or None (all)
    share: int            # series for a database not in ``kept``


def rank_key(activity: float, size: float, before: float | None, elapsed: float) -> tuple:
    """The sort key of a table (ascending: busiest first): tables with a previous read first, by
    their activity's increase per second (its value after a reset), then by size; tables read for
    the first time after them, by their activity so far, then size."""
    if before is None:
        return (1, -activity, -size)
    rate = (activity - before if activity >= before else activity) / max(elapsed, 1e-9)
    return (0, -rate, -size)


def fill(items, cost, room: int, chosen: set) -> tuple[int, object]:
    """Add ``items`` (in order) to ``chosen`` while their ``cost(item)`` fits in ``room``; stop at
    the first that does not fit and return ``(room left, that item or None)``. Items already in
    ``chosen`` are passed over."""
    for item in items:
        if item in chosen:
            continue
        c = cost(item)
        if c > room:
            return room, item
        chosen.add(item)
        room -= c
    return room, None


class SeriesBudget:
    """The series budget of one target, shared by its relation collectors (see the module)."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.lock = threading.Lock()
        self.collectors: dict = {}  # name -> RelationCollector, registered by the collectors
        self.dbs: dict[str, Database] = {}
        self.members: dict[tuple, float] = {}  # (datname, table) -> clock time it last was among the busiest
        self.decision: Decision | None = None
        self.round: set[str] = set()  # databases ranked since the decision
        self.rounds = 0               # decisions so far
        self.cutting = False          # the last decision (once counted) folded tables: logged once
        self._costs: dict = {}
        self.version: int | None = None  # the server's, as of the last read
        self._log = RateLimiter(LOG_EVERY)

    def register(self, collector) -> None:
        self.collectors[collector.name] = collector

    def enabled(self, options) -> list[str]:
        """The relation collectors the target enables, the ranking collector first."""
        return [name for name in RELATION_COLLECTORS if name in self.collectors
                and options.collector(name, self.collectors[name].enabled_by_default).enabled]

    def ranking(self, options) -> str | None:
        """The collector whose reads rank the tables: ``tables``, else the first enabled."""
        enabled = self.enabled(options)
        return enabled[0] if enabled else None

    def cost(self, enabled: tuple, version: int) -> Cost:
        cost = self._costs.get((enabled, version))
        if cost is None:
            per = {name: self.collectors[name].series_per_relation(version) for name in enabled}
            cost = self._costs[(enabled, version)] = Cost({n: t for n, (t, _) in per.items()},
                                                          {n: i for n, (_, i) in per.items()})
        return cost

    # -- what a collector asks ------------------------------------------------------------
    def choose(self, collector: str, ctx, read: Read) -> frozenset | None:
        """The tables of ``ctx.datname`` that ``collector``'s result keeps on their own (None: all)."""
        options = ctx.options
        with self.lock:
            covered = options.covered(ctx.server)
            self._forget(covered)
            enabled = self.enabled(options)
            self.version = ctx.server.version
            cost = self.cost(tuple(enabled), ctx.server.version)
            db = self.dbs.setdefault(ctx.datname, Database())
            if read.indexes is not None:
                db.indexes, db.index_total = read.indexes, None
            if collector == enabled[0]:
                now = self.clock()
                self._rank(db, read, now)
                db.kept = self._decide(ctx, covered, cost, now)
            elif not db.reads and not db.keys:  # not ranked yet (its ranking collector failed): by this read
                db.keys = {t: (1, -float(a or 0), -float(s or 0)) for t, (a, s) in read.tables.items()}
                db.order, db.index_total = None, None
                db.kept = self._local(db, self._relations(ctx, covered, enabled) // len(covered), cost,
                                      guessed=not ctx.served)
            return self._room(collector, ctx, db, read, cost)

    def served(self, collector: str, datname: str, samples: int) -> None:
        """``collector``'s result for ``datname`` serves ``samples`` (cached with it)."""
        with self.lock:
            db = self.dbs.get(datname)
            if db is not None:
                db.rendered[collector] = samples

    # -- ranking -------------------------------------------------------------------------------
    @staticmethod
    def _rank(db: Database, read: Read, now: float) -> None:
        elapsed = now - db.at
        get = (db.activity if db.reads else {}).get
        keys, activity = {}, {}
        for table, (act, size) in read.tables.items():
            act = activity[table] = float(act or 0)
            keys[table] = rank_key(act, float(size or 0), get(table), elapsed)
        db.keys, db.activity, db.order, db.index_total = keys, activity, None, None
        db.reads += 1
        db.at = now

    def others(self, ctx) -> int:
        """Series of the target that are not the relation collectors': as served in its last scrape."""
        if not ctx.served:
            return int(ctx.options.max_series * UNCOUNTED_SHARE)
        return sum(n for name, n in ctx.served.items() if name not in self.collectors)

    def _relations(self, ctx, covered: list[str], enabled) -> int:
        """Series for the relation collectors' tables and other rows, their dbperf_series_folded left out."""
        return ctx.options.max_series - self.others(ctx) - len(enabled) * len(covered)

    def _decide(self, ctx, covered: list[str], cost: Cost, now: float) -> frozenset | None:
        """The tables ``ctx.datname`` keeps: the round's decision (a new one when this database
        was ranked in the current round already), or for a database without rates then, its own
        busiest within its share."""
        datname = ctx.datname
        if self.decision is None or datname in self.round:
            self.decision = self._round(ctx, covered, cost, now)
            self.round = {datname}
            self.rounds += 1
        else:
            self.round.add(datname)
        if datname in self.decision.kept:
            return self.decision.kept[datname]
        return self._local(self.dbs[datname], self.decision.share, cost, guessed=not ctx.served)

    @staticmethod
    def _local(db: Database, share: int, cost: Cost, guessed: bool) -> frozenset | None:
        """A database's own busiest tables within ``share`` series (None: all fit). While the
        other collectors are not counted (``guessed``), its share is a guess: then a database
        whose tables do not all fit keeps none on its own, so that no series is made on a guess
        (Prometheus keeps a series in memory for hours once seen)."""
        if db.full(cost) <= share:
            return None
        if guessed:
            return frozenset()
        chosen: set = set()
        count = db.index_count()
        fill(db.sorted(), lambda t: cost.of(count(t)), share - cost.other(), chosen)
        return frozenset(chosen)

    def _round(self, ctx, covered: list[str], cost: Cost, now: float) -> Decision:
        """A new round: the kept tables of every database that has rates (read twice or more),
        across all of them, with sticky membership; the fair share of the others."""
        dbs = self.dbs
        total = self._relations(ctx, covered, cost.table)
        share = max(0, total // len(covered))
        ranked = [d for d in covered if d in dbs and dbs[d].reads >= 2]
        young = [d for d in covered if d not in ranked]
        full = sum(dbs[d].full(cost) for d in ranked)
        reserved = sum(min(share, dbs[d].full(cost)) if d in dbs else share for d in young)
        young_fold = any(d in dbs and dbs[d].full(cost) > share for d in young)
        if full <= total - reserved:
            self._say(ctx, young_fold, total, covered, cost)
            return Decision(dict.fromkeys(ranked), share)
        chosen = self._fill(ranked, cost, total - reserved - cost.other() * len(ranked), now)
        kept = {}
        for d in ranked:
            tables = frozenset(t for (name, t) in chosen if name == d)
            kept[d] = None if len(tables) == len(dbs[d].keys) else tables
        self._say(ctx, True, total, covered, cost)
        return Decision(kept, share)

    def _fill(self, ranked: list[str], cost: Cost, room: int, now: float) -> set:
        """The busiest tables of the ``ranked`` databases within ``room`` series: the busiest filling
        half (members, as of now), then the members of the last :data:`STICKY` seconds, most recent
        first, then the next busiest (members from now on, until STICKY has passed)."""
        dbs = self.dbs

        counts = {d: dbs[d].index_count() for d in ranked}

        def item_cost(item) -> int:
            return cost.of(counts[item[0]](item[1]))

        def stream(datname):
            keys = dbs[datname].keys
            return ((keys[t], datname, t) for t in dbs[datname].sorted())

        order = ((d, t) for _, d, t in heapq.merge(*[stream(d) for d in ranked]))
        chosen: set = set()
        half = max(0, room) // 2
        left, stopped = fill(order, item_cost, half, chosen)
        for item in chosen:
            self.members[item] = now
        held = sorted(((at, item) for item, at in self.members.items()
                       if item not in chosen and now - at < STICKY and item[0] in dbs and dbs[item[0]].reads >= 2
                       and item[1] in dbs[item[0]].keys), reverse=True)
        left += room - half
        for _, item in held:
            c = item_cost(item)
            if c <= left:
                chosen.add(item)
                left -= c
        fill(order if stopped is None else itertools.chain([stopped], order), item_cost, left, chosen)
        members = self.members
        for item in chosen:  # the tables kept for the first time are members from now on too
            if item not in members:
                members[item] = now
        for item in [i for i, at in members.items() if now - at >= STICKY and i not in chosen]:
            del members[item]
        return chosen

    # -- the room a collector has ------------------------------------------------------------
    def _room(self, collector: str, ctx, db: Database, read: Read, cost: Cost) -> frozenset | None:
        """``db.kept`` for ``collector``'s result, less its least busy tables while the result
        would serve more than the other results leave; the result's series are reserved."""
        a, b = cost.table[collector], cost.index[collector]
        tables = read.tables
        count = db.index_count()  # as this read has them, when it reads indexes
        kept = db.kept
        keep = tables.keys() if kept is None else tables.keys() & kept
        series = a * len(keep) + (b * sum(map(count, keep)) if b else 0) + 1
        folds = len(keep) < len(tables)
        used = sum(n for d, other in self.dbs.items() for name, n in other.rendered.items()
                   if d != ctx.datname or name != collector)
        room = ctx.options.max_series - self.others(ctx) - used
        if series + (a + b if folds else 0) > room:  # fold its least busy tables too, and say so
            rank = {t: i for i, t in enumerate(db.sorted())}
            keep = sorted(keep, key=lambda t: rank.get(t, len(rank)))
            folds = True
            while keep and series + a + b > room:
                series -= a + b * count(keep.pop())
            kept = frozenset(keep)
        db.rendered[collector] = series + (a + b if folds else 0)  # until served() counts the result
        return kept

    # -- check-config --connect --------------------------------------------------------------
    def estimate(self, target, served: dict) -> str:
        """One line: the series the target serves (``served``: a scrape's, by collector), what its
        tables and indexes would cost unfolded, and whether max_series cuts."""
        limit, now = target.max_series, sum(served.values())
        with self.lock:
            dbs = list(self.dbs.values())
            enabled = [name for name in RELATION_COLLECTORS if any(name in db.rendered for db in dbs)]
            if not dbs or not enabled or self.version is None:
                return f"series: {now:,} in this scrape (max_series {limit:,})"
            cost = self.cost(tuple(enabled), self.version)
            tables = sum(len(db.keys) for db in dbs)
            indexes = sum(sum(db.indexes.values()) for db in dbs if db.indexes)
            full = sum(db.full(cost) for db in dbs)
        others = sum(n for name, n in served.items() if name not in self.collectors)
        fixed = len(enabled) * len(dbs)  # dbperf_series_folded
        wanted = others + full + fixed
        head = f"series: {now:,} in this scrape; "
        if wanted <= limit:
            return head + (f"all of its {tables:,} tables and {indexes:,} indexes fit: about {wanted:,} series in all, "
                           f"within max_series {limit:,}")
        room = limit - others - fixed - len(dbs) * cost.other()
        keep = max(0, room) * tables // full if full else 0
        line = head + (f"unfolded, its {tables:,} tables and {indexes:,} indexes in {len(dbs)} databases would serve about "
                       f"{full:,} series and its other collectors {others:,}: max_series {limit:,} cuts")
        if room <= 0:
            return line + (": the other collectors alone leave no room, every table is folded into its database's "
                           "other rows (raise max_series, or lower statements.limit)")
        return line + (f", about {keep:,} of the tables (the busiest, with their indexes) are kept, the others folded "
                       f"into other rows per database (dbperf_series_folded)")

    # -- housekeeping ----------------------------------------------------------------------
    def _forget(self, covered: list[str]) -> None:
        """Forget the databases no longer covered (dropped, renamed, excluded)."""
        keep = set(covered)
        gone = [d for d in self.dbs if d not in keep]
        if not gone:
            return
        for datname in gone:
            del self.dbs[datname]
            if self.decision is not None:
                self.decision.kept.pop(datname, None)
        self.members = {item: at for item, at in self.members.items() if item[0] in keep}
        self.round &= keep

    def _say(self, ctx, cuts: bool, total: int, covered: list[str], cost: Cost) -> None:
        """One log line when the budget starts folding (again at most once per LOG_EVERY), once
        the other collectors are counted (the first scrape's share is a guess)."""
        if not ctx.served:
            return
        key = ("budget", ctx.target)
        was, self.cutting = self.cutting, cuts
        if not cuts:
            if was:
                self._log.forget(key)
            return
        if was or not self._log.allow(key):
            return
        known = [self.dbs[d] for d in covered if d in self.dbs]
        LOG.info("target=%s max_series=%d: the %d tables read so far in %d of its %d databases would serve about "
                 "%d series, %d are left for them after the other collectors: the busiest tables (with their "
                 "indexes) are kept across the databases, the others summed per database into rows with "
                 "schemaname=\"\" relname=\"other\" (dbperf_series_folded says how many series each collector "
                 "folded; raise max_series to keep more)",
                 ctx.target, ctx.options.max_series, sum(len(db.keys) for db in known), len(known), len(covered),
                 sum(db.full(cost) for db in known), max(0, total),
                 extra={"target": ctx.target, "collector": "tables"})
