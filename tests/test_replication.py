"""Streaming replication for real: a primary (wal_level=logical) and standbys copied from it with
``pg_basebackup -R`` through physical slots, replay paused while the primary writes, a logical slot
read by the real ``pg_recvlogical``, a slot lost for real. Every number dbperf serves is checked
against what the test did: the WAL it wrote (bytes, from the primary's insert position), the time
that passed (seconds, bracketed by the test's own clock) and the slots it made. dbperf reads both
servers as a ``pg_monitor`` role, not a superuser."""

from __future__ import annotations

import contextlib
import subprocess
import time

import psycopg
import pytest

from conftest import Samples, Served, wait_until
from exporter.config import parse
from exporter.pgcluster import Cluster
from exporter.registry import all_collectors
from exporter.server import Exporter

pytestmark = pytest.mark.pg

MIB = 1024 * 1024
SEGMENT = 16 * MIB
# WAL a server writes on its own around the test's (running-xacts records, a checkpoint's): the
# tolerance on byte figures, far below the megabytes the tests write
SLACK = 256 * 1024
CLOCK = 1.0  # seconds of tolerance on a seconds figure bracketed by the test's clock
# the WAL page headers (MAXALIGNed XLogLongPageHeaderData at a segment's start, XLogPageHeaderData elsewhere)
LONG_PAGE_HEADER, SHORT_PAGE_HEADER = 40, 24


