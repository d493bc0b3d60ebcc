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
    WHERE status = 'queued' AND scheduled_at <= now() AND limit_scope IS NULL
      AND NOT (queue = ANY($11::text[]))
    ORDER BY priority, scheduled_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
)
{_job_claim_set}

-- name: job_claim_limited
-- The claim of a worker that serves tasks with concurrency limits (soniq/limits.py explains
-- why it is correct): the plain due jobs, plus, for each counter row of the scopes $2 that
-- has a free slot and a due job, up to its free slots of its jobs in claim order. The
-- counter rows are locked FOR UPDATE SKIP LOCKED (a row another claimer holds is skipped
-- this round) and raised by the jobs admitted, in this statement. $3: the worker's queues
-- (NULL: all); $4: paused queues to leave out. Outcomes are written before, by job_report:
-- this statement never waits on a lock while it holds counter rows.
WITH plain AS (
    SELECT id, priority, scheduled_at FROM {schema}.soniq_jobs
    WHERE status = 'queued' AND scheduled_at <= now() AND limit_scope IS NULL
      AND ($3::text[] IS NULL OR queue = ANY($3::text[])) AND NOT (queue = ANY($4::text[]))
    ORDER BY priority, scheduled_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), lim AS (
    SELECT l.scope, l.key, l.max - l.running AS free FROM {schema}.soniq_limits AS l
    WHERE l.scope = ANY($2::text[]) AND l.running < l.max
      AND EXISTS (
          SELECT 1 FROM {schema}.soniq_jobs AS q
          WHERE q.limit_scope = l.scope AND q.limit_key = l.key AND q.status = 'queued'
            AND q.scheduled_at <= now())
    ORDER BY l.running, l.scope, l.key
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT c.id, c.priority, c.scheduled_at, c.expires_at, lim.scope, lim.key
    FROM lim CROSS JOIN LATERAL (
        SELECT id, priority, scheduled_at, expires_at FROM {schema}.soniq_jobs AS q
        WHERE q.limit_scope = lim.scope AND q.limit_key = lim.key AND q.status = 'queued'
          AND q.scheduled_at <= now()
          AND ($3::text[] IS NULL OR q.queue = ANY($3::text[]))
          AND NOT (q.queue = ANY($4::text[]))
        ORDER BY priority, scheduled_at, id
        LIMIT lim.free
        FOR UPDATE SKIP LOCKED
    ) AS c
), due AS (
    SELECT id FROM (
        SELECT id, priority, scheduled_at FROM plain
        UNION ALL
        SELECT id, priority, scheduled_at FROM picked
    ) AS u
    ORDER BY priority, scheduled_at, id
    LIMIT {limit}
), bump AS (
    UPDATE {schema}.soniq_limits AS l SET running = l.running + n.admitted
    FROM (SELECT p.scope, p.key, count(*) AS admitted FROM picked AS p
          WHERE p.id IN (SELECT id FROM due) AND (p.expires_at IS NULL OR p.expires_at > now())
          GROUP BY p.scope, p.key) AS n
    WHERE l.scope = n.scope AND l.key = n.key
)
{_job_claim_set}

-- name: limit_ensure
-- The counter row of a limited job's limit (enqueue): created if missing, never locked (a
-- long enqueueing transaction must not hold claimers off the row).
INSERT INTO {schema}.soniq_limits (scope, key, max) VALUES ($1, $2, $3)
ON CONFLICT (scope, key) DO NOTHING

-- name: job_set_limit
-- Mark the jobs $1 (just inserted in this transaction) as counting against limit ($2, $3).
UPDATE {schema}.soniq_jobs SET limit_scope = $2, limit_key = $3 WHERE id = ANY($1::uuid[])

-- name: limit_sync_max
-- A worker's registered limits are the authority for max: scopes $1 with max $2.
UPDATE {schema}.soniq_limits AS l SET max = v.max
FROM unnest($1::text[], $2::int[]) AS v(scope, max)
WHERE l.scope = v.scope AND l.max <> v.max

-- name: job_unlimit_stale
-- Queued jobs enqueued under a limit their task no longer declares (scopes $1: the other
-- limit kinds of this worker's tasks) become plain jobs, so they are never stranded.
UPDATE {schema}.soniq_jobs SET limit_scope = NULL, limit_key = NULL
WHERE status = 'queued' AND limit_scope = ANY($1::text[])

-- name: limit_list
SELECT scope, key, max, running FROM {schema}.soniq_limits ORDER BY scope, key

-- name: job_insert_limited
-- A job of a limited task (no dedup key) with its limit ($9, $10) and the limit's counter
-- row (max $11) created if missing, in one statement; wakes workers ($8) if due.
WITH lim AS (
    INSERT INTO {schema}.soniq_limits (scope, key, max) VALUES ($9, $10, $11)
    ON CONFLICT (scope, key) DO NOTHING
), ins AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at, limit_scope, limit_key)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, COALESCE($7, now()), $9, $10)
    RETURNING queue, scheduled_at
)
SELECT CASE WHEN scheduled_at <= now() THEN pg_notify($8, queue) END FROM ins

-- name: job_insert_many_limited
-- job_insert_many for a limited task: every job counts against limit ($9, $10), whose
-- counter row (max $11) is created if missing.
WITH lim AS (
    INSERT INTO {schema}.soniq_limits (scope, key, max) VALUES ($9, $10, $11)
    ON CONFLICT (scope, key) DO NOTHING
), wake AS (
    SELECT CASE WHEN COALESCE($7, now()) <= now() THEN pg_notify($8, $3) END
)
INSERT INTO {schema}.soniq_jobs
    (id, job_name, queue, priority, args, max_attempts, scheduled_at, limit_scope, limit_key)
SELECT t.id, $2, $3, $4, t.args, $6, COALESCE($7, now()), $9, $10
FROM ROWS FROM (unnest($1::text::uuid[]), jsonb_array_elements($5::text::jsonb)) AS t(id, args),
     wake
