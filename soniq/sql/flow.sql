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

-- name: job_report_and_claim_gated
-- The one round trip of a worker that serves tasks with limits or windows (soniq/limits.py
-- explains why it is correct): record outcomes (see _job_report), give back the slots of the
-- limited jobs they end ("freed": soniq_gate_claim does it first, in lock order, and the
-- release trigger then leaves those jobs alone), admit jobs on the lanes $11 (the open ones
-- of this worker's limited tasks; $14: those of simple lanes, in the worker's round-robin
-- order from key $16 of the first), and top up with plain due jobs to {limit}. Every
-- admitted job is claimed (its slots are taken); plain rows locked beyond {limit} are left.
-- $12: the worker's queues (NULL: all); $13: paused queues; $15: the wake-up channel.
-- Returns the last simple lane visited too (the worker's round-robin goes on after it).
-- The function's first argument turns soniq.slots_given_back on, and its arguments are
-- evaluated before the outcomes they read are recorded: the release trigger (which would
-- only have returned) is not fired for them.
{_job_report}, freed AS (
    SELECT id, queue, limit_scope, limit_key, limit_more FROM done WHERE limit_scope IS NOT NULL
    UNION ALL
    SELECT id, queue, limit_scope, limit_key, limit_more FROM other WHERE limit_scope IS NOT NULL
), gated AS MATERIALIZED (
    SELECT g.id FROM {schema}.soniq_gate_claim(
        CASE WHEN set_config('soniq.slots_given_back', 'on', true) = 'on' THEN $11::text[] END,
        $14::text[], $12::text[], $13::text[], {limit},
        (SELECT jsonb_agg(jsonb_build_array(queue, limit_scope, limit_key, limit_more))
         FROM freed), $15, $16::text, (SELECT array_agg(id) FROM freed)) AS g(id)
), plain AS (
    SELECT id, priority, scheduled_at FROM {schema}.soniq_jobs
    WHERE status = 'queued' AND scheduled_at <= now() AND limit_scope IS NULL
      AND ($12::text[] IS NULL OR queue = ANY($12::text[])) AND NOT (queue = ANY($13::text[]))
    ORDER BY priority, scheduled_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), due AS (
    SELECT id FROM gated
    UNION ALL
    (SELECT id FROM plain ORDER BY priority, scheduled_at, id
     LIMIT (SELECT {limit} - count(*) FROM gated))
)
{_job_claim_set}, current_setting('soniq.lane_cursor', true) AS lane_cursor

-- name: gate_next_free
-- Seconds (database clock) until the first of the rate limits $1 that is full has room
-- again; NULL when none is full. The worker sleeps at most that long.
SELECT EXTRACT(EPOCH FROM min(full_until) - clock_timestamp())::float8
FROM {schema}.soniq_limits
WHERE scope = ANY($1::text[]) AND full_until > clock_timestamp()

-- name: limit_ensure
-- The counter rows ($1 scopes, $2 keys, $3 max, $4 window_ms) of a limited job (enqueue):
-- created if missing, never locked (a long enqueueing transaction must not hold claimers off).
INSERT INTO {schema}.soniq_limits (scope, key, max, window_ms)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[])
ON CONFLICT (scope, key) DO NOTHING

-- name: job_set_limit
-- Mark the jobs $1 (just inserted in this transaction) as counting against lane ($2, $3)
-- and the other rows $4 (jsonb, NULL for none).
UPDATE {schema}.soniq_jobs SET limit_scope = $2, limit_key = $3, limit_more = $4::jsonb
WHERE id = ANY($1::uuid[])

-- name: limit_sync_max
-- A worker's registered limits are the authority for max and window: scopes $1 with max $2
-- and window_ms $3 (NULL: a concurrency limit).
UPDATE {schema}.soniq_limits AS l SET max = v.max, window_ms = v.window_ms
FROM unnest($1::text[], $2::int[], $3::bigint[]) AS v(scope, max, window_ms)
WHERE l.scope = v.scope AND (l.max <> v.max OR l.window_ms IS DISTINCT FROM v.window_ms)

