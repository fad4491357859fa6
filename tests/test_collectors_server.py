"""Cluster-wide catalog collectors against a real PostgreSQL: each number is compared with what the
test did or with the server's own view read directly, never with a copy of the exporter's SQL."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from conftest import SECOND_DB, make_config, wait_until

pytestmark = pytest.mark.pg


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def one(pg, sql, db="postgres", params=None):
    return pg.execute(sql, db, params)[0][0]


def flush_stats(conn) -> None:
    """Make this session's pending statistics visible now (PostgreSQL 15+), else wait for the
    periodic flush."""
    if conn.info.server_version >= 150000:
        conn.execute("SELECT pg_stat_force_next_flush()")
    else:  # pragma: no cover - older servers flush within about half a second of going idle
        time.sleep(1.0)


def only(pg, **collectors_on):
    """A target that runs only the named collectors (plus the self-metrics); a value may be a
    collector's settings (``{"ttl": 0}``) instead of True."""
    from exporter.registry import all_collectors

    return make_config(pg, {"collectors": {c.name: collectors_on.get(c.name, False) for c in all_collectors()}})


# -- server and settings ---------------------------------------------------------------------
def test_server_info_matches_the_server(pg, serve):
    samples = serve(only(pg, server=True)).metrics()
    version, num, start, reload = pg.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num'), "
        "extract(epoch FROM pg_postmaster_start_time())::float8, extract(epoch FROM pg_conf_load_time())::float8")[0]
    info = samples.series("pg_server_info", target="main")
    assert len(info) == 1 and info[0].value == 1
    assert info[0].labels["version"] == version
    assert info[0].labels["server_version_num"] == num
    assert info[0].labels["short_version"] == version.split(".")[0]
    assert info[0].labels["role"] == "primary"
    assert samples.value("pg_replication_is_replica") == 0
    assert samples.value("pg_postmaster_start_time_seconds") == pytest.approx(start, abs=1e-3)
    assert abs(samples.value("pg_postmaster_start_time_seconds") - time.time()) < 24 * 3600
    assert samples.value("pg_config_last_reload_timestamp_seconds") == pytest.approx(reload, abs=1e-3)


def test_settings_are_served_in_seconds_bytes_and_booleans(pg, serve):
    # session settings given through the DSN are what dbperf's own session sees in pg_settings
    options = "-c work_mem=3MB -c idle_in_transaction_session_timeout=2500 -c enable_seqscan=off"
    config = make_config(pg, {"dsn": pg.dsn("postgres", options=options),
                              "collectors": {"settings": True}})
    samples = serve(config).metrics()
    shared_buffers_blocks, block_unit = pg.execute(
        "SELECT setting::bigint, unit FROM pg_settings WHERE name = 'shared_buffers'")[0]
    assert block_unit == "8kB"
    assert samples.value("pg_settings_shared_buffers_bytes") == shared_buffers_blocks * 8192
    assert samples.value("pg_settings_shared_buffers_bytes") == 128 * 1024 * 1024  # the test cluster's value
    assert samples.value("pg_settings_work_mem_bytes") == 3 * 1024 * 1024
    assert samples.value("pg_settings_idle_in_transaction_session_timeout_seconds") == 2.5  # ms -> s
    checkpoint_timeout = one(pg, "SELECT setting::float8 FROM pg_settings WHERE name = 'checkpoint_timeout'")
    assert samples.value("pg_settings_checkpoint_timeout_seconds") == checkpoint_timeout  # unit s
    assert samples.value("pg_settings_deadlock_timeout_seconds") == pytest.approx(
        one(pg, "SELECT setting::float8 / 1000 FROM pg_settings WHERE name = 'deadlock_timeout'"))
    assert samples.value("pg_settings_enable_seqscan") == 0
    assert samples.value("pg_settings_enable_hashjoin") == 1
    assert samples.value("pg_settings_max_connections") == 200
    # a name Prometheus reserves for summaries/histograms gets _value appended
    assert samples.has("pg_settings_tcp_keepalives_count_value")
    assert not samples.has("pg_settings_tcp_keepalives_count")
    # string settings are not numbers: absent
    assert not samples.has("pg_settings_datestyle")
    names = {n for n in samples.names() if n.startswith("pg_settings_")}
    assert len(names) > 100
    assert not [n for n in names if n.endswith(("_count", "_sum", "_bucket", "_total", "_info"))]


