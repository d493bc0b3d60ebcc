-- soniq schema, version 1. "{schema}" is replaced by the configured schema (validated name).

CREATE TABLE IF NOT EXISTS {schema}.soniq_jobs (
    id                 uuid PRIMARY KEY,
    job_name           text        NOT NULL,
    queue              text        NOT NULL DEFAULT 'default',
    priority           integer     NOT NULL DEFAULT 100,
    args               jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status             text        NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'processing', 'done', 'cancelled', 'dead_letter')),
    attempts           integer     NOT NULL DEFAULT 0,
    max_attempts       integer     NOT NULL DEFAULT 4 CHECK (max_attempts >= 1),
    created_at         timestamptz NOT NULL DEFAULT now(),
    scheduled_at       timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    last_error         text,
    errors             jsonb,
    worker_id          text,
    result             jsonb,
    dedup_key          text,
    dead_reason        text,
    dead_lettered_at   timestamptz,
    resurrection_count integer     NOT NULL DEFAULT 0
);

-- The claim order, on due-or-future queued rows only: a claim never sorts the backlog.
CREATE INDEX IF NOT EXISTS soniq_jobs_claim_idx
    ON {schema}.soniq_jobs (priority, scheduled_at, id) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS soniq_jobs_claim_queue_idx
    ON {schema}.soniq_jobs (queue, priority, scheduled_at, id) WHERE status = 'queued';
-- At most one active job per dedup key.
CREATE UNIQUE INDEX IF NOT EXISTS soniq_jobs_dedup_idx
    ON {schema}.soniq_jobs (dedup_key)
    WHERE dedup_key IS NOT NULL AND status IN ('queued', 'processing');
-- Jobs being run, for rescue. Keyed by id, not worker_id: the per-outcome updates join on id,
-- and an index on worker_id would tempt the planner into walking every (dead) entry a busy
-- worker ever left there.
CREATE INDEX IF NOT EXISTS soniq_jobs_processing_idx
    ON {schema}.soniq_jobs (id) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS soniq_jobs_finished_idx
    ON {schema}.soniq_jobs (finished_at) WHERE status IN ('done', 'cancelled');
CREATE INDEX IF NOT EXISTS soniq_jobs_dead_idx
    ON {schema}.soniq_jobs (dead_lettered_at) WHERE status = 'dead_letter';

-- The job table churns: vacuum it early so dead tuples never pile up under the claim index.
ALTER TABLE {schema}.soniq_jobs SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0,
    fillfactor = 90
);

CREATE TABLE IF NOT EXISTS {schema}.soniq_workers (
    id           text PRIMARY KEY,
    hostname     text        NOT NULL,
    pid          integer     NOT NULL,
    queues       text[],
    concurrency  integer     NOT NULL,
    in_flight    integer     NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz
);

-- One row per periodic schedule: when it last fired and when it fires next.
CREATE TABLE IF NOT EXISTS {schema}.soniq_schedules (
    name             text PRIMARY KEY,
    job_name         text        NOT NULL,
    spec             text        NOT NULL,
    timezone         text        NOT NULL DEFAULT 'UTC',
    last_tick        timestamptz,
    last_enqueued_at timestamptz,
    next_run_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The unique key that makes a periodic tick enqueue at most once, whoever leads.
CREATE TABLE IF NOT EXISTS {schema}.soniq_periodic_ticks (
    schedule_name text        NOT NULL,
    tick          timestamptz NOT NULL,
    job_id        uuid        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule_name, tick)
);
