-- Flow control: paused queues (docs/flow-control.md). Only soniq/db.py executes these queries.
-- "{schema}" is replaced by the configured (validated, quoted) schema name.

-- name: queue_pause
-- Pause queue $1 (idempotent) and tell the workers on channel $2 to re-read the paused set.
WITH ins AS (
    INSERT INTO {schema}.soniq_paused_queues (queue) VALUES ($1)
    ON CONFLICT (queue) DO NOTHING
    RETURNING queue
)
SELECT (SELECT count(*) FROM ins) AS changed, pg_notify($2, '!queues')

-- name: queue_resume
-- Resume queue $1 and wake the workers on channel $2 (they re-read the set and claim).
WITH del AS (
    DELETE FROM {schema}.soniq_paused_queues WHERE queue = $1 RETURNING queue
)
SELECT (SELECT count(*) FROM del) AS changed, pg_notify($2, '!queues')

-- name: queue_paused_list
SELECT queue, paused_at FROM {schema}.soniq_paused_queues ORDER BY queue

-- name: job_report_and_claim_except
-- As job_report_and_claim, leaving out the paused queues $11. Used only while some queue is
-- paused, so the plain claim keeps its statement unchanged.
{_job_report}, due AS (
    SELECT id FROM {schema}.soniq_jobs
    WHERE status = 'queued' AND scheduled_at <= now() AND NOT (queue = ANY($11::text[]))
    ORDER BY priority, scheduled_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
{_job_claim_set}