def test_settings_are_the_servers_not_those_dbperf_sets_in_its_own_session(pg, serve):
    """dbperf's session sets jit, lock_timeout, statement_timeout and read-only for itself; the
    settings served are what any session connecting with the DSN gets."""
    config = make_config(pg, {"collectors": {"settings": {"timeout": 3}}})
    samples = serve(config).metrics()
    expected = dict(pg.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('jit', 'lock_timeout', 'statement_timeout', "
        "'default_transaction_read_only')"))
    assert samples.value("pg_settings_jit") == (1 if expected["jit"] == "on" else 0)
    assert samples.value("pg_settings_default_transaction_read_only") == (
        1 if expected["default_transaction_read_only"] == "on" else 0)
    assert samples.value("pg_settings_lock_timeout_seconds") == float(expected["lock_timeout"]) / 1000
    assert samples.value("pg_settings_statement_timeout_seconds") == float(expected["statement_timeout"]) / 1000
    assert samples.value("pg_settings_default_transaction_read_only") == 0  # the test cluster's default


# -- stat_database -------------------------------------------------------------------------------
def test_commits_and_rollbacks_are_counted_in_the_right_database(pg, serve):
    served = serve(only(pg, stat_database=True))
    before = served.metrics()
    commits0 = before.value("pg_stat_database_xact_commit_total", datname=SECOND_DB)
    rollbacks0 = before.value("pg_stat_database_xact_rollback_total", datname=SECOND_DB)
    with psycopg.connect(pg.dsn(SECOND_DB)) as conn:  # not autocommit: one transaction per commit
        for _ in range(7):
            conn.execute("SELECT 1")
            conn.commit()
        for _ in range(4):
            conn.execute("SELECT 1")
            conn.rollback()
        conn.autocommit = True
        flush_stats(conn)

    def grown():
        s = served.metrics()
        return (s.value("pg_stat_database_xact_commit_total", datname=SECOND_DB) - commits0 >= 7
                and s.value("pg_stat_database_xact_rollback_total", datname=SECOND_DB) - rollbacks0 >= 4) and s

    after = wait_until(grown, timeout=5, message="commits and rollbacks to show")
    assert after.families["pg_stat_database_xact_commit"].type == "counter"
    assert after.value("pg_stat_database_numbackends", datname=SECOND_DB) >= 0


def test_sessions_are_counted_from_14(pg, serve):
    served = serve(only(pg, stat_database=True))
    if int(one(pg, "SHOW server_version_num")) < 140000:  # an external DBPERF_TEST_DSN on PostgreSQL 13
        assert not served.metrics().has("pg_stat_database_sessions_total")
        return
    sessions0 = served.metrics().value("pg_stat_database_sessions_total", datname=SECOND_DB)
    for _ in range(3):
        with pg.connect(SECOND_DB) as conn:
            conn.execute("SELECT 1")
    after = wait_until(lambda: (s := served.metrics()).value("pg_stat_database_sessions_total", datname=SECOND_DB)
                       >= sessions0 + 3 and s, timeout=5, message="three sessions to be counted")
    session_ms = one(pg, "SELECT session_time FROM pg_stat_database WHERE datname = %s", params=(SECOND_DB,))
    assert 0 < after.value("pg_stat_database_session_time_seconds_total", datname=SECOND_DB) <= session_ms / 1000 + 1e-9