@pytest.fixture(scope="module")
def primary():
    with Cluster(settings={"wal_level": "logical", "autovacuum": "off"}) as cluster:
        cluster.psql("CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
        cluster.psql("CREATE DATABASE app")
        yield cluster


def lsn(text: str) -> int:
    high, low = text.strip().split("/")
    return (int(high, 16) << 32) + int(low, 16)


def ask(cluster: Cluster, sql: str, dbname: str = "postgres"):
    """One value, as the superuser (the test's own view of the server; dbperf reads as ``monitor``)."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchone()[0] if cur.description else None


def insert_lsn(cluster: Cluster) -> int:
    return lsn(ask(cluster, "SELECT pg_current_wal_insert_lsn()::text"))


def write_wal(cluster: Cluster, table: str, rows: int, dbname: str = "postgres") -> tuple[int, int]:
    """Commits ``rows`` rows of about 250 bytes (in batches); the primary's insert position before and after."""
    before = insert_lsn(cluster)
    ask(cluster, f"CREATE TABLE IF NOT EXISTS {table} (id int, pad text)", dbname)
    for start in range(0, rows, 20000):
        ask(cluster, f"INSERT INTO {table} SELECT g, repeat('x', 200) FROM generate_series({start}, "
                     f"{min(rows, start + 20000) - 1}) g", dbname)
    return before, insert_lsn(cluster)


def wait_flushed(cluster: Cluster, position: int) -> None:
    """The primary has written WAL up to ``position`` (synchronous_commit is off in these clusters)."""
    wait_until(lambda: lsn(ask(cluster, "SELECT pg_current_wal_lsn()::text")) >= position, timeout=30,
               message="the primary's WAL written")


def received(standby: Cluster) -> int:
    return lsn(ask(standby, "SELECT coalesce(pg_last_wal_receive_lsn(), '0/0')::text"))


def replayed(standby: Cluster) -> int:
    return lsn(ask(standby, "SELECT pg_last_wal_replay_lsn()::text"))


def wal_end(cluster: Cluster) -> int:
    """Where the last WAL record the server inserted ends: its insert position (with asynchronous
    commit, the WAL writer sends the last commits a moment later), less the page header when that
    position is just past the header of a new page: no record there yet, nothing to send, and an
    idle server may write none for many seconds (a fresh standby's primary, right after the switch
    pg_basebackup ends with)."""
    position = insert_lsn(cluster)
    block = int(ask(cluster, "SELECT current_setting('wal_block_size')"))
    segment = int(ask(cluster, "SELECT pg_size_bytes(current_setting('wal_segment_size'))"))
    if position % segment == LONG_PAGE_HEADER:
        return position - LONG_PAGE_HEADER
    return position - SHORT_PAGE_HEADER if position % block == SHORT_PAGE_HEADER else position


def wait_caught_up(primary: Cluster, standby: Cluster) -> None:
    """The standby has received and replayed everything the primary wrote so far (wal_end)."""
    target = wal_end(primary)
    wait_until(lambda: replayed(standby) >= target and received(standby) >= target, timeout=60,
               message="the standby caught up")


class Pair:
    """A primary and one streaming standby of it (slot and application_name ``name``), and dbperf
    serving both as the ``monitor`` role with only the replication collector."""

    def __init__(self, primary: Cluster, name: str):
        self.primary, self.name = primary, name
        self.standby = Cluster(settings={"cluster_name": f"'{name}'", "wal_receiver_status_interval": "1s"})
        self.started = (time.time(), None)
        self.served = None

    def start(self) -> "Pair":
        self.standby.init_standby(self.primary, slot=self.name)
        before = time.time()
        self.standby.start()
        self.started = (before, time.time())
        wait_until(lambda: self.primary_view("state") == "streaming", timeout=30, message=f"{self.name} streaming")
        config = parse({"listen": "127.0.0.1:0", "targets": [
            {"name": name, "dsn": cluster.dsn(user="monitor"),
             "collectors": {c.name: c.name == "replication" for c in all_collectors()}}
            for name, cluster in (("primary", self.primary), ("standby", self.standby))]}, source="test-replication")
        self.served = Served(Exporter(config))
        return self

    def primary_view(self, column: str):
        return ask(self.primary, f"SELECT {column}::text FROM pg_stat_replication WHERE application_name = '{self.name}'")

    def scrape(self) -> tuple[Samples, float, float]:
        """The metrics and the test's clock just before and after the scrape."""
        before = time.time()
        samples = self.served.metrics()
        return samples, before, time.time()

    def close(self) -> None:
        if self.served is not None:
            self.served.close()
        self.standby.cleanup()
        ask(self.primary, f"SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                          f"WHERE slot_name = '{self.name}'")


@contextlib.contextmanager
def pair(primary: Cluster, name: str):
    handle = Pair(primary, name)
    try:
        yield handle.start()
    finally:
        handle.close()


def sender(samples: Samples, name: str, metric: str, **labels) -> float:
    return samples.value(metric, target="primary", application_name=name, **labels)


def test_a_fresh_standby_paused_before_any_transaction_is_behind_not_at_zero(primary):
    """The case pg_last_xact_replay_timestamp() cannot measure (NULL): nothing replayed since the
    standby started, replay paused, megabytes pending. Its lag is the time since it started."""
    with pair(primary, "fresh") as p:
        wait_caught_up(primary, p.standby)
        ask(p.standby, "SELECT pg_wal_replay_pause()")
        assert ask(p.standby, "SELECT pg_last_xact_replay_timestamp()") is None  # the case under test
        before, after = write_wal(primary, "fresh_wal", 30000)
        written = after - before
        assert written > 4 * MIB
        wait_until(lambda: received(p.standby) >= after, timeout=30, message="the WAL received")
        assert ask(p.standby, "SELECT pg_last_xact_replay_timestamp()") is None  # still nothing replayed

        samples, t1, t2 = p.scrape()
        lag_bytes = samples.value("pg_replication_replay_lag_bytes", target="standby")
        assert written <= lag_bytes <= written + SLACK
        started_before, started_after = p.started
        lag = samples.value("pg_replication_lag_seconds", target="standby")
        assert t1 - started_after - CLOCK <= lag <= t2 - started_before + CLOCK, (lag, t1 - started_after)
        assert samples.value("pg_replication_replay_paused", target="standby") == 1
        assert not samples.has("pg_replication_last_replay_timestamp_seconds", target="standby")
        # the primary's view of the same standby
        labels = dict(state="streaming", sync_state="async", slot_name="fresh", client_addr="127.0.0.1")
        assert written <= sender(samples, "fresh", "pg_stat_replication_lag_bytes", **labels) <= written + SLACK
        assert not samples.has("pg_replication_lag_seconds", target="primary")

        time.sleep(2)
        later, t3, t4 = p.scrape()
        grown = later.value("pg_replication_lag_seconds", target="standby") - lag
        assert t3 - t2 - CLOCK <= grown <= t4 - t1 + CLOCK, grown  # it grows with the clock while paused
        assert abs(later.value("pg_replication_replay_lag_bytes", target="standby") - lag_bytes) <= SLACK

        ask(p.standby, "SELECT pg_wal_replay_resume()")
        wait_caught_up(primary, p.standby)
        caught_up, _, _ = p.scrape()
        assert caught_up.value("pg_replication_lag_seconds", target="standby") == 0
        assert caught_up.value("pg_replication_replay_lag_bytes", target="standby") == 0
        assert caught_up.value("pg_replication_replay_paused", target="standby") == 0
        assert caught_up.has("pg_replication_last_replay_timestamp_seconds", target="standby")


def test_lag_after_a_replayed_transaction_grows_while_replay_is_paused(primary):
    with pair(primary, "paused") as p:
        ask(primary, "CREATE TABLE paused_mark (id int)")
        committed = (time.time(), None)
        ask(primary, "INSERT INTO paused_mark VALUES (1)")
        committed = (committed[0], time.time())
        wait_caught_up(primary, p.standby)
        ask(p.standby, "SELECT pg_wal_replay_pause()")
        before, after = write_wal(primary, "paused_wal", 30000)
        written = after - before
        wait_until(lambda: received(p.standby) >= after, timeout=30, message="the WAL received")

        samples, t1, t2 = p.scrape()
        last = samples.value("pg_replication_last_replay_timestamp_seconds", target="standby")
        assert committed[0] - CLOCK <= last <= committed[1] + CLOCK  # the INSERT's commit
        lag = samples.value("pg_replication_lag_seconds", target="standby")
        assert t1 - committed[1] - CLOCK <= lag <= t2 - committed[0] + CLOCK
        assert written <= samples.value("pg_replication_replay_lag_bytes", target="standby") <= written + SLACK
        assert samples.value("pg_replication_replay_paused", target="standby") == 1

        labels = dict(state="streaming", sync_state="async", slot_name="paused")
        assert written <= sender(samples, "paused", "pg_stat_replication_lag_bytes", **labels) <= written + SLACK
        # written and flushed at once (the walreceiver keeps going), only replay waits
        for kind in ("write", "flush"):
            assert 0 <= sender(samples, "paused", f"pg_stat_replication_{kind}_lag_seconds", **labels) < 5
        replay = sender(samples, "paused", "pg_stat_replication_replay_lag_seconds", **labels)
        assert 0 < replay <= lag + CLOCK

        # both views grow while replay stays paused (the standby reports every second)
        time.sleep(3)
        later, t3, t4 = p.scrape()
        assert later.value("pg_replication_lag_seconds", target="standby") - lag >= t3 - t2 - CLOCK
        assert sender(later, "paused", "pg_stat_replication_replay_lag_seconds", **labels) - replay >= 3 - 2 * CLOCK


def test_a_caught_up_standby_has_zero_lag_also_when_idle_and_after_a_restart(primary):
    with pair(primary, "idle") as p:
        ask(primary, "CREATE TABLE idle_mark AS SELECT 1 AS id")
        wait_caught_up(primary, p.standby)
        # PostgreSQL clears the primary's lag times once the standby has caught up and no WAL flows
        wait_until(lambda: p.primary_view("replay_lag") is None and p.primary_view("write_lag") is None,
                   timeout=30, message="the primary's lag times cleared")
        samples, _, _ = p.scrape()
        labels = dict(state="streaming", sync_state="async", slot_name="idle")
        for kind in ("write", "flush", "replay"):
            assert sender(samples, "idle", f"pg_stat_replication_{kind}_lag_seconds", **labels) == 0
        assert sender(samples, "idle", "pg_stat_replication_lag_bytes", **labels) == 0
        assert samples.value("pg_replication_lag_seconds", target="standby") == 0

        # restarted on an idle primary: streaming resumes at the start of the WAL segment, so the
        # receive position is behind the replay position (what the standby replayed from pg_wal)
        p.standby.restart()
        wait_until(lambda: p.primary_view("state") == "streaming", timeout=30, message="streaming again")
        assert received(p.standby) < replayed(p.standby)  # the case under test
        samples, _, _ = p.scrape()
        assert samples.value("pg_replication_lag_seconds", target="standby") == 0
        assert samples.value("pg_replication_replay_lag_bytes", target="standby") == 0

        # a synchronous standby
        ask(primary, "ALTER SYSTEM SET synchronous_standby_names = 'idle'")
        ask(primary, "SELECT pg_reload_conf()")
        try:
            wait_until(lambda: p.primary_view("sync_state") == "sync", timeout=30, message="sync_state sync")
            samples, _, _ = p.scrape()
            assert sender(samples, "idle", "pg_stat_replication_lag_bytes", sync_state="sync", slot_name="idle") == 0
        finally:
            ask(primary, "ALTER SYSTEM RESET synchronous_standby_names")
            ask(primary, "SELECT pg_reload_conf()")


def slot_value(samples: Samples, metric: str, slot: str, **labels) -> float:
    return samples.value(metric, target="primary", slot_name=slot, **labels)


def test_slots_physical_logical_and_lost(primary, tmp_path):
    keep = 64 * MIB
    ask(primary, f"ALTER SYSTEM SET max_slot_wal_keep_size = '{keep // MIB}MB'")
    ask(primary, "SELECT pg_reload_conf()")
    recv = None
    try:
        with pair(primary, "slots") as p:
            kept = lsn(ask(primary, "SELECT lsn::text FROM pg_create_physical_replication_slot('kept', true)"))
            decoded_from = lsn(ask(primary, "SELECT lsn::text FROM pg_create_logical_replication_slot("
                                            "'decoder', 'test_decoding')", "app"))
            before, after = write_wal(primary, "slot_wal", 8000, "app")
            wait_flushed(primary, after)
            wait_caught_up(primary, p.standby)
            samples, _, _ = p.scrape()

            physical = dict(slot_type="physical", database="")
            # the standby's slot: in use, caught up
            assert slot_value(samples, "pg_replication_slots_active", "slots", **physical) == 1
            assert slot_value(samples, "pg_replication_slots_retained_wal_bytes", "slots", **physical) <= SLACK
            assert slot_value(samples, "pg_replication_slots_wal_status", "slots", wal_status="reserved") == 1
            # an unused physical slot keeps everything since it was made
            assert slot_value(samples, "pg_replication_slots_active", "kept", **physical) == 0
            retained = slot_value(samples, "pg_replication_slots_retained_wal_bytes", "kept", **physical)
            assert after - kept <= retained <= after - kept + SLACK
            # max_slot_wal_keep_size counts whole segments from the one holding the slot's restart_lsn
            safe = slot_value(samples, "pg_replication_slots_safe_wal_size_bytes", "kept", **physical)
            assert keep - retained - SLACK < safe <= keep + SEGMENT - retained + SLACK, (safe, retained)
            assert slot_value(samples, "pg_replication_slots_wal_status", "kept", wal_status="reserved") == 1
            # the logical slot, in its database
            logical = dict(slot_type="logical", database="app")
            assert slot_value(samples, "pg_replication_slots_active", "decoder", **logical) == 0
            assert slot_value(samples, "pg_replication_slots_retained_wal_bytes", "decoder", **logical) >= \
                after - decoded_from
            assert slot_value(samples, "pg_replication_slots_wal_status", "decoder", wal_status="reserved") == 1

            # a consumer reads the logical slot: active, and it decodes the test's rows
            out = tmp_path / "decoded.txt"
            recv = subprocess.Popen([str(primary.bindir / "pg_recvlogical"), "-d", primary.dsn("app"),
                                     "--slot", "decoder", "--start", "-f", str(out), "-F", "1", "-s", "1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            wait_until(lambda: p.scrape()[0].value("pg_replication_slots_active", target="primary",
                                                   slot_name="decoder") == 1, timeout=30, message="decoder active")
            wait_until(lambda: out.exists() and out.read_text().count("table public.slot_wal: INSERT") == 8000,
                       timeout=30, message="8000 decoded inserts")
            recv.terminate()
            recv.wait(10)
            ask(primary, "SELECT pg_drop_replication_slot('decoder')")

            # 'kept' retains more than max_slot_wal_keep_size: the next checkpoint removes its WAL
            for _ in range(keep // SEGMENT + 2):
                ask(primary, "SELECT pg_logical_emit_message(false, 'test', 'x'), pg_switch_wal()")
            ask(primary, "CHECKPOINT")
            wait_until(lambda: ask(primary, "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'kept'")
                       == "lost", timeout=30, message="slot kept lost")
            samples, _, _ = p.scrape()
            assert slot_value(samples, "pg_replication_slots_wal_status", "kept", wal_status="lost") == 1
            assert not samples.has("pg_replication_slots_retained_wal_bytes", slot_name="kept")
            assert not samples.has("pg_replication_slots_safe_wal_size_bytes", slot_name="kept")
            # the streaming standby kept up and its slot is safe
            assert slot_value(samples, "pg_replication_slots_wal_status", "slots", wal_status="reserved") == 1
    finally:
        if recv is not None and recv.poll() is None:
            recv.kill()
            recv.wait(10)
        ask(primary, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name IN ('kept', 'decoder')")
        ask(primary, "ALTER SYSTEM RESET max_slot_wal_keep_size")
        ask(primary, "SELECT pg_reload_conf()")
