"""The MySQL server dashboard (dbperf-mysql) and the MySQL parts of the Overview: MySQL and MariaDB
targets (``kind: mysql``), from the mysql_* families and the recording rules of
alerts/rules/mysql.yml. Called by generate.py with the production thresholds."""

from __future__ import annotations

from panels import custom_var, dashboard, gauge, query_var, row, stat, table, target, timeseries, value_map

RI = "$__rate_interval"
MY = 'job=~"$job", instance=~"$instance", target=~"$target"'
MYS = MY + ', schema=~"$schema"'
BY = "job, instance, target"
DBY = f"{BY}, schema, digest"           # one statement digest
TBY = f"{BY}, schema, table"
UID = "dbperf-mysql"
UP_MAP = value_map({0: ("down", "red"), 1: ("up", "green")})
READ_ONLY_MAP = value_map({0: ("read-write", "green"), 1: ("read-only", "blue")})


def variables() -> list:
    return [query_var("job", "Job", "label_values(mysql_up, job)"),
            query_var("instance", "Instance", 'label_values(mysql_up{job=~"$job"}, instance)'),
            query_var("target", "Target", 'label_values(mysql_up{job=~"$job", instance=~"$instance"}, target)')]


def server_link(text_field: str = "target") -> dict:
    """A data link from a table row (job, instance and target fields) to the MySQL dashboard."""
    return {"title": "Open the MySQL server dashboard",
            "url": f"/d/{UID}/dbperf-mysql-server?${{__url_time_range}}&var-datasource=${{datasource}}"
                   "&var-job=${__data.fields.job}&var-instance=${__data.fields.instance}"
                   "&var-target=${__data.fields." + text_field + "}", "targetBlank": False}


def series_link() -> dict:
    """A data link from a per-server series to the MySQL dashboard."""
    return {"title": "Open the MySQL server dashboard",
            "url": f"/d/{UID}/dbperf-mysql-server?${{__url_time_range}}&var-datasource=${{datasource}}"
                   "&var-job=${__field.labels.job}&var-instance=${__field.labels.instance}"
                   "&var-target=${__field.labels.target}", "targetBlank": False}


def with_text(expr: str) -> str:
    """``expr`` (one series per digest) with the digest's normalised text as a ``query`` label when
    dbperf exposes it (mysql_statements_query_info), and without it otherwise."""
    info = f"max by ({DBY}, query) (mysql_statements_query_info{{{MYS}}})"
    return f"({expr}) * on ({DBY}) group_left (query) {info} or on ({DBY}) ({expr})"


def grown(metric: str) -> str:
    return f'sum by ({DBY}) (increase({metric}{{{MYS}, digest!="other"}}[$__range]))'


def overview_items(T: dict, pg_selector: str) -> list:
    """The Overview's MySQL servers: a table (up, flavour and version, role, uptime, connections,
    threads running, replication lag, firing alerts) and the connections in use per server."""
    sel = pg_selector
    zero = f"0 * mysql_up{{{sel}}}"
    return [
        table("MySQL servers", "One row per monitored MySQL or MariaDB server: up, flavour, version, role, "
              "uptime, connections used of max_connections, threads running, replication lag (the heartbeat "
              "table's where the target reads one, else Seconds_Behind_Source; 0 on a server that replicates "
              "from nobody) and firing alerts. Click a target to open its MySQL server dashboard.",
              [target(f"mysql_up{{{sel}}}"),
               target(f"max by ({BY}, flavour, version, role) (mysql_server_info{{{sel}}})"),
               target(f"mysql_server_uptime_seconds{{{sel}}}"),
               target(f"dbperf:mysql_connections:use_ratio{{{sel}}}"),
               target(f"mysql_global_status_threads_running{{{sel}}}"),
               target(f"max by ({BY}) (mysql_replication_heartbeat_lag_seconds{{{sel}}} "
                      f"or mysql_replication_lag_seconds{{{sel}}}) or {zero}"),
               target(f'count by ({BY}) (ALERTS{{alertstate="firing", {sel}}}) or {zero}')],
              "none", h=7,
              columns={"flavour": "Flavour", "version": "Version", "role": "Role", "Value #A": "Up",
                       "Value #C": "Uptime", "Value #D": "Connections used", "Value #E": "Threads running",
                       "Value #F": "Replication lag", "Value #G": "Firing alerts", "target": "Target",
                       "job": "Job", "instance": "Instance"},
              hide=("Time", "Value #B"),
              units={"Uptime": "dtdurations", "Connections used": "percentunit", "Threads running": "none",
                     "Replication lag": "s", "Up": "none", "Firing alerts": "none"},
              links={"Target": server_link("target")},
              cell_colors={"Up": "color-background", "Connections used": "color-background",
                           "Firing alerts": "color-background"},
              mappings={"Up": UP_MAP}),
        linked(timeseries("MySQL connections used per server", "Threads_connected over max_connections per "
                          "MySQL server; dashed lines at the alert thresholds (the PostgreSQL ones).",
                          [target(f"dbperf:mysql_connections:use_ratio{{{sel}}}", "{{target}}")], "percentunit",
                          max_=1, thresholds=[T["connections_warning"], T["connections_critical"]])),
        linked(timeseries("MySQL queries per second per server", "Statements the server executed per second "
                          "(Queries, stored programs' statements included), per MySQL server.",
                          [target(f"sum by ({BY}) (rate(mysql_global_status_queries_total{{{sel}}}[{RI}]))",
                                  "{{target}}")], "ops")),
    ]