def test_temp_bytes_after_a_sort_that_spills(pg, serve):
    served = serve(only(pg, stat_database=True))
    before = served.metrics()
    files0 = before.value("pg_stat_database_temp_files_total", datname=SECOND_DB)
    bytes0 = before.value("pg_stat_database_temp_bytes_total", datname=SECOND_DB)
    with pg.connect(SECOND_DB) as conn:
        conn.execute("SET work_mem = '64kB'")
        conn.execute("SELECT g FROM generate_series(1, 200000) g ORDER BY g DESC").fetchall()
        flush_stats(conn)

    def grown():
        s = served.metrics()
        return s.value("pg_stat_database_temp_files_total", datname=SECOND_DB) > files0 and s

    after = wait_until(grown, timeout=5, message="a temp file to be counted")
    # 200000 integers sorted on disk: well over a megabyte
    assert after.value("pg_stat_database_temp_bytes_total", datname=SECOND_DB) - bytes0 > 1024 * 1024


def test_deadlocks_are_counted(pg, serve):
    table = unique("dl")
    pg.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, v int); INSERT INTO {table} VALUES (1, 0), (2, 0)",
               SECOND_DB)
    served = serve(only(pg, stat_database=True))
    deadlocks0 = served.metrics().value("pg_stat_database_deadlocks_total", datname=SECOND_DB)
    a, b = psycopg.connect(pg.dsn(SECOND_DB)), psycopg.connect(pg.dsn(SECOND_DB))
    errors = []
    try:
        for conn in (a, b):
            conn.execute("SET deadlock_timeout = '100ms'")
        a.execute(f"UPDATE {table} SET v = 1 WHERE id = 1")
        b.execute(f"UPDATE {table} SET v = 1 WHERE id = 2")

        def a_second():
            try:
                a.execute(f"UPDATE {table} SET v = 2 WHERE id = 2")
            except psycopg.errors.DeadlockDetected as exc:
                errors.append(exc)

        thread = threading.Thread(target=a_second)
        thread.start()
        wait_until(lambda: one(pg, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                   "AND query LIKE %s", SECOND_DB, (f"UPDATE {table} SET v = 2%",)),
                   timeout=5, interval=0.05, message="session a to wait")
        try:
            b.execute(f"UPDATE {table} SET v = 2 WHERE id = 1")
        except psycopg.errors.DeadlockDetected as exc:
            errors.append(exc)
        thread.join(timeout=10)
        assert len(errors) == 1, errors  # exactly one of the two was chosen as the victim
        for conn in (a, b):
            conn.rollback()
            conn.autocommit = True
            flush_stats(conn)
    finally:
        a.close()
        b.close()
        pg.execute(f"DROP TABLE {table}", SECOND_DB)

    wait_until(lambda: served.metrics().value("pg_stat_database_deadlocks_total", datname=SECOND_DB) >= deadlocks0 + 1,
               timeout=5, message="the deadlock to be counted")


def test_block_times_are_seconds_and_block_counts_bytes(pg, serve):
    served = serve(only(pg, stat_database=True))
    query = ("SELECT blk_read_time, blk_write_time, blks_hit, current_setting('block_size')::int "
             "FROM pg_stat_database WHERE datname = 'postgres'")
    read_ms0, write_ms0, hits0, block = pg.execute(query)[0]
    samples = served.metrics()
    read_ms1, write_ms1, hits1, _ = pg.execute(query)[0]
    assert read_ms1 > 0, "track_io_timing is on in the test cluster: some read time is expected"
    read_s = samples.value("pg_stat_database_blk_read_seconds_total", datname="postgres")
    assert read_ms0 / 1000 - 1e-9 <= read_s <= read_ms1 / 1000 + 1e-9
    write_s = samples.value("pg_stat_database_blk_write_seconds_total", datname="postgres")
    assert write_ms0 / 1000 - 1e-9 <= write_s <= write_ms1 / 1000 + 1e-9
    hit_bytes = samples.value("pg_stat_database_blks_hit_bytes_total", datname="postgres")
    assert hit_bytes % block == 0
    assert hits0 * block <= hit_bytes <= hits1 * block
    assert samples.value("pg_stat_database_blks_hit_total", datname="postgres") == hit_bytes / block


