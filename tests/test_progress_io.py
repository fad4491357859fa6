"""The ``io`` (pg_stat_io) and ``progress`` (pg_stat_progress_*) collectors on real servers of the
majors where their SQL changes: 13 and 15 (no pg_stat_io: unsupported), 17 (pg_stat_io with op_bytes,
vacuum's renamed columns), 18 (read_bytes/write_bytes/extend_bytes, delay_time).

A slow VACUUM (cost-based delay of 100 ms a page), a slow ANALYZE (the same), a CREATE INDEX
CONCURRENTLY and a CLUSTER (both over an expression index on a function that sleeps) run at the
same time while dbperf scrapes over HTTP; each must show up with its phase, its bytes done and to do,
and the figures the server itself reports. Then autovacuum: a regular one, then one to prevent
wraparound, told apart by pg_stat_progress_info's kind."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from conftest import make_config, promtool_check_metrics, wait_until
from exporter.pgcluster import Cluster
from pgdist import bindir

pytestmark = pytest.mark.pg

VACUUM_PHASES = {"initializing", "scanning heap", "vacuuming indexes", "vacuuming heap", "cleaning up indexes",
                 "truncating heap", "performing final cleanup"}
ANALYZE_PHASES = {"initializing", "acquiring sample rows", "acquiring inherited sample rows",
                  "computing statistics", "computing extended statistics", "finalizing analyze"}
CLUSTER_PHASES = {"initializing", "seq scanning heap", "index scanning heap", "sorting tuples", "writing new heap",
                  "swapping relation files", "rebuilding index", "performing final cleanup"}
IO_COUNTERS = ("reads", "read_bytes", "read_seconds", "writes", "write_bytes", "write_seconds", "writebacks",
               "writeback_seconds", "extends", "extend_bytes", "extend_seconds", "hits", "evictions", "reuses",
               "fsyncs", "fsync_seconds")

SETUP = """
CREATE TABLE vac AS SELECT g AS a, repeat('x', 50) AS pad FROM generate_series(1, 100000) g;
DELETE FROM vac WHERE a % 2 = 0;
CREATE INDEX vac_a ON vac (a);  -- with an index, vacuum keeps the dead item identifiers for it (17+: only then)
CREATE TABLE ana AS SELECT g AS a FROM generate_series(1, 100000) g;
-- IMMUTABLE is a lie the test needs: index expressions must be; it sleeps as long as the session says
CREATE FUNCTION slow(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_sleep(coalesce(nullif(current_setting('dbperf_test.sleep', true), ''), '0')::float8);
  RETURN $1;
END $$;
-- four rows a block (1800 bytes each, kept inline and uncompressed): the scans advance block by block
CREATE TABLE idx (a int, pad text);
ALTER TABLE idx ALTER pad SET STORAGE EXTERNAL;
INSERT INTO idx SELECT g, repeat('x', 1800) FROM generate_series(1, 3000) g;
CREATE TABLE clu (a int, pad text);
ALTER TABLE clu ALTER pad SET STORAGE EXTERNAL;
INSERT INTO clu SELECT g, repeat('x', 1800) FROM generate_series(1, 3000) g;
CREATE INDEX clu_slow ON clu ((slow(a)));
"""

# (the statement, what the session sets first, the progress view that shows it): each would run for
# a minute or more (100 ms a page, 20 ms a row); the test cancels them once it has scraped
OPERATIONS = {
    "vacuum": ("VACUUM vac", ["SET vacuum_cost_delay = 100", "SET vacuum_cost_limit = 1"],
               "SELECT heap_blks_scanned >= 3 FROM pg_stat_progress_vacuum"),  # pages before the last: done
    "analyze": ("ANALYZE ana", ["SET vacuum_cost_delay = 100", "SET vacuum_cost_limit = 1"],
                "SELECT sample_blks_scanned > 0 FROM pg_stat_progress_analyze"),
    "create_index": ("CREATE INDEX CONCURRENTLY idx_slow ON idx ((slow(a)))", ["SET dbperf_test.sleep = '0.02'"],
                     "SELECT blocks_done > 0 FROM pg_stat_progress_create_index"),
    "cluster": ("CLUSTER clu USING clu_slow", ["SET dbperf_test.sleep = '0.02'"],
                "SELECT true FROM pg_stat_progress_cluster"),
}


class Running:
    """The statements of OPERATIONS, each in a session of its own, until cancelled."""

    def __init__(self, cluster: Cluster, version: int):
        self.cluster, self.pids, self.threads, self.errors = cluster, {}, [], {}
        for name, (statement, settings, _) in OPERATIONS.items():
            if version >= 180000 and name in ("vacuum", "analyze"):
                settings = settings + ["SET track_cost_delay_timing = on"]
            conn = psycopg.connect(cluster.dsn(), autocommit=True)
            self.pids[name] = conn.info.backend_pid
            thread = threading.Thread(target=self._run, args=(name, conn, settings, statement), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _run(self, name, conn, settings, statement):
        with conn:
            for setting in settings:
                conn.execute(setting)
            try:
                conn.execute(statement)
            except psycopg.errors.QueryCanceled:
                return
            self.errors[name] = "finished before it was cancelled: the test could not see it run"

    def wait_visible(self) -> None:
        for name, (_, _, visible) in OPERATIONS.items():
            wait_until(lambda: (self.cluster.psql(visible).strip() == "t"), timeout=60, interval=0.1,
                       message=f"{name} to run")

    def stop(self) -> None:
        pids = ",".join(str(p) for p in self.pids.values())
        self.cluster.psql(f"SELECT pg_cancel_backend(pid) FROM unnest(ARRAY[{pids}]) AS pid")
        for thread in self.threads:
            thread.join(30)
        assert not self.errors, self.errors


@pytest.mark.parametrize("major", [13, 15, 17, 18])
def test_io_and_the_progress_of_running_operations(major, serve):
    # 15: Debian's own binaries, as the rest of the suite; the others from tests/pgdist.py
    with Cluster(bindir=None if major == 15 else bindir(major)) as cluster:
        cluster.psql(SETUP)
        version = int(cluster.psql("SHOW server_version_num"))
        assert version // 10000 == major
        # read before the operations start (CLUSTER's lock would hold pg_relation_size up); no write follows
        sizes = dict(row.split("|") for row in cluster.psql(
            "SELECT relname, pg_relation_size(oid) FROM pg_class WHERE relname IN ('vac', 'ana', 'idx')").split())
        served = serve(make_config(_pg(cluster), {"databases": {"discover": False},
                                                "collectors": {"progress": {"ttl": 0}}}))  # every scrape fresh
        running = Running(cluster, version)
        try:
            running.wait_visible()
            samples = served.metrics()
        finally:
            running.stop()
        assert not promtool_check_metrics(samples.text)
        _check_progress(samples, running.pids, sizes, version)
        _check_io(samples, cluster, version)


def _pg(cluster: Cluster):
    from conftest import PG

    return PG(cluster, None)


def _op(samples, pid: int) -> dict:
    """The value series of one operation, by family name."""
    return {s.name: s.value for s in samples.samples
            if s.name.startswith("pg_stat_progress_") and s.labels.get("pid") == str(pid)}


def _check_progress(samples, pids: dict, sizes: dict, version: int) -> None:
    assert samples.value("dbperf_collector_success", collector="progress", datname="postgres") == 1
    info = {s.labels["pid"]: s.labels for s in samples.series("pg_stat_progress_info")}
    assert {str(p) for p in pids.values()} <= set(info), info
    expected = {"vacuum": ("VACUUM", "vac", "", VACUUM_PHASES), "analyze": ("ANALYZE", "ana", "", ANALYZE_PHASES),
                "create_index": ("CREATE INDEX CONCURRENTLY", "idx", "idx_slow", {"building index: scanning table"}),
                "cluster": ("CLUSTER", "clu", "clu_slow", CLUSTER_PHASES)}
    for name, (command, relname, index, phases) in expected.items():
        labels, values = info[str(pids[name])], _op(samples, pids[name])
        assert (labels["command"], labels["relname"], labels["schemaname"], labels["indexrelname"], labels["kind"],
                labels["datname"]) == (command, relname, "public", index, "manual", "postgres"), labels
        assert labels["phase"] in phases, labels
        assert 0 < values["pg_stat_progress_elapsed_seconds"] < 120, (name, values)
        if name != "cluster":  # its heap is counted only on the seq scan path, not the index scan one
            # the heap (sample, table) to go through is the relation's size; part of it is done
            assert values["pg_stat_progress_size_bytes"] == float(sizes[relname]), (name, values)
            assert 0 < values["pg_stat_progress_done_bytes"] <= values["pg_stat_progress_size_bytes"], (name, values)
    vacuum = _op(samples, pids["vacuum"])
    assert 0 < vacuum["pg_stat_progress_vacuum_dead_tuple_bytes"] <= vacuum["pg_stat_progress_vacuum_max_dead_tuple_bytes"]
    assert vacuum["pg_stat_progress_vacuum_dead_item_ids"] > 0  # half the rows are dead
    assert vacuum["pg_stat_progress_vacuum_index_vacuum_cycles"] == 0  # still in its first heap scan
    if version < 170000:  # 6 bytes a dead item identifier before 17's TID store
        assert vacuum["pg_stat_progress_vacuum_dead_tuple_bytes"] == 6 * vacuum["pg_stat_progress_vacuum_dead_item_ids"]
        assert "pg_stat_progress_vacuum_indexes" not in vacuum
    else:  # counted in the index phases only
        assert vacuum["pg_stat_progress_vacuum_indexes"] == 0 == vacuum["pg_stat_progress_vacuum_indexes_processed"]
    for name in ("vacuum", "analyze"):  # 18's delay_time, in seconds, with track_cost_delay_timing
        values = _op(samples, pids[name])
        if version >= 180000:
            assert 0 < values["pg_stat_progress_delay_seconds"] <= values["pg_stat_progress_elapsed_seconds"] + 1
        else:
            assert "pg_stat_progress_delay_seconds" not in values
    assert {"pg_stat_progress_create_index_tuples", "pg_stat_progress_create_index_lockers_done"} <= set(
        _op(samples, pids["create_index"]))
    assert {"pg_stat_progress_cluster_heap_tuples_scanned", "pg_stat_progress_cluster_indexes_rebuilt"} <= set(
        _op(samples, pids["cluster"]))
    assert {"pg_stat_progress_analyze_child_tables", "pg_stat_progress_analyze_ext_stats"} <= set(
        _op(samples, pids["analyze"]))


def _check_io(samples, cluster: Cluster, version: int) -> None:
    if version < 160000:  # no pg_stat_io: unsupported, never a success with nothing
        assert samples.value("dbperf_collector_supported", collector="io", datname="") == 0
        assert not samples.series("dbperf_collector_success", collector="io")
        assert not [n for n in samples.names() if n.startswith("pg_stat_io_")]
        return
    assert samples.value("dbperf_collector_success", collector="io", datname="") == 1
    for name in IO_COUNTERS:
        assert samples.series(f"pg_stat_io_{name}_total"), name
    # the set of rows is the server's (backend_type, object, context): fixed, and all of it
    rows = {tuple(r.split("|")) for r in cluster.psql("SELECT backend_type, object, context FROM pg_stat_io").split("\n")
            if r}
    served = {(s.labels["backend_type"], s.labels["object"], s.labels["context"])
              for s in samples.series("pg_stat_io_reads_total")}
    assert served and served <= rows
    assert {(s.labels["backend_type"], s.labels["object"], s.labels["context"])
            for s in samples.series("pg_stat_io_fsyncs_total")} <= rows
    # bytes: 16 and 17 count operations of op_bytes (8 kB for relations); 18 counts the bytes of
    # operations that may span several blocks
    key = {"backend_type": "client backend", "object": "relation", "context": "normal"}
    assert samples.value("pg_stat_io_hits_total", **key) > 0
    for op in ("read", "extend"):
        count = samples.value(f"pg_stat_io_{op}s_total", **key)
        size = samples.value(f"pg_stat_io_{op}_bytes_total", **key)
        if version < 180000:
            assert size == count * 8192, op
        else:
            assert size >= count * 8192 and size % 8192 == 0, op
    assert samples.value("pg_stat_io_stats_reset_timestamp_seconds") > 1.5e9
    if version >= 180000:  # WAL rows: their bytes are WAL's own, not a multiple of a block
        wal = samples.value("pg_stat_io_write_bytes_total", backend_type="client backend", object="wal",
                            context="normal")
        assert wal > 0
    else:
        assert not samples.series("pg_stat_io_reads_total", object="wal")


def test_autovacuum_and_wraparound_autovacuum_are_told_apart(serve):
    settings = {"autovacuum_naptime": "1", "autovacuum_freeze_max_age": "100000", "autovacuum_max_workers": "3"}
    with Cluster(settings=settings) as cluster:
        slow = "autovacuum_vacuum_cost_delay = 100, autovacuum_vacuum_cost_limit = 1"
        cluster.psql(f"""
            CREATE TABLE regular (a int, pad text) WITH (autovacuum_vacuum_threshold = 0,
                autovacuum_vacuum_scale_factor = 0, {slow});
            INSERT INTO regular SELECT g, repeat('x', 50) FROM generate_series(1, 50000) g;
            DELETE FROM regular WHERE a % 2 = 0;
            CREATE TABLE frozen (a int) WITH (autovacuum_enabled = false, {slow});
            INSERT INTO frozen SELECT g FROM generate_series(1, 50000) g;""")
        served = serve(make_config(_pg(cluster), {"databases": {"discover": False},
                                                "collectors": {"progress": {"ttl": 0}}}))  # every scrape fresh

        def kind_of(relname):
            found = served.metrics().series("pg_stat_progress_info", relname=relname)
            return found[0].labels["kind"] if found else None

        started = time.monotonic()
        assert wait_until(lambda: kind_of("regular"), timeout=60, message="autovacuum of regular") == "autovacuum"
        (elapsed,) = served.metrics().series("pg_stat_progress_elapsed_seconds", relname="regular")
        assert 0 < elapsed.value < time.monotonic() - started + 5  # since it began on this table
        # autovacuum yields to the lock: regular is left alone from now on
        cluster.psql("ALTER TABLE regular SET (autovacuum_enabled = false)")
        # past autovacuum_freeze_max_age even a table with autovacuum off is vacuumed, to prevent wraparound
        cluster.psql("""CREATE PROCEDURE burn(n int) LANGUAGE plpgsql AS $$
            BEGIN FOR i IN 1..n LOOP PERFORM txid_current(); COMMIT; END LOOP; END $$""")
        cluster.psql("CALL burn(110000)")
        assert wait_until(lambda: kind_of("frozen"), timeout=90, message="wraparound autovacuum of frozen") == \
            "wraparound"
