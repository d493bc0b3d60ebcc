-- Flow control (docs/flow-control.md): one row per paused queue. Workers read the (usually
-- empty) set and leave its queues out of their claim; a NOTIFY on the wake-up channel tells
-- them to re-read it, and the heartbeat re-reads it as the fallback.

CREATE TABLE IF NOT EXISTS {schema}.soniq_paused_queues (
    queue     text        PRIMARY KEY,
    paused_at timestamptz NOT NULL DEFAULT now()
);

-- Concurrency limits (soniq/limits.py). A job of a limited task carries the counter row it
-- counts against (limit_scope, limit_key); NULL for every other job, which the plain claim
-- takes as before. One counter row per limit (per task, or per task and concurrency key):
-- `running` is raised by the claim that admits a job, holding the row locked, and lowered by
-- the trigger below when the job leaves `processing` by any path (outcome, rescue, return,
-- abort), in that same statement.
ALTER TABLE {schema}.soniq_jobs ADD COLUMN IF NOT EXISTS limit_scope text;
ALTER TABLE {schema}.soniq_jobs ADD COLUMN IF NOT EXISTS limit_key text;

CREATE TABLE IF NOT EXISTS {schema}.soniq_limits (
    scope   text    NOT NULL,
    key     text    NOT NULL,
    max     integer NOT NULL CHECK (max >= 1),
    running integer NOT NULL DEFAULT 0 CHECK (running >= 0),
    PRIMARY KEY (scope, key)
);

-- The plain claim's index leaves limited jobs out, so a backlog of held jobs never costs the
-- plain claim a walk (rebuilt once here; same name, same columns, a narrower predicate).
DROP INDEX IF EXISTS {schema}.soniq_jobs_claim_idx;
CREATE INDEX soniq_jobs_claim_idx
    ON {schema}.soniq_jobs (priority, scheduled_at, id)
    WHERE status = 'queued' AND limit_scope IS NULL;

-- Due jobs of one limit, in claim order (only limited jobs are in it).
CREATE INDEX IF NOT EXISTS soniq_jobs_limited_idx
    ON {schema}.soniq_jobs (limit_scope, limit_key, priority, scheduled_at, id)
    WHERE status = 'queued' AND limit_scope IS NOT NULL;

CREATE OR REPLACE FUNCTION {schema}.soniq_limit_release() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.soniq_limits SET running = GREATEST(running - 1, 0)
    WHERE scope = OLD.limit_scope AND key = OLD.limit_key;
    -- a slot is free: wake the workers now rather than at their next poll
    PERFORM pg_notify('soniq_' || TG_TABLE_SCHEMA, OLD.queue);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS soniq_limit_release ON {schema}.soniq_jobs;
CREATE TRIGGER soniq_limit_release
    AFTER UPDATE OF status ON {schema}.soniq_jobs FOR EACH ROW
    WHEN (OLD.status = 'processing' AND NEW.status <> 'processing'
          AND OLD.limit_scope IS NOT NULL)
    EXECUTE FUNCTION {schema}.soniq_limit_release();

DROP TRIGGER IF EXISTS soniq_limit_release_deleted ON {schema}.soniq_jobs;
CREATE TRIGGER soniq_limit_release_deleted
    AFTER DELETE ON {schema}.soniq_jobs FOR EACH ROW
    WHEN (OLD.status = 'processing' AND OLD.limit_scope IS NOT NULL)
    EXECUTE FUNCTION {schema}.soniq_limit_release();