# -- database_size -------------------------------------------------------------------------------
def test_database_size_and_its_cache(pg, serve):
    table = unique("size")
    cached = serve(only(pg, database_size=True))
    fresh = serve(only(pg, database_size={"ttl": 0}))
    try:
        first = cached.metrics()
        size = one(pg, "SELECT pg_database_size(%s)", params=(SECOND_DB,))
        assert first.value("pg_database_size_bytes", datname=SECOND_DB) == pytest.approx(size, abs=256 * 1024)
        assert first.value("pg_database_connection_limit", datname=SECOND_DB) == -1
        assert first.value("dbperf_collector_cache_age_seconds", collector="database_size") == 0
        assert not first.has("pg_database_size_bytes", datname="template0")

        pg.execute(f"CREATE TABLE {table} AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 20000) g",
                   SECOND_DB)
        grown = one(pg, "SELECT pg_database_size(%s)", params=(SECOND_DB,))
        assert grown - size > 3 * 1024 * 1024
        time.sleep(0.05)
        second = cached.metrics()  # ttl 300 s: the first value, served from the cache
        assert second.value("pg_database_size_bytes", datname=SECOND_DB) == first.value(
            "pg_database_size_bytes", datname=SECOND_DB)
        assert second.value("dbperf_collector_cache_age_seconds", collector="database_size") > 0
        assert second.value("dbperf_collector_success", collector="database_size") == 1

        for _ in range(2):  # ttl 0: recomputed on every scrape
            samples = fresh.metrics()
            assert samples.value("dbperf_collector_cache_age_seconds", collector="database_size") == 0
            assert samples.value("pg_database_size_bytes", datname=SECOND_DB) == pytest.approx(grown, abs=256 * 1024)
    finally:
        pg.execute(f"DROP TABLE IF EXISTS {table}", SECOND_DB)


# -- wraparound ----------------------------------------------------------------------------------
def test_xid_age_matches_age_of_datfrozenxid(pg, serve):
    query = "SELECT age(datfrozenxid), current_setting('autovacuum_freeze_max_age')::float8 FROM pg_database WHERE datname = %s"
    age0, freeze_max = pg.execute(query, params=(SECOND_DB,))[0]
    samples = serve(only(pg, wraparound=True)).metrics()
    age1, _ = pg.execute(query, params=(SECOND_DB,))[0]
    xid_age = samples.value("pg_database_xid_age", datname=SECOND_DB)
    assert age0 <= xid_age <= age1
    assert samples.value("pg_database_xid_age_autovacuum_freeze_max_age_ratio", datname=SECOND_DB) == pytest.approx(
        xid_age / freeze_max)
    assert samples.value("pg_database_mxid_age", datname=SECOND_DB) >= 0


# -- checkpointer, bgwriter, wal, archiver -------------------------------------------------------
def test_checkpoint_raises_requested_checkpoints(pg, serve):
    served = serve(only(pg, checkpointer=True, bgwriter=True))
    before = served.metrics()
    requested0 = before.value("pg_stat_checkpointer_num_requested_total")
    pg.execute("CHECKPOINT")
    after = wait_until(lambda: (s := served.metrics()).value("pg_stat_checkpointer_num_requested_total")
                       >= requested0 + 1 and s, timeout=5, message="the CHECKPOINT to be counted")
    assert after.value("pg_stat_checkpointer_num_timed_total") >= 0
    # restartpoints exist only from 17 on a replica's statistics: NULL before, so no sample
    version = one(pg, "SHOW server_version_num")
    assert after.has("pg_stat_checkpointer_restartpoints_done_total") == (int(version) >= 170000)
    if int(version) < 170000:
        write_ms = one(pg, "SELECT checkpoint_write_time FROM pg_stat_bgwriter")
        assert after.value("pg_stat_checkpointer_write_time_seconds_total") <= write_ms / 1000 + 1e-9
        block = int(one(pg, "SHOW block_size"))
        assert after.value("pg_stat_checkpointer_buffers_written_bytes_total") % block == 0
        assert after.value("pg_stat_bgwriter_buffers_alloc_bytes_total") % block == 0
        assert after.value("pg_stat_bgwriter_buffers_alloc_bytes_total") > 0


