-- soniq schema, version 3: job control (abort, wait/progress, expiry, idempotency keys, tags).
-- Only nullable columns (or a constant default) are added: no table rewrite, and a database
-- with jobs queued and running upgrades in place.

ALTER TABLE {schema}.soniq_jobs
    ADD COLUMN IF NOT EXISTS cancel_requested_at timestamptz,
    ADD COLUMN IF NOT EXISTS cancel_reason       text,
    ADD COLUMN IF NOT EXISTS expires_at          timestamptz,
    ADD COLUMN IF NOT EXISTS tags                jsonb,
    ADD COLUMN IF NOT EXISTS progress            real,
    ADD COLUMN IF NOT EXISTS progress_message    text,
    ADD COLUMN IF NOT EXISTS watched             boolean NOT NULL DEFAULT false;

-- The heartbeat's fallback read: aborts asked of a worker's running jobs.
CREATE INDEX IF NOT EXISTS soniq_jobs_abort_idx
    ON {schema}.soniq_jobs (worker_id)
    WHERE status = 'processing' AND cancel_requested_at IS NOT NULL;
-- Maintenance's sweep of queued jobs past their expiry.
CREATE INDEX IF NOT EXISTS soniq_jobs_expiry_idx
    ON {schema}.soniq_jobs (expires_at)
    WHERE status = 'queued' AND expires_at IS NOT NULL;
-- list_jobs(tags=...): containment on the tags of the jobs that have any.
CREATE INDEX IF NOT EXISTS soniq_jobs_tags_idx
    ON {schema}.soniq_jobs USING gin (tags jsonb_path_ops)
    WHERE tags IS NOT NULL;

-- Idempotency keys: remembered for idempotency_ttl whatever happens to the job.
CREATE TABLE IF NOT EXISTS {schema}.soniq_idempotency (
    key          text PRIMARY KEY,
    request_hash text        NOT NULL,
    job_id       uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS soniq_idempotency_expires_idx
    ON {schema}.soniq_idempotency (expires_at);

-- A watched job (someone waits on it) tells its listeners when its status or progress
-- changes. The WHEN clause is checked before an event is queued, so jobs nobody watches pay
-- nothing and send no NOTIFY. The payload is the job id; listeners re-read the row.
CREATE OR REPLACE FUNCTION {schema}.soniq_job_watched_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('soniq_' || TG_TABLE_SCHEMA || '_events', NEW.id::text);
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS soniq_jobs_watched ON {schema}.soniq_jobs;
CREATE TRIGGER soniq_jobs_watched
    AFTER UPDATE ON {schema}.soniq_jobs
    FOR EACH ROW
    WHEN (NEW.watched AND (OLD.status IS DISTINCT FROM NEW.status
                           OR OLD.progress IS DISTINCT FROM NEW.progress
                           OR OLD.progress_message IS DISTINCT FROM NEW.progress_message
                           OR OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at))
    EXECUTE FUNCTION {schema}.soniq_job_watched_notify();
