"""The generic runs table, printed by ``dbperf pipelines init-sql``."""

from __future__ import annotations

SCHEMA = "dbperf"
TABLE = "pipeline_runs"
STATUSES = ("queued", "running", "success", "failed")
FINISHED = ("success", "failed")
ACTIVE = ("queued", "running")

SQL = """\
-- dbperf pipeline runs: one row per run, written by exporter.pipelines.record_run or
-- `dbperf pipelines run`, read by dbperf's pipelines collector.
CREATE SCHEMA IF NOT EXISTS dbperf;

CREATE TABLE IF NOT EXISTS dbperf.pipeline_runs (
    pipeline       text        NOT NULL,
    run_id         text        NOT NULL,
    status         text        NOT NULL DEFAULT 'running'
                   CHECK (status IN ('queued', 'running', 'success', 'failed')),
    started_at     timestamptz,
    finished_at    timestamptz,
    rows_processed bigint      NOT NULL DEFAULT 0,
    errors         bigint      NOT NULL DEFAULT 0,
    trigger        text,
    error_message  text,
    PRIMARY KEY (pipeline, run_id),
    CHECK ((status IN ('success', 'failed')) = (finished_at IS NOT NULL))
);

-- finished runs by finish time: dbperf's incremental reads (a window of recent finishes)
CREATE INDEX IF NOT EXISTS pipeline_runs_finished_idx
    ON dbperf.pipeline_runs (finished_at) WHERE status IN ('success', 'failed');
-- runs in flight: running/queued counts and the oldest running run
CREATE INDEX IF NOT EXISTS pipeline_runs_active_idx
    ON dbperf.pipeline_runs (pipeline, started_at) WHERE status IN ('queued', 'running');

-- a role for jobs that record runs, and one for dbperf that reads them (adapt the names):
-- GRANT USAGE ON SCHEMA dbperf TO etl_jobs, dbperf;
-- GRANT SELECT, INSERT, UPDATE ON dbperf.pipeline_runs TO etl_jobs;
-- GRANT SELECT ON dbperf.pipeline_runs TO dbperf;
"""