def test_wal_position_grows_with_writes(pg, serve):
    table = unique("wal")
    served = serve(only(pg, wal=True))
    lsn = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8"
    low = one(pg, lsn)
    first = served.metrics()
    high = one(pg, lsn)
    position = first.value("pg_wal_lsn_bytes_total")
    assert low <= position <= high
    try:
        pg.execute(f"CREATE TABLE {table} AS SELECT g FROM generate_series(1, 10000) g", SECOND_DB)
        second = served.metrics()
        assert second.value("pg_wal_lsn_bytes_total") - position > 100_000  # 10000 rows of WAL
    finally:
        pg.execute(f"DROP TABLE {table}", SECOND_DB)
    assert first.families["pg_wal_lsn_bytes"].type == "counter"
    segments, size = pg.execute("SELECT count(*), sum(size) FROM pg_ls_waldir()")[0]
    assert second.value("pg_wal_segments") >= 1
    assert second.value("pg_wal_size_bytes") % (16 * 1024 * 1024) == 0  # whole default-size segments
    if int(one(pg, "SHOW server_version_num")) >= 140000:
        assert second.value("pg_stat_wal_records_total") > first.value("pg_stat_wal_records_total")
        assert second.value("pg_stat_wal_bytes_total") > first.value("pg_stat_wal_bytes_total")


def test_archiver_matches_pg_stat_archiver(pg, serve):
    samples = serve(only(pg, archiver=True)).metrics()
    archived, failed, mode = pg.execute(
        "SELECT archived_count, failed_count, current_setting('archive_mode') FROM pg_stat_archiver")[0]
    assert samples.value("pg_stat_archiver_archived_total") == archived
    assert samples.value("pg_stat_archiver_failed_total") == failed
    assert samples.value("pg_stat_archiver_enabled") == (0 if mode == "off" else 1)
    assert not samples.has("pg_stat_archiver_last_archive_timestamp_seconds")  # never archived: NULL


# -- replication ---------------------------------------------------------------------------------
def test_replication_slot_and_no_lag_on_a_primary(pg, serve):
    slot = unique("slot")
    table = unique("slotwal")
    pg.execute("SELECT pg_create_physical_replication_slot(%s, true)", params=(slot,))
    try:
        pg.execute(f"CREATE TABLE {table} AS SELECT g FROM generate_series(1, 5000) g", SECOND_DB)
        samples = serve(only(pg, replication=True)).metrics()
        retained = one(pg, "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::float8 "
                           "FROM pg_replication_slots WHERE slot_name = %s", params=(slot,))
        labels = dict(slot_name=slot, slot_type="physical", database="")
        assert samples.value("pg_replication_slots_active", **labels) == 0
        value = samples.value("pg_replication_slots_retained_wal_bytes", **labels)
        assert 0 < value <= retained
        # max_slot_wal_keep_size = -1 (unlimited): safe_wal_size is NULL, so no sample
        assert not samples.has("pg_replication_slots_safe_wal_size_bytes", slot_name=slot)
        # a primary has no replay lag
        assert not samples.has("pg_replication_lag_seconds")
        assert not samples.has("pg_replication_last_replay_timestamp_seconds")
        assert not samples.has("pg_stat_replication_lag_bytes")
    finally:
        pg.execute("SELECT pg_drop_replication_slot(%s)", params=(slot,))
        pg.execute(f"DROP TABLE IF EXISTS {table}", SECOND_DB)