-- name: job_unlimit_stale
-- Queued jobs enqueued under a lane their task no longer declares (scopes $1) become plain
-- jobs, so they are never stranded.
UPDATE {schema}.soniq_jobs SET limit_scope = NULL, limit_key = NULL, limit_more = NULL
WHERE status = 'queued' AND limit_scope = ANY($1::text[])

-- name: limit_list
-- Every counter row; `running` also counts the jobs of its lane that keep no counter (a
-- simple lane's jobs in `processing`, migration 010).
SELECT l.scope, l.key, l.max, l.window_ms, l.full_until,
       l.running + (SELECT count(*) FROM {schema}.soniq_jobs AS p
                    WHERE p.limit_scope = l.scope AND p.limit_key = l.key
                      AND p.status = 'processing' AND p.limit_more IS NULL)::integer
           AS running
FROM {schema}.soniq_limits AS l ORDER BY l.scope, l.key

-- name: limit_prune
-- Rate-limit rows unused for $1 seconds (and at least a window), with their starts: all past.
-- A queued job that still names one has it created again, empty, when it is admitted.
-- Concurrency rows are kept: a queued job is found through its lane's row.
WITH gone AS (
    DELETE FROM {schema}.soniq_limits WHERE ctid IN (
        SELECT ctid FROM {schema}.soniq_limits
        WHERE window_ms IS NOT NULL
          AND used_at < now() - GREATEST($1::float8 * 1000, window_ms) * interval '1 millisecond'
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )
    RETURNING scope, key
), starts AS (
    DELETE FROM {schema}.soniq_rate_starts AS s USING gone
    WHERE s.scope = gone.scope AND s.key = gone.key
)
SELECT scope FROM gone

-- name: job_insert_limited
-- A job of a limited task (no dedup key) with its lane ($9[1], $10[1]) and other rows ($13),
-- the counter rows ($9 scopes, $10 keys, $11 max, $12 window_ms) created if missing, in one
-- statement; wakes workers ($8) if due.
WITH lim AS (
    INSERT INTO {schema}.soniq_limits (scope, key, max, window_ms)
    SELECT * FROM unnest($9::text[], $10::text[], $11::int[], $12::bigint[])
    ON CONFLICT (scope, key) DO NOTHING
), ins AS (
    INSERT INTO {schema}.soniq_jobs
        (id, job_name, queue, priority, args, max_attempts, scheduled_at, limit_scope, limit_key,
         limit_more)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, COALESCE($7, now()), ($9::text[])[1],
            ($10::text[])[1], $13::jsonb)
    RETURNING queue, scheduled_at
)
SELECT CASE WHEN scheduled_at <= now() THEN pg_notify($8, queue) END FROM ins

-- name: job_insert_many_limited
-- job_insert_many for a limited task: every job counts against the same rows (as above).
WITH lim AS (
    INSERT INTO {schema}.soniq_limits (scope, key, max, window_ms)
    SELECT * FROM unnest($9::text[], $10::text[], $11::int[], $12::bigint[])
    ON CONFLICT (scope, key) DO NOTHING
), wake AS (
    SELECT CASE WHEN COALESCE($7, now()) <= now() THEN pg_notify($8, $3) END
)
INSERT INTO {schema}.soniq_jobs
    (id, job_name, queue, priority, args, max_attempts, scheduled_at, limit_scope, limit_key,
     limit_more)
SELECT t.id, $2, $3, $4, t.args, $6, COALESCE($7, now()), ($9::text[])[1], ($10::text[])[1],
       $13::jsonb
FROM ROWS FROM (unnest($1::text::uuid[]), jsonb_array_elements($5::text::jsonb)) AS t(id, args),
     wake