def linked(panel: dict) -> dict:
    panel["fieldConfig"]["defaults"]["links"] = [series_link()]
    return panel


def mysql(T: dict, secs) -> dict:
    """``T``: the production thresholds; ``secs(key)``: a duration threshold in seconds."""
    calls, spent = grown("mysql_statements_calls_total"), grown("mysql_statements_seconds_total")
    cols = {"schema": "Schema", "digest": "Digest", "query": "Query", "Value": "Value"}

    def top_table(title, description, expr, unit, value_name):
        return table(title, description, [target(with_text(expr))], unit, w=12, h=9,
                     columns={**cols, "Value": value_name}, hide=("Time", "job", "instance"),
                     units={value_name: unit}, sort=value_name)

    largest = f"topk($topn, mysql_table_data_bytes{{{MY}}} + mysql_table_index_bytes{{{MY}}})"
    status = lambda name: f"rate(mysql_global_status_{name}_total{{{MY}}}[{RI}])"  # noqa: E731
    items = [
        row("Server"),
        stat("Up", "1 when dbperf could connect to the server and query it in its last scrape.",
             [target(f"mysql_up{{{MY}}}", "{{target}}")], "none", mappings=UP_MAP, thresholds=[1], low_is_bad=True,
             w=3),
        stat("Version", "Server flavour (mysql or mariadb) and version.",
             [target(f"mysql_server_info{{{MY}}}", "{{flavour}} {{version}}", instant=True)], "none",
             text_mode="name", w=3),
        stat("Role", "primary, or replica when a replication channel is configured (MariaDB: running).",
             [target(f"mysql_server_info{{{MY}}}", "{{role}}", instant=True)], "none", text_mode="name", w=3),
        stat("Read only", "The server's read_only setting.",
             [target(f"mysql_server_read_only{{{MY}}}", "{{target}}")], "none", mappings=READ_ONLY_MAP, w=3),
        stat("Uptime", "Time since the server started.",
             [target(f"mysql_server_uptime_seconds{{{MY}}}", "{{target}}")], "dtdurations", w=3),
        gauge("Connections used", "Threads_connected over max_connections.",
              [target(f"dbperf:mysql_connections:use_ratio{{{MY}}}", "{{target}}")], "percentunit",
              thresholds=[T["connections_warning"], T["connections_critical"]], w=3),
        stat("Queries per second", "Statements executed per second (Queries).",
             [target(f"sum({status('queries')})", "qps")], "ops", graph=True, w=3),
        stat("Threads running", "Threads executing a statement now (Threads_running).",
             [target(f"sum(mysql_global_status_threads_running{{{MY}}})", "running")], "none",
             thresholds=[T["mysql_threads_running_warning"]], w=3),
        timeseries("Queries and questions", "Statements per second: Queries (all, stored programs' included) "
                   "and Questions (those clients sent), and slow queries (longer than long_query_time).",
                   [target(f"sum by (target) ({status(s)})", f"{s} {{{{target}}}}")
                    for s in ("queries", "questions", "slow_queries")], "ops"),
        timeseries("Connections vs max_connections", "Client connections open now, the most open at once since "
                   "the server started, and the limit.",
                   [target(f"mysql_global_status_threads_connected{{{MY}}}", "connected {{target}}"),
                    target(f"mysql_global_status_max_used_connections{{{MY}}}", "max used {{target}}"),
                    target(f"mysql_global_variables_max_connections{{{MY}}}", "max_connections {{target}}")],
                   "short"),
        timeseries("Threads", "Threads running a statement, client threads active and long-running (60 s or "
                   "more) in the processlist, and threads created per second (the thread cache missed).",
                   [target(f"mysql_global_status_threads_running{{{MY}}}", "running {{target}}"),
                    target(f"mysql_processlist_active_threads{{{MY}}}", "active {{target}}"),
                    target(f"mysql_processlist_long_running_threads{{{MY}}}", "long running {{target}}"),
                    target(f"sum by (target) ({status('threads_created')})", "created/s {{target}}")], "short",
                   thresholds=[T["mysql_threads_running_warning"]]),
        timeseries("Aborted connections", "Connections aborted per second: clients that died without closing "
                   "(aborted clients) and failed attempts to connect (wrong password, no privilege).",
                   [target(f"sum by (target) ({status('aborted_clients')})", "clients {{target}}"),
                    target(f"sum by (target) ({status('aborted_connects')})", "connects {{target}}")], "ops"),
        timeseries("Commands per second", "The ten most frequent statement commands (Com_*: select, insert, "
                   "update, delete, commit ...).",
                   [target(f"topk(10, sum by (command) (rate(mysql_global_status_commands_total{{{MY}}}[{RI}])))",
                           "{{command}}")], "ops"),
        timeseries("Oldest statement and metadata-lock waiters", "How long the longest-running active command "
                   "has run, and threads waiting for a metadata lock (behind DDL or a long transaction).",
                   [target(f"mysql_processlist_oldest_active_seconds{{{MY}}}", "oldest active {{target}}"),
                    target(f"mysql_processlist_metadata_lock_waiters{{{MY}}}", "MDL waiters {{target}}")], "short"),
        row("Statements (performance_schema digests)"),
        timeseries("Mean time of the slowest digests", "Mean time per call (5 minute rate; recording rule) of "
                   "the 10 digests with the highest mean.",
                   [target(f"topk(10, dbperf:mysql_statements_mean_seconds:rate5m{{{MYS}}})",
                           "{{schema}} {{digest}}")], "s", w=24),
        top_table("Top digests by total time", "Digests that spent the most execution time in the range "
                  "(digest text shown when statements' digest text is on).",
                  f"topk($topn, {spent})", "s", "Total time"),
        top_table("Top digests by calls", "Digests executed most often in the range.",
                  f"topk($topn, {calls})", "short", "Calls"),
        top_table("Rows examined per row sent", "Rows the digest's executions examined for each row they "
                  "returned, in the range: high values mean scans a better index would avoid.",
                  f"topk($topn, {grown('mysql_statements_rows_examined_total')} / "
                  f"({grown('mysql_statements_rows_sent_total')} > 0))", "short", "Examined per sent"),
        top_table("Top digests by errors", "Executions that raised an error, per digest, in the range "
                  "(0 for all when nothing failed).",
                  f"topk($topn, {grown('mysql_statements_errors_total')})", "short", "Errors"),
        row("InnoDB"),
        timeseries("Buffer pool hit ratio", "Logical page reads served from the buffer pool over all reads "
                   "(5 minute rate; recording rule).",
                   [target(f"dbperf:mysql_innodb_buffer_pool:hit_ratio_rate5m{{{MY}}}", "{{target}}")],
                   "percentunit", max_=1, w=8),
        timeseries("Buffer pool pages", "Buffer pool pages by state (dirty pages are also data pages).",
                   [target(f"mysql_innodb_buffer_pool_pages{{{MY}}}", "{{state}} {{target}}")], "short", w=8),
        timeseries("History list length", "Undo records not purged yet: a long-running transaction makes it "
                   "grow; dashed line at the alert threshold.",
                   [target(f"mysql_innodb_history_list_length{{{MY}}}", "{{target}}")], "short",
                   thresholds=[T["mysql_history_list_warning"]], w=8),
        timeseries("Row lock waits", "Row lock waits per second, seconds spent waiting per second (the average "
                   "number of sessions waiting) and operations waiting now.",
                   [target(f"rate(mysql_innodb_row_lock_waits_total{{{MY}}}[{RI}])", "waits/s {{target}}"),
                    target(f"rate(mysql_innodb_row_lock_wait_seconds_total{{{MY}}}[{RI}])",
                           "seconds waited/s {{target}}"),
                    target(f"mysql_innodb_row_lock_current_waits{{{MY}}}", "waiting now {{target}}")], "short",
                   thresholds=[T["mysql_row_lock_wait_sessions"]], w=8),
        timeseries("Deadlocks", "Deadlocks InnoDB detected per second (each rolled a transaction back).",
                   [target(f"rate(mysql_innodb_deadlocks_total{{{MY}}}[{RI}])", "{{target}}")], "ops", w=8),
        timeseries("Checkpoint age", "Redo log written since the last checkpoint, against the age at which "
                   "InnoDB forces a flush (MariaDB reports it).",
                   [target(f"mysql_innodb_checkpoint_age_bytes{{{MY}}}", "age {{target}}"),
                    target(f"mysql_innodb_checkpoint_max_age_bytes{{{MY}}}", "max age {{target}}")], "bytes", w=8),
        timeseries("Handler reads and writes", "Row reads by kind (key: index lookups, rnd_next: table scans "
                   "...) and row writes by operation, per second, from the storage engines' handler interface.",
                   [target(f"sum by (kind) (rate(mysql_global_status_handler_reads_total{{{MY}}}[{RI}]))",
                           "read {{kind}}"),
                    target(f"sum by (operation) (rate(mysql_global_status_handler_writes_total{{{MY}}}[{RI}]))",
                           "write {{operation}}")], "ops", w=12),
        timeseries("Temporary tables on disk and sort merge passes", "Internal temporary tables created on "
                   "disk and sort merge passes per second (tmp_table_size and sort_buffer_size too small).",
                   [target(f"sum by (target) ({status('created_tmp_disk_tables')})", "tmp disk tables {{target}}"),
                    target(f"sum by (target) ({status('sort_merge_passes')})", "sort merge passes {{target}}")],
                   "ops", w=12),
        row("Replication"),
        timeseries("Replication threads", "1 when the replica's I/O thread (receiving) and SQL thread "
                   "(applying) run, per channel; no series on a server that replicates from nobody.",
                   [target(f"mysql_replication_io_thread_running{{{MY}}}", "I/O {{target}} {{channel}}"),
                    target(f"mysql_replication_sql_thread_running{{{MY}}}", "SQL {{target}} {{channel}}")],
                   "short", max_=1, w=6),
        timeseries("Replication lag", "Seconds_Behind_Source per channel (no sample while the SQL thread does "
                   "not run) and, where the target reads a heartbeat table (replication.heartbeat_table), the "
                   "replica's clock minus the source's newest heartbeat (it grows while nothing is applied; a "
                   "clock skew is in it); dashed lines at the alert thresholds.",
                   [target(f"mysql_replication_lag_seconds{{{MY}}}", "behind {{target}} {{channel}}"),
                    target(f"mysql_replication_heartbeat_lag_seconds{{{MY}}}", "heartbeat {{target}} {{channel}}")],
                   "s", thresholds=[secs("replication_lag_warning"), secs("replication_lag_critical")], w=6),
        timeseries("GTID transactions behind", "Transactions the replica received and has not applied yet, per "
                   "channel and GTID domain (MariaDB: Gtid_IO_Pos minus gtid_slave_pos; MySQL: Retrieved_Gtid_Set "
                   "minus Executed_Gtid_Set per source UUID).",
                   [target(f"mysql_replication_gtid_transactions_behind{{{MY}}}",
                           "{{target}} {{channel}} domain {{domain}}")], "short", w=6),
        timeseries("Replication errors", "The I/O and SQL threads' last error numbers per channel (0: none).",
                   [target(f"mysql_replication_last_io_error_number{{{MY}}}", "I/O {{target}} {{channel}}"),
                    target(f"mysql_replication_last_sql_error_number{{{MY}}}", "SQL {{target}} {{channel}}")],
                   "none", w=6),
        row("Tables"),
        table("Largest tables", "Data and index size and estimated rows of the largest tables "
              "(information_schema.tables).",
              [target(largest), target(f"mysql_table_index_bytes{{{MY}}} and on ({TBY}) ({largest})"),
               target(f"mysql_table_rows{{{MY}}} and on ({TBY}) ({largest})")], "bytes", h=9,
              columns={"schema": "Schema", "table": "Table", "Value #A": "Size", "Value #B": "Index size",
                       "Value #C": "Rows"},
              hide=("Time", "job", "instance", "__name__"), units={"Rows": "short"}, sort="Size"),
    ]
    variables_ = [*variables(),
                  query_var("schema", "Schema", 'label_values(mysql_statements_calls_total{job=~"$job", '
                                                'instance=~"$instance", target=~"$target"}, schema)'),
                  custom_var("topn", "Top N", ["5", "10", "20", "50"], "10")]
    return dashboard(UID, "dbperf / MySQL server",
                     "One MySQL or MariaDB server (kind: mysql): connections, threads and traffic, the top "
                     "statement digests, InnoDB's buffer pool, locks, deadlocks and undo history, replication "
                     "and the largest tables.", variables_, items, tags=("mysql",))

